// The native receive path (native/dataplane.c, src/host/dataplane.ts) under `edgetun up`: the
// real daemon in one network namespace, the test peer (test/support/fixtures/udp-peer.ts, a
// core Device on a UDP socket) in another. The peer pings the daemon's tunnel address; the
// daemon's kernel answers through the daemon. Each case checks what the receiving side must
// do with transport data that the native thread opens: a replayed message dropped and counted,
// an inner packet from a source outside the peer's allowed IPs dropped and counted, an
// allowed-IPs change taking effect at once, a roaming peer followed, a rekey while pings flow,
// and a stop while they flow. The daemon's "interface down" line says how many messages the
// native thread opened, so the test knows the packets really took it.
//
// Underlay 10.221.0.0/24 (edgetun .1, peer .2); tunnel 10.222.0.0/24 (edgetun .1, peer .2).
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { ChildProcess } from "node:child_process";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { Testbed, netnsUnavailableReason, waitFor } from "../support/netns.js";
import { UDP_PEER_FIXTURE, UdpPeer } from "../support/udp-peer.js";

const repoRoot = new URL("../..", import.meta.url).pathname;
const cli = join(repoRoot, "dist/src/cli/main.js");
const probe = join(repoRoot, "dist/test/support/fixtures/dataplane-probe.js");
const skipReason =
  netnsUnavailableReason(["wg"]) ??
  (existsSync(cli) && existsSync(UDP_PEER_FIXTURE) ? null : "needs the build (npm run build)");
if (skipReason) console.warn(`native receive path tests skipped: ${skipReason}`);

const ET_UNDERLAY = "10.221.0.1";
const PEER_UNDERLAY = "10.221.0.2";
const ET_TUNNEL = "10.222.0.1";
const PEER_TUNNEL = "10.222.0.2";
/** Inside the peer's subnet but not in what the daemon allows it (until a test allows it). */
const OTHER_SOURCE = "10.222.0.77";

/** The daemon's output, kept whole. */
class Daemon {
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
  /** The fields of the "interface down" line: drops and the data path's counters. */
  interfaceDown(): { drops: Record<string, number>; nativeReceived: number } {
    for (const line of this.output.split("\n")) {
      if (!line.startsWith("{")) continue;
      const record = JSON.parse(line) as {
        msg?: string;
        drops: Record<string, number>;
        nativeReceived: number;
      };
      if (record.msg === "interface down") return record;
    }
    throw new Error(`no "interface down" line in:\n${this.output.slice(-3000)}`);
  }
}

