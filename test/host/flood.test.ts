// Handshake work never starves data: while a third host floods the hub with handshake
// initiations (valid mac1, keys the hub does not know), an edge's pings through the tunnel
// still get answered, and the hub turns the flood away with cookie replies instead of doing
// Diffie-Hellman for each. Three namespaces this test creates: hub, edge, attacker.
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { ChildProcess } from "node:child_process";
import { afterAll, describe, expect, it } from "vitest";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { Testbed, netnsUnavailableReason, waitFor } from "../support/netns.js";

const execFileAsync = promisify(execFile);
/**
 * Initiations per second. Paced, so the test asserts what the design guarantees (data keeps
 * flowing, cookies answer the excess) rather than how fast this machine's flooder can go: the
 * hub does a few thousand handshakes a second, so this rate keeps it under load.
 */
const FLOOD_RATE = 20_000;
const root = new URL("../..", import.meta.url).pathname;
const cli = join(root, "dist/src/cli/main.js");
const flooder = join(root, "dist/test/support/fixtures/handshake-flood.js");
const skipReason =
  netnsUnavailableReason(["ping"]) ??
  (existsSync(cli) && existsSync(flooder) ? null : "needs the build (npm run build)");
if (skipReason) console.warn(`handshake flood test skipped: ${skipReason}`);

function output(child: ChildProcess): () => string {
  let text = "";
  child.stdout?.on("data", (chunk: Buffer) => (text += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (text += chunk.toString()));
  return () => text;
}

describe.skipIf(skipReason !== null)("a handshake flood", () => {
  const bed = new Testbed();
  const dir = mkdtempSync(join(tmpdir(), "edgetun-flood-"));
  afterAll(() => {
    bed.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("does not stop data, and is answered with cookie replies", async () => {
    const hubNs = bed.namespace("hub");
    const edgeNs = bed.namespace("edge");
    const attackerNs = bed.namespace("atk");
    bed.link(hubNs, "10.217.1.1/24", edgeNs, "10.217.1.2/24");
    bed.link(hubNs, "10.217.2.1/24", attackerNs, "10.217.2.2/24");
    const hubKey = generatePrivateKey();
    const edgeKey = generatePrivateKey();
    const tag = bed.id.slice(-6);
    const hubName = `fh${tag}`;
    const edgeName = `fe${tag}`;
    writeFileSync(
      join(dir, "hub.conf"),
      `[Interface]\nPrivateKey = ${hubKey}\nListenPort = 51820\nAddress = 10.218.0.1/24\n` +
        `[Peer]\nPublicKey = ${publicKeyOf(edgeKey)}\nAllowedIPs = 10.218.0.2/32\n`,
    );
    writeFileSync(
      join(dir, "edge.conf"),
      `[Interface]\nPrivateKey = ${edgeKey}\nAddress = 10.218.0.2/24\n` +
        `[Peer]\nPublicKey = ${publicKeyOf(hubKey)}\nEndpoint = 10.217.1.1:51820\n` +
        `AllowedIPs = 10.218.0.0/24\n`,
    );
    const hub = bed.spawn(hubNs, process.execPath, [
      cli,
      "up",
      join(dir, "hub.conf"),
      "--interface",
      hubName,
      "--metrics-listen",
      "off",
    ]);
    const hubLog = output(hub);
    const edge = bed.spawn(edgeNs, process.execPath, [
      cli,
      "up",
      join(dir, "edge.conf"),
      "--interface",
      edgeName,
      "--metrics-listen",
      "off",
    ]);
    output(edge);
    await waitFor(
      "both daemons",
      () =>
        hubLog().includes('"interface up"') && existsSync(`/var/run/wireguard/${edgeName}.sock`),
      15_000,
    );
    // A session first, as a running edge would have.
    await execFileAsync("ip", [
      "netns",
      "exec",
      edgeNs,
      "ping",
      "-c",
      "2",
      "-W",
      "3",
      "10.218.0.1",
    ]);

    const flood = execFileAsync("ip", [
      "netns",
      "exec",
      attackerNs,
      process.execPath,
      flooder,
      publicKeyOf(hubKey),
      "10.217.2.1",
      "51820",
      "6",
      "300",
      String(FLOOD_RATE),
    ]);
    await new Promise((resolve) => setTimeout(resolve, 2_500)); // the flood is under way
    const pings = await execFileAsync("ip", [
      "netns",
      "exec",
      edgeNs,
      "ping",
      "-c",
      "20",
      "-i",
      "0.1",
      "-W",
      "2",
      "10.218.0.1",
    ]).catch((error: { stdout?: string }) => ({ stdout: error.stdout ?? "" }));
    const sent = JSON.parse((await flood).stdout) as { sent: number };
    const received = Number(/(\d+) received/.exec(pings.stdout)?.[1] ?? 0);

    hub.kill("SIGTERM");
    await waitFor("the hub to stop", () => hubLog().includes('"interface down"'), 10_000);
    const down = hubLog()
      .split("\n")
      .find((line) => line.includes('"interface down"'))!;
    const drops = (JSON.parse(down) as { drops: Record<string, number> }).drops;
    console.log(
      `flood: ${sent.sent} initiations sent; pings answered ${received}/20; hub drops`,
      drops,
    );

    // At least a quarter of the paced rate over the 6 s, even on a busy machine.
    expect(sent.sent).toBeGreaterThan(FLOOD_RATE * 1.5);
    expect(received).toBeGreaterThanOrEqual(16);
    // Under load the hub answered with cookies rather than spending DH on every initiation.
    expect(drops.cookie_required ?? 0).toBeGreaterThan(0);
  }, 60_000);
});
