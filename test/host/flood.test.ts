// Handshake work never starves data, and never keeps a peer out: while a third host floods the
// hub with handshake initiations (valid mac1, keys the hub does not know), an established
// edge's pings through the tunnel are answered, a new edge joining mid-flood completes its
// handshake within two Rekey-Timeouts (its first initiation earns a cookie, the retry five
// seconds later carries it; one more if the kernel dropped at the hub's full handshake
// socket, where one of the joiner's datagrams can be lost with the flood's), and the hub turns the flood away with cookie replies instead of
// Diffie-Hellman once a few hundred of its initiations came to nothing there. What makes this a
// guarantee rather than a matter of machine speed: the kernel steers handshakes to their own
// socket, so the flood can only overflow that one, while it overflows each source gets an
// equal share of the handshake turns, and the load verdict counts wasted work, not time.
// Four namespaces this test creates: hub, edge, a joining edge, attacker.
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { ChildProcess } from "node:child_process";
import { afterAll, describe, expect, it } from "vitest";
import { WASTED_HANDSHAKES_PER_SECOND } from "../../src/core/device.js";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { Testbed, netnsUnavailableReason, waitFor } from "../support/netns.js";

const execFileAsync = promisify(execFile);
/**
 * Initiations per second. Paced, so the load is the same on a quiet and a busy machine: more
 * than the hub completes as handshakes in a second here (some 3,900 on a quiet moment), yet
 * well within what the handshake lane reads and gates on a busy two-core machine. Higher rates are bench:flood's (20 k/s, 50 k/s
 * and unpaced, beside wireguard-go): there a starved lane lets the kernel drop at the full
 * socket without regard to the sender, which is a matter of machine speed, not of design.
 */
const FLOOD_RATE = 5_000;
const FLOOD_SECONDS = 16;
/** Rekey-Timeout plus its jitter: the joiner's wait between two initiations. */
const RETRY_MS = 5_000 + 333;
/** Twice: the first initiation gets a cookie, the retry gets in. */
const JOIN_DEADLINE_MS = 2 * RETRY_MS;
/**
 * One retry more when the hub's kernel dropped handshakes at the full socket: a dropped
 * datagram is not chosen by sender, so one of the joiner's may be among them, and the design
 * promises the next attempt, not that none is lost.
 */
const JOIN_DEADLINE_AFTER_SOCKET_DROPS_MS = 3 * RETRY_MS;
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

  it("does not stop data, and every flooded initiation is settled", async () => {
    const hubNs = bed.namespace("hub");
    const edgeNs = bed.namespace("edge");
    const joinerNs = bed.namespace("new");
    const attackerNs = bed.namespace("atk");
    bed.link(hubNs, "10.217.1.1/24", edgeNs, "10.217.1.2/24");
    bed.link(hubNs, "10.217.2.1/24", attackerNs, "10.217.2.2/24");
    bed.link(hubNs, "10.217.3.1/24", joinerNs, "10.217.3.2/24");
    const hubKey = generatePrivateKey();
    const edgeKey = generatePrivateKey();
    const joinerKey = generatePrivateKey();
    const tag = bed.id.slice(-6);
    const hubName = `fh${tag}`;
    const edgeName = `fe${tag}`;
    const joinerName = `fj${tag}`;
    writeFileSync(
      join(dir, "hub.conf"),
      `[Interface]\nPrivateKey = ${hubKey}\nListenPort = 51820\nAddress = 10.218.0.1/24\n` +
        `[Peer]\nPublicKey = ${publicKeyOf(edgeKey)}\nAllowedIPs = 10.218.0.2/32\n` +
        `[Peer]\nPublicKey = ${publicKeyOf(joinerKey)}\nAllowedIPs = 10.218.0.3/32\n`,
    );
    writeFileSync(
      join(dir, "joiner.conf"),
      `[Interface]\nPrivateKey = ${joinerKey}\nAddress = 10.218.0.3/24\n` +
        `[Peer]\nPublicKey = ${publicKeyOf(hubKey)}\nEndpoint = 10.217.3.1:51820\n` +
        `AllowedIPs = 10.218.0.0/24\n`,
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
      String(FLOOD_SECONDS),
      "300",
      String(FLOOD_RATE),
    ]);
    await new Promise((resolve) => setTimeout(resolve, 2_500)); // the flood is under way
    const joining = joinDuringFlood();
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
    const joinMs = await joining;
    const sent = JSON.parse((await flood).stdout) as { sent: number };
    const received = Number(/(\d+) received/.exec(pings.stdout)?.[1] ?? 0);

    hub.kill("SIGTERM");
    await waitFor("the hub to stop", () => hubLog().includes('"interface down"'), 10_000);
    const down = hubLog()
      .split("\n")
      .find((line) => line.includes('"interface down"'))!;
    const drops = (JSON.parse(down) as { drops: Record<string, number> }).drops;
    console.log(
      `flood: ${sent.sent} initiations sent; pings answered ${received}/20; ` +
        `new peer's handshake in ${joinMs} ms; hub drops`,
      drops,
    );

    // The flood was one: at least 1,000 a second, even if a busy machine kept the flooder well
    // below its pace.
    expect(sent.sent).toBeGreaterThan(1_000 * FLOOD_SECONDS);
    expect(received).toBeGreaterThanOrEqual(19);
    const socketDrops = drops.handshake_queue_full ?? 0;
    expect(joinMs).toBeLessThan(
      socketDrops > 0 ? JOIN_DEADLINE_AFTER_SOCKET_DROPS_MS : JOIN_DEADLINE_MS,
    );
    // Every flooded initiation was settled, not left to pile up: most cheaply (beyond its
    // source's share of a turn, or turned away for want of a cookie), the rest refused after
    // one Diffie-Hellman as from an unknown peer.
    const settled = [
      "handshake_over_share",
      "cookie_required",
      "rate_limited",
      "unknown_peer",
      "handshake_queue_full",
      "handshake_stale",
    ].reduce((sum, reason) => sum + (drops[reason] ?? 0), 0);
    expect(settled).toBeGreaterThan(sent.sent * 0.95);
    // And few of them cost Diffie-Hellman: the hub went under load once more than the
    // threshold had come to nothing within a second (twice it if those straddled two of the
    // core's one-second windows), and what it turned away from then on kept it there while
    // the flood lasted, whatever the machine's speed.
    expect(drops.unknown_peer ?? 0).toBeLessThanOrEqual(2 * WASTED_HANDSHAKES_PER_SECOND + 1);

    /**
     * Starts the joining edge and times its handshake: from the moment its daemon is up and
     * one packet asks for a session, to the moment the hub's answer through the tunnel is in.
     */
    async function joinDuringFlood(): Promise<number> {
      const joiner = bed.spawn(joinerNs, process.execPath, [
        cli,
        "up",
        join(dir, "joiner.conf"),
        "--interface",
        joinerName,
        "--metrics-listen",
        "off",
      ]);
      const joinerLog = output(joiner);
      await waitFor("the joining edge", () => joinerLog().includes('"interface up"'), 15_000);
      const start = Date.now();
      // One echo request starts the handshake and waits in the joiner until it completes.
      await execFileAsync("ip", [
        "netns",
        "exec",
        joinerNs,
        "ping",
        "-c",
        "1",
        "-W",
        String(Math.ceil(JOIN_DEADLINE_AFTER_SOCKET_DROPS_MS / 1000) + 5),
        "10.218.0.1",
      ]).catch(() => undefined);
      return Date.now() - start;
    }
  }, 90_000);
});
