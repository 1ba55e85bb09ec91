// The native send direction (the default; native/dataplane.c reads the TUN device, seals and
// sends) under `edgetun up` against Debian's wireguard-go, each in a network
// namespace of this test's, joined by a veth pair: pings and TCP transfers both ways, with
// either side initiating, and `wg show` transfer counters on both sides agreeing byte for
// byte. The daemon's "interface down" line says how many packets the thread sealed, so the
// test knows they really took it; wireguard-go's receive counters agreeing with edgetun's send
// counters say none was refused (a reused counter would be dropped as a replay there).
//
// Underlay 10.225.0.0/24 (edgetun .1, wireguard-go .2); tunnel 10.226.0.0/24 (.1, .2).
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { Testbed, netnsUnavailableReason, waitFor } from "../support/netns.js";

const repoRoot = new URL("../..", import.meta.url).pathname;
const cli = join(repoRoot, "dist/src/cli/main.js");
const transferFixture = join(repoRoot, "dist/test/support/fixtures/tcp-transfer.js");
const skipReason =
  netnsUnavailableReason(["wireguard-go", "wg", "ping"]) ??
  (existsSync(cli) && existsSync(transferFixture) ? null : "needs the build (npm run build)");
if (skipReason) console.warn(`native send direction tests skipped: ${skipReason}`);

const ET_UNDERLAY = "10.225.0.1";
const WG_UNDERLAY = "10.225.0.2";
const ET_TUNNEL = "10.226.0.1";
const WG_TUNNEL = "10.226.0.2";
const MB = 1024 * 1024;

/** A child's output kept whole, and its exit. */
class Proc {
  output = "";
  readonly exited: Promise<number | null>;
  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => (this.output += chunk));
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (this.output += chunk));
    this.exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  }
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }
}

