// Traffic through a tunnel between the namespaces of a Testbed: pings counted, and a TCP byte
// stream whose SHA-256 must arrive intact (test/support/fixtures/tcp-transfer.ts).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ChildScope, WatchedChild, runAsync } from "./children.js";
import { Testbed, waitFor } from "./netns.js";

const repoRoot = new URL("../..", import.meta.url).pathname;
/** The built TCP transfer fixture; tests skip while it is missing (no build yet). */
export const TCP_TRANSFER_FIXTURE = join(repoRoot, "dist/test/support/fixtures/tcp-transfer.js");
export const tcpTransferBuilt = (): boolean => existsSync(TCP_TRANSFER_FIXTURE);

export interface PingOptions {
  /** Seconds between pings (ping -i). */
  intervalSeconds?: number;
  /** Seconds to wait for each answer (ping -W). */
  waitSeconds?: number;
}

/** Pings `address` from inside `ns`; how many were answered, and ping's output. */
export async function pingCount(
  ns: string,
  address: string,
  count: number,
  { intervalSeconds = 0.2, waitSeconds = 2 }: PingOptions = {},
): Promise<{ received: number; output: string }> {
  const family = address.includes(":") ? "-6" : "-4";
  const args = [family, "-n", "-c", `${count}`, "-i", `${intervalSeconds}`, "-W", `${waitSeconds}`];
  const result = await runAsync("ip", ["netns", "exec", ns, "ping", ...args, address]);
  const received = Number(/(\d+) received/.exec(result.stdout)?.[1] ?? 0);
  return { received, output: `${result.stdout}${result.stderr}` };
}

/** Both ends' reports of one transfer. */
export interface TcpTransfer {
  sent: { bytes: number; sha256: string; seconds: number };
  received: { bytes: number; sha256: string };
}

/**
 * Moves `megabytes` over TCP from `clientNs` to a server on `address:port` in `serverNs`, and
 * returns both ends' byte counts and SHA-256 for the caller to compare. The server is added to
 * `scope` and stopped before this returns.
 */
export async function tcpTransfer(
  bed: Testbed,
  scope: ChildScope,
  route: { serverNs: string; clientNs: string; address: string; port: number },
  megabytes: number,
): Promise<TcpTransfer> {
  const { serverNs, clientNs, address, port } = route;
  const server = scope.add(
    new WatchedChild(
      `tcp server ${address}:${port}`,
      bed.spawn(serverNs, process.execPath, [TCP_TRANSFER_FIXTURE, "serve", `${port}`]),
    ),
  );
  try {
    await waitFor("the TCP server to listen", () => server.output.includes('"listening"'));
    const client = await runAsync(
      "ip",
      ["netns", "exec", clientNs, process.execPath, TCP_TRANSFER_FIXTURE, "send", address].concat([
        `${port}`,
        `${megabytes}`,
      ]),
      90_000,
    );
    if (client.code !== 0)
      throw new Error(`tcp-transfer send exited ${client.code}: ${client.stderr}`);
    const sent = JSON.parse(client.stdout.trim()) as TcpTransfer["sent"];
    await waitFor("the TCP server's report", () => server.output.includes('"sha256"'), 10_000);
    const line = server.output.split("\n").find((l) => l.includes('"sha256"'))!;
    return { sent, received: JSON.parse(line) as TcpTransfer["received"] };
  } finally {
    await server.stop();
  }
}