describe.skipIf(skipReason !== null)("the native receive path under edgetun up", () => {
  const bed = new Testbed();
  const tmp = mkdtempSync(join(tmpdir(), "edgetun-dataplane-"));
  const tag = randomBytes(3).toString("hex");
  let etNs = "";
  let peerNs = "";
  let counter = 0;
  const started: ChildProcess[] = [];

  beforeAll(() => {
    etNs = bed.namespace("et");
    peerNs = bed.namespace("peer");
    bed.link(etNs, `${ET_UNDERLAY}/24`, peerNs, `${PEER_UNDERLAY}/24`);
  }, 30_000);

  // Whatever a failed case left running is ended by PID before the next case starts, so that no
  // two daemons hold the tunnel address at once.
  afterEach(async () => {
    for (const child of started.splice(0)) {
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

  /** A daemon with the peer allowed 10.222.0.2/32 only, and the peer, talking. */
  async function startPair(): Promise<{
    daemon: Daemon;
    peer: UdpPeer;
    name: string;
    peerPublic: string;
  }> {
    const name = `n${tag}${counter++}`;
    const etPort = 42000 + counter;
    const etPrivate = generatePrivateKey();
    const peerPrivate = generatePrivateKey();
    const peerPublic = publicKeyOf(peerPrivate);
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
        `PublicKey = ${peerPublic}`,
        `AllowedIPs = ${PEER_TUNNEL}/32`,
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    const daemonChild = bed.spawn(etNs, process.execPath, [
      cli,
      "up",
      file,
      "--interface",
      name,
      "--log-level",
      "debug",
    ]);
    const daemon = new Daemon(daemonChild);
    started.push(daemonChild);
    await waitFor(
      `edgetun ${name} to come up`,
      () => {
        if (!daemon.running) throw new Error(`edgetun exited early:\n${daemon.output}`);
        return daemon.output.includes('"interface up"');
      },
      20_000,
    );
    const config = {
      privateKey: peerPrivate,
      listenPort: 0,
      address: PEER_TUNNEL,
      otherAddresses: [OTHER_SOURCE],
      peers: [
        {
          publicKey: publicKeyOf(etPrivate),
          endpoint: { address: ET_UNDERLAY, port: etPort },
          allowedIps: ["10.222.0.0/24"],
        },
      ],
    };
    const peer = UdpPeer.spawn(bed, peerNs, config);
    started.push(peer.child);
    await peer.ready();
    return { daemon, peer, name, peerPublic };
  }

  let seq = 0;
  /** Pings from `src` to the daemon's address; resolves with how many were answered. */
  async function pings(peer: UdpPeer, src: string, count: number, waitMs = 3_000) {
    const first = seq + 1;
    for (let i = 0; i < count; i++) {
      seq++;
      peer.command({ cmd: "ping", src, dst: ET_TUNNEL, id: 9, seq, size: 200 });
    }
    const last = seq;
    const answered = () =>
      peer.count(
        (e) => e.event === "echo-reply" && (e.seq as number) >= first && (e.seq as number) <= last,
      );
    const deadline = Date.now() + waitMs;
    while (answered() < count && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return answered();
  }

  async function stop(daemon: Daemon): Promise<number | null> {
    daemon.child.kill("SIGTERM");
    return Promise.race([
      daemon.exited,
      new Promise<null>((resolve) => setTimeout(() => resolve(null), 15_000)),
    ]);
  }

  it("the thread alone: opens, replays, expiry, disallowed sources, forgeries, hand-over, removal", () => {
    const ns = bed.namespace("probe");
    bed.exec(ns, "ip", ["link", "set", "lo", "up"]);
    const out = bed.exec(ns, process.execPath, [probe, `p${tag}`]);
    const result = JSON.parse(out) as {
      stages: Record<string, { opened: number; toJs: number; drops: Record<string, number> }>;
      collected: { peers: number; confirmed: number };
      peerDelta: number[];
      confirmed: number[];
      takenIndices: number[];
      events: number;
      afterClose: { keypairs: number };
    };
    const { stages } = result;
    expect(stages.first!.opened).toBe(1);
    expect(stages.replay!.drops.replayed).toBe(1);
    expect(stages.expired!.drops.key_expired).toBe(1);
    // Authenticated (so it counts for the peer), but not from its allowed IPs: not delivered.
    expect(stages.disallowed!.opened).toBe(2);
    expect(stages.disallowed!.drops.source_not_allowed).toBe(1);
    expect(stages.forged!.drops.decryption_failed).toBe(1);
    expect(stages.unknown!.toJs).toBe(1);
    expect(stages.keepalive!.opened).toBe(3);
    expect(stages.removed!.toJs).toBe(2);
    // Peer 0: 3 authenticated, 2 with data, 1 delivered, 1 keepalive.
    const [id, authenticated, data, , rxPackets, , keepalives] = result.peerDelta;
    expect([id, authenticated, data, rxPackets, keepalives]).toEqual([0, 3, 2, 1, 1]);
    expect(result.confirmed).toEqual([0x1111]);
    expect(result.takenIndices).toEqual([0x3333, 0x1111]);
    expect(result.events).toBeGreaterThan(0);
    expect(result.afterClose.keypairs).toBe(0);
  });

  it("answers pings through the native thread; a replayed message is dropped and counted", async () => {
    const { daemon, peer } = await startPair();
    // The peer initiates: the daemon's session is confirmed by the first data packet, which
    // the native thread opens and reports.
    expect(await pings(peer, PEER_TUNNEL, 20, 10_000)).toBe(20);
    const before = peer.events.length;
    peer.command({ cmd: "replay", count: 10 });
    const replayed = (await peer.next("replayed", before)).count as number;
    expect(replayed).toBe(10);
    // Nothing answers a replay; the pings after it still are.
    expect(await pings(peer, PEER_TUNNEL, 5)).toBe(5);
    peer.command({ cmd: "exit" });
    expect(await stop(daemon)).toBe(0);
    const down = daemon.interfaceDown();
    expect(down.drops.replayed).toBe(10);
    expect(down.nativeReceived).toBeGreaterThanOrEqual(25);
  }, 60_000);

  it("drops an inner packet from a source outside the peer's allowed IPs; wg set allows it at once", async () => {
    const { daemon, peer, name, peerPublic } = await startPair();
    expect(await pings(peer, PEER_TUNNEL, 5, 10_000)).toBe(5);
    expect(await pings(peer, OTHER_SOURCE, 5, 1_000)).toBe(0);
    // Widened under traffic: pings from both sources keep going while the change lands.
    const during = pings(peer, PEER_TUNNEL, 20, 5_000);
    bed.exec(etNs, "wg", [
      "set",
      name,
      "peer",
      peerPublic,
      "allowed-ips",
      `${PEER_TUNNEL}/32,${OTHER_SOURCE}/32`,
    ]);
    expect(await during).toBe(20);
    expect(await pings(peer, OTHER_SOURCE, 5)).toBe(5);
    // Narrowed again: that source is refused again.
    bed.exec(etNs, "wg", ["set", name, "peer", peerPublic, "allowed-ips", `${PEER_TUNNEL}/32`]);
    expect(await pings(peer, OTHER_SOURCE, 5, 1_000)).toBe(0);
    expect(await pings(peer, PEER_TUNNEL, 5)).toBe(5);
    peer.command({ cmd: "exit" });
    expect(await stop(daemon)).toBe(0);
    const down = daemon.interfaceDown();
    expect(down.drops.source_not_allowed).toBe(10);
    expect(down.nativeReceived).toBeGreaterThanOrEqual(45);
  }, 60_000);

  it("follows a peer that moves to another port (roaming)", async () => {
    const { daemon, peer, name, peerPublic } = await startPair();
    expect(await pings(peer, PEER_TUNNEL, 5, 10_000)).toBe(5);
    const before = peer.events.length;
    peer.command({ cmd: "roam" });
    const port = (await peer.next("roamed", before)).port as number;
    // The answers reach the new port only if the daemon took the new source as the endpoint.
    expect(await pings(peer, PEER_TUNNEL, 5)).toBe(5);
    const endpoints = bed.exec(etNs, "wg", ["show", name, "endpoints"]);
    expect(endpoints).toContain(`${peerPublic}\t${PEER_UNDERLAY}:${port}`);
    peer.command({ cmd: "exit" });
    expect(await stop(daemon)).toBe(0);
    expect(daemon.interfaceDown().nativeReceived).toBeGreaterThanOrEqual(10);
  }, 60_000);

  it("rekeys while pings flow: the new session is confirmed and used, nothing is lost", async () => {
    const { daemon, peer, name, peerPublic } = await startPair();
    expect(await pings(peer, PEER_TUNNEL, 5, 10_000)).toBe(5);
    const handshakeBefore = Number(
      bed.exec(etNs, "wg", ["show", name, "latest-handshakes"]).split("\t")[1],
    );
    for (let round = 0; round < 3; round++) {
      const during = pings(peer, PEER_TUNNEL, 20, 8_000);
      peer.command({ cmd: "rekey" });
      expect(await during).toBe(20);
    }
    const before = peer.events.length;
    peer.command({ cmd: "stats" });
    const stats = await peer.next("stats", before);
    const handshakes = (stats.peers as Array<{ handshakes: number }>)[0]!.handshakes;
    expect(handshakes).toBe(4);
    expect(await pings(peer, PEER_TUNNEL, 5)).toBe(5);
    const shown = bed.exec(etNs, "wg", ["show", name, "latest-handshakes"]);
    expect(shown).toContain(peerPublic);
    expect(Number(shown.split("\t")[1])).toBeGreaterThanOrEqual(handshakeBefore);
    peer.command({ cmd: "exit" });
    expect(await stop(daemon)).toBe(0);
    const down = daemon.interfaceDown();
    expect(down.nativeReceived).toBeGreaterThanOrEqual(70);
    expect(down.drops.decryption_failed ?? 0).toBe(0);
  }, 60_000);

  it("stops cleanly while pings flow", async () => {
    const { daemon, peer } = await startPair();
    expect(await pings(peer, PEER_TUNNEL, 5, 10_000)).toBe(5);
    const flowing = pings(peer, PEER_TUNNEL, 200, 2_000);
    expect(await stop(daemon)).toBe(0);
    await flowing;
    peer.command({ cmd: "exit" });
    const down = daemon.interfaceDown();
    expect(down.nativeReceived).toBeGreaterThanOrEqual(5);
    expect(bed.exec(etNs, "ip", ["-o", "link", "show"])).not.toContain(`: n${tag}`);
  }, 60_000);
});