/** Runs a command to completion without blocking the event loop. */
function run(command: string, args: string[], timeoutMs = 90_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (out += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (out += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${command} ${args.join(" ")} exited ${code}:\n${out}`));
    });
  });
}

describe.skipIf(skipReason !== null)("the native send direction against wireguard-go", () => {
  const bed = new Testbed();
  const tmp = mkdtempSync(join(tmpdir(), "edgetun-send-"));
  const tag = randomBytes(3).toString("hex");
  let etNs = "";
  let wgNs = "";
  let counter = 0;
  const started: ChildProcess[] = [];

  beforeAll(() => {
    etNs = bed.namespace("et");
    wgNs = bed.namespace("wg");
    bed.link(etNs, `${ET_UNDERLAY}/24`, wgNs, `${WG_UNDERLAY}/24`);
  }, 30_000);

  // Whatever a case left running is ended by PID before the next case starts.
  afterEach(async () => {
    for (const child of started.splice(0).reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
  }, 30_000);

  afterAll(() => {
    bed.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  }, 30_000);

  function secretFile(name: string, key: string): string {
    const path = join(tmp, name);
    writeFileSync(path, `${key}\n`, { mode: 0o600 });
    return path;
  }

  /** edgetun (send direction on) and wireguard-go, each knowing the other's endpoint. */
  async function startPair(): Promise<{
    daemon: Proc;
    name: string;
    wgName: string;
    etPublic: string;
    wgPublic: string;
  }> {
    const n = counter++;
    const name = `s${tag}${n}`;
    const wgName = `g${tag}${n}`;
    const etPort = 44000 + n;
    const wgPort = 45000 + n;
    const etPrivate = generatePrivateKey();
    const wgPrivate = generatePrivateKey();
    const etPublic = publicKeyOf(etPrivate);
    const wgPublic = publicKeyOf(wgPrivate);

    const wg = new Proc(bed.spawn(wgNs, "wireguard-go", ["-f", wgName]));
    started.push(wg.child);
    await waitFor("wireguard-go's control socket", () => {
      if (!wg.running) throw new Error(`wireguard-go exited early:\n${wg.output}`);
      return existsSync(`/var/run/wireguard/${wgName}.sock`);
    });
    bed.exec(wgNs, "wg", [
      "set",
      wgName,
      "private-key",
      secretFile(`${wgName}.key`, wgPrivate),
      "listen-port",
      String(wgPort),
      "peer",
      etPublic,
      "allowed-ips",
      `${ET_TUNNEL}/32`,
      "endpoint",
      `${ET_UNDERLAY}:${etPort}`,
    ]);
    bed.exec(wgNs, "ip", ["address", "add", `${WG_TUNNEL}/24`, "dev", wgName]);
    bed.exec(wgNs, "ip", ["link", "set", wgName, "up"]);

    const file = join(tmp, `${name}.conf`);
    writeFileSync(
      file,
      [
        "[Interface]",
        `PrivateKey = ${etPrivate}`,
        `ListenPort = ${etPort}`,
        `Address = ${ET_TUNNEL}/24`,
        "",
        "[Peer]",
        `PublicKey = ${wgPublic}`,
        `AllowedIPs = ${WG_TUNNEL}/32`,
        `Endpoint = ${WG_UNDERLAY}:${wgPort}`,
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    // `env` sets the switch for the daemon alone (the namespace helper passes no environment).
    const daemon = new Proc(
      bed.spawn(etNs, "env", [
        "EDGETUN_NATIVE_SEND=1",
        process.execPath,
        cli,
        "up",
        file,
        "--interface",
        name,
      ]),
    );
    started.push(daemon.child);
    await waitFor(
      `edgetun ${name} to come up`,
      () => {
        if (!daemon.running) throw new Error(`edgetun exited early:\n${daemon.output}`);
        return daemon.output.includes('"interface up"');
      },
      20_000,
    );
    return { daemon, name, wgName, etPublic, wgPublic };
  }

  async function ping(ns: string, address: string, count: number): Promise<number> {
    const out = await run("ip", [
      "netns",
      "exec",
      ns,
      "ping",
      "-n",
      "-c",
      String(count),
      "-i",
      "0.05",
      "-W",
      "3",
      address,
    ]).catch((error: Error) => error.message);
    return Number(/(\d+) received/.exec(out)?.[1] ?? 0);
  }

  /** Moves `megabytes` over TCP from clientNs to serverNs's `address`; SHA-256 must match. */
  async function transfer(serverNs: string, clientNs: string, address: string, megabytes: number) {
    const port = 46000 + counter++;
    const server = new Proc(
      bed.spawn(serverNs, process.execPath, [transferFixture, "serve", String(port)]),
    );
    started.push(server.child);
    await waitFor("the TCP server to listen", () => server.output.includes('"listening"'));
    const sent = JSON.parse(
      (
        await run("ip", [
          "netns",
          "exec",
          clientNs,
          process.execPath,
          transferFixture,
          "send",
          address,
          String(port),
          String(megabytes),
        ])
      ).trim(),
    ) as { bytes: number; sha256: string };
    await waitFor("the TCP server's report", () => server.output.includes('"sha256"'), 10_000);
    const line = server.output.split("\n").find((l) => l.includes('"sha256"'))!;
    const received = JSON.parse(line) as { bytes: number; sha256: string };
    expect(received.bytes).toBe(megabytes * MB);
    expect(received.sha256).toBe(sent.sha256);
    server.child.kill("SIGTERM");
  }

  /** `wg show NAME transfer` for its one peer: [received, sent] bytes. */
  function transferShown(ns: string, name: string): [number, number] {
    const fields = bed.exec(ns, "wg", ["show", name, "transfer"]).trim().split("\t");
    return [Number(fields[1]), Number(fields[2])];
  }

  async function stop(daemon: Proc): Promise<{
    nativeSealed: number;
    nativeTunToJs: number;
    nativeSendMessages: number;
    drops: Record<string, number>;
  }> {
    daemon.child.kill("SIGTERM");
    expect(await daemon.exited).toBe(0);
    for (const line of daemon.output.split("\n")) {
      if (!line.startsWith("{")) continue;
      const record = JSON.parse(line) as {
        msg?: string;
        nativeSealed: number;
        nativeTunToJs: number;
        nativeSendMessages: number;
        drops: Record<string, number>;
      };
      if (record.msg === "interface down") return record;
    }
    throw new Error(`no "interface down" line in:\n${daemon.output.slice(-3000)}`);
  }

  for (const initiator of ["edgetun", "wireguard-go"] as const) {
    it(`${initiator} initiates: pings and 16 MB over TCP each way, sealed by the thread; wg show agrees on both sides`, async () => {
      const { daemon, name, wgName } = await startPair();
      const [firstNs, firstAddress] =
        initiator === "edgetun" ? [etNs, WG_TUNNEL] : [wgNs, ET_TUNNEL];
      expect(await ping(firstNs, firstAddress, 3)).toBe(3);
      await transfer(wgNs, etNs, WG_TUNNEL, 16);
      await transfer(etNs, wgNs, ET_TUNNEL, 16);
      // Bulk may lose datagrams in a socket buffer, so the byte counts are compared over pings
      // alone: what edgetun sent in that time (sealed by the thread) is what wireguard-go
      // accepted, none refused as a replay, and the other way round.
      await new Promise((resolve) => setTimeout(resolve, 500));
      const [etReceivedBefore, etSentBefore] = transferShown(etNs, name);
      const [wgReceivedBefore, wgSentBefore] = transferShown(wgNs, wgName);
      const answered = [await ping(etNs, WG_TUNNEL, 20), await ping(wgNs, ET_TUNNEL, 20)];
      await new Promise((resolve) => setTimeout(resolve, 500));
      const [etReceived, etSent] = transferShown(etNs, name);
      const [wgReceived, wgSent] = transferShown(wgNs, wgName);
      const down = await stop(daemon);
      expect(answered, daemon.output.slice(-3000)).toEqual([20, 20]);
      expect(etSent - etSentBefore).toBeGreaterThanOrEqual(40 * 128);
      expect(wgReceived - wgReceivedBefore).toBe(etSent - etSentBefore);
      expect(etReceived - etReceivedBefore).toBe(wgSent - wgSentBefore);
      expect(etSent).toBeGreaterThan(16 * MB);
      // 16 MB at most ~1.4 KB per packet: the thread sealed well over 11,000 packets.
      expect(down.nativeSealed).toBeGreaterThan(11_000);
      // The kernel hands the TUN device TCP super-packets, split here into equal-sized
      // segments: they leave in runs, one UDP GSO message each, and still arrive byte for byte.
      expect(down.nativeSendMessages).toBeGreaterThan(0);
      expect(down.nativeSendMessages).toBeLessThan(down.nativeSealed / 2);
    }, 120_000);
  }

  it("stops cleanly under a TCP transfer", async () => {
    const { daemon } = await startPair();
    expect(await ping(etNs, WG_TUNNEL, 3)).toBe(3);
    const port = 46000 + counter++;
    const server = new Proc(
      bed.spawn(wgNs, process.execPath, [transferFixture, "serve", String(port)]),
    );
    started.push(server.child);
    await waitFor("the TCP server to listen", () => server.output.includes('"listening"'));
    // Both ended by PID after the case, whatever state the stop leaves them in.
    const client = new Proc(
      bed.spawn(etNs, process.execPath, [transferFixture, "send", WG_TUNNEL, String(port), "2000"]),
    );
    started.push(client.child);
    await new Promise((resolve) => setTimeout(resolve, 700));
    const down = await stop(daemon);
    expect(down.nativeSealed).toBeGreaterThan(100);
    expect(bed.exec(etNs, "ip", ["-o", "link", "show"])).not.toContain(`: s${tag}`);
  }, 120_000);
});
