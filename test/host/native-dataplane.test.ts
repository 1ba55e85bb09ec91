// The native receive path (native/dataplane.c, src/host/dataplane.ts) under `edgetun up`: the
// real daemon in one network namespace, the test peer (test/support/fixtures/udp-peer.ts, a
// core Device on a UDP socket) in another. The peer pings the daemon's tunnel address; the
// daemon's kernel answers through the daemon. Each case checks what the receiving side must
// do with transport data that the native thread opens: a replayed message dropped and counted,
// an inner packet from a source outside the peer's allowed IPs dropped and counted, an
// allowed-IPs change taking effect at once, a roaming peer followed, a rekey while pings flow,
// and a stop while they flow, and bursts of UDP datagrams that reach a socket behind the TUN
// byte for byte (written as USO super-packets). The daemon's "interface down" line says how
// many messages the native thread opened, so the test knows the packets really took it.
//
// The daemon cases run twice: with the receive thread only, and with the send direction on
// too (the default; EDGETUN_NATIVE_SEND=0 keeps sending on the JS thread). Then the
// "interface down" line's nativeSealed says the thread sealed the answers, and the test peer's
// own replay window (a core Device) says no counter ever came twice. Cases of the send
// direction alone: the daemon initiating (the first packets reach the core, which stages them
// and shakes hands; the staged ones arrive), an address without a route, `wg show` transfer.
//
// Underlay 10.221.0.0/24 (edgetun .1, peer .2); tunnel 10.222.0.0/24 (edgetun .1, peer .2).
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { ChildScope, EDGETUN_CLI, WatchedChild, startEdgetunUp } from "../support/children.js";
import { Testbed, netnsUnavailableReason, waitFor } from "../support/netns.js";
import { pingCount } from "../support/traffic.js";
import { UDP_PEER_FIXTURE, UdpPeer } from "../support/udp-peer.js";
import { nativeSliceUs } from "../../src/host/dataplane.js";
import { ConfigError } from "../../src/host/errors.js";
import { DATA_PLANE_SLICE_US } from "../../src/host/native/index.js";

const repoRoot = new URL("../..", import.meta.url).pathname;

const probe = join(repoRoot, "dist/test/support/fixtures/dataplane-probe.js");
const sendProbe = join(repoRoot, "dist/test/support/fixtures/dataplane-send-probe.js");
const threadsProbe = join(repoRoot, "dist/test/support/fixtures/dataplane-threads-probe.js");
const skipReason =
  netnsUnavailableReason(["wg"]) ??
  (existsSync(EDGETUN_CLI) && existsSync(UDP_PEER_FIXTURE)
    ? null
    : "needs the build (npm run build)");
if (skipReason) console.warn(`native receive path tests skipped: ${skipReason}`);

/** Linux parses UDP segmentation (GSO_UDP_L4) headers written to a TUN from 6.2 on. */
const [kernelMajor = 0, kernelMinor = 0] = release().split(".").map(Number);
const kernelHasUso = kernelMajor > 6 || (kernelMajor === 6 && kernelMinor >= 2);
/** The fair scheduler takes sched_attr's runtime as a thread's slice from 6.12 on. */
const kernelHasCustomSlice = kernelMajor > 6 || (kernelMajor === 6 && kernelMinor >= 12);

const ET_UNDERLAY = "10.221.0.1";
const PEER_UNDERLAY = "10.221.0.2";
const ET_TUNNEL = "10.222.0.1";
const PEER_TUNNEL = "10.222.0.2";
/** Inside the peer's subnet but not in what the daemon allows it (until a test allows it). */
const OTHER_SOURCE = "10.222.0.77";

interface InterfaceDown {
  drops: Record<string, number>;
  nativeReceived: number;
  nativeSealed: number;
  nativeTunToJs: number;
}

describe("EDGETUN_NATIVE_SLICE_US", () => {
  it("sets the native threads' slice in µs; unset or empty is the default, 0 the kernel's", () => {
    expect(nativeSliceUs({})).toBe(DATA_PLANE_SLICE_US);
    expect(nativeSliceUs({ EDGETUN_NATIVE_SLICE_US: "" })).toBe(DATA_PLANE_SLICE_US);
    expect(nativeSliceUs({ EDGETUN_NATIVE_SLICE_US: "0" })).toBe(0);
    expect(nativeSliceUs({ EDGETUN_NATIVE_SLICE_US: "250" })).toBe(250);
    expect(nativeSliceUs({ EDGETUN_NATIVE_SLICE_US: "100000" })).toBe(100_000);
  });

  it("refuses anything but a whole number up to 100000, naming the variable", () => {
    for (const bad of ["-1", "1.5", "100001", "0x10", " 100", "fast", "9999999"]) {
      expect(() => nativeSliceUs({ EDGETUN_NATIVE_SLICE_US: bad })).toThrow(ConfigError);
      expect(() => nativeSliceUs({ EDGETUN_NATIVE_SLICE_US: bad })).toThrow(
        /EDGETUN_NATIVE_SLICE_US must be a whole number/,
      );
    }
  });
});

describe.skipIf(skipReason !== null)("the native receive path under edgetun up", () => {
  const bed = new Testbed();
  const tmp = mkdtempSync(join(tmpdir(), "edgetun-dataplane-"));
  const tag = randomBytes(3).toString("hex");
  let etNs = "";
  let peerNs = "";
  let counter = 0;
  const scope = new ChildScope();

  beforeAll(() => {
    etNs = bed.namespace("et");
    peerNs = bed.namespace("peer");
    bed.link(etNs, `${ET_UNDERLAY}/24`, peerNs, `${PEER_UNDERLAY}/24`);
  }, 30_000);

  // Whatever a failed case left running is ended by PID before the next case starts, so that no
  // two daemons hold the tunnel address at once.
  afterEach(async () => scope.stopAll(), 30_000);

  afterAll(() => {
    bed.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  }, 30_000);

  /**
   * A daemon with the peer allowed 10.222.0.2/32 only, and the peer, talking. `sends`: the
   * send direction on too. `daemonKnowsPeer`: the daemon has the peer's endpoint (a fixed port)
   * and so may initiate.
   */
  async function startPair(
    sends: boolean,
    daemonKnowsPeer = false,
  ): Promise<{
    daemon: WatchedChild;
    peer: UdpPeer;
    name: string;
    peerPublic: string;
  }> {
    const name = `n${tag}${counter++}`;
    const etPort = 42000 + counter;
    const peerPort = 43000 + counter;
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
        ...(daemonKnowsPeer ? [`Endpoint = ${PEER_UNDERLAY}:${peerPort}`] : []),
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    const daemon = await startEdgetunUp(bed, scope, etNs, {
      file,
      name,
      env: { EDGETUN_NATIVE_SEND: sends ? "1" : "0" },
      args: ["--log-level", "debug"],
    });
    const config = {
      privateKey: peerPrivate,
      listenPort: daemonKnowsPeer ? peerPort : 0,
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
    scope.add(new WatchedChild("test peer", peer.child));
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

  /** The test peer's drop counters (its replay window judges the daemon's counters). */
  async function peerDrops(peer: UdpPeer): Promise<Record<string, number>> {
    const before = peer.events.length;
    peer.command({ cmd: "stats" });
    return (await peer.next("stats", before)).drops as Record<string, number>;
  }

  /** SIGTERM, and the exit code (null if it took more than 15 s). */
  async function stop(daemon: WatchedChild): Promise<number | null> {
    daemon.signal("SIGTERM");
    return (await daemon.waitExit(15_000))?.code ?? null;
  }

  /**
   * After a case: in send mode the thread sealed at least `answers` of the daemon's packets
   * (the answers to the first burst after a handshake may go through the core: the thread
   * learns of the confirmed session a moment after the session's first packet arrives).
   */
  function expectSealed(sends: boolean, down: InterfaceDown, answers: number): void {
    if (sends) expect(down.nativeSealed).toBeGreaterThanOrEqual(answers);
    else expect(down.nativeSealed).toBe(0);
  }

  /** The kernel's ping in namespace `ns`; resolves with how many were answered. */
  const runPing = async (ns: string, address: string, count: number) =>
    (await pingCount(ns, address, count, { waitSeconds: 3 })).received;

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

  it("names its two threads, which take the slice they are given (the kernel's default with 0)", (context) => {
    const ns = bed.namespace("tprobe");
    bed.exec(ns, "ip", ["link", "set", "lo", "up"]);
    interface Threads {
      main: number | null;
      threads: Array<{ name: string; slice: number | null }>;
    }
    const run = (sliceUs: number, n: number) =>
      JSON.parse(
        bed.exec(ns, process.execPath, [threadsProbe, `t${tag}${n}`, `${sliceUs}`]),
      ) as Threads;
    const short = run(100, 0);
    const usual = run(0, 1);
    for (const result of [short, usual]) {
      expect(result.threads.filter((t) => t.name === "edgetun-rx")).toHaveLength(1);
      expect(result.threads.filter((t) => t.name === "edgetun-tx")).toHaveLength(1);
    }
    if (!kernelHasCustomSlice || short.main === null) {
      context.skip(`the slice itself: needs Linux 6.12+ showing se.slice (${release()})`);
      return;
    }
    const slices = (result: Threads) =>
      result.threads.filter((t) => t.name.startsWith("edgetun-")).map((t) => t.slice);
    expect(slices(short)).toEqual([100_000, 100_000]);
    // 0: left as the kernel gives it, like the process's main thread.
    expect(slices(usual)).toEqual([usual.main, usual.main]);
    expect(usual.main).toBeGreaterThan(100_000);
  });

  // Loopback's own MTU, then one below the burst's sealed datagrams (1,072 bytes): a UDP GSO
  // message is refused there, and the run goes one datagram per message, which the kernel
  // fragments as it would any datagram too large for the path.
  for (const pathMtu of [null, 1000] as const) {
    it(`the send direction alone: leases of counters, the spare, hand-over to JS, rekey and expiry, a burst${pathMtu ? ` over a path MTU of ${pathMtu}` : ""}`, () => {
      const ns = bed.namespace(pathMtu ? `sprobe${pathMtu}` : "sprobe");
      bed.exec(ns, "ip", ["link", "set", "lo", "up"]);
      if (pathMtu) bed.exec(ns, "ip", ["link", "set", "lo", "mtu", String(pathMtu)]);
      const out = bed.exec(ns, process.execPath, [sendProbe, `s${tag}`]);
      interface Arrival {
        type: number;
        index: number;
        counter: number;
        length: number;
        opened: boolean;
        payload: string;
      }
      interface Stage {
        arrivals: Arrival[];
        toJs: string[];
        report: number[];
      }
      const result = JSON.parse(out) as {
        stages: Record<
          | "noSession"
          | "leased"
          | "exhausted"
          | "spare"
          | "noRoute"
          | "rekeyDue"
          | "expired"
          | "stopped",
          Stage
        > & {
          granted: boolean;
          grantedForOtherKeypair: boolean;
          rekeyEvents: number;
          burst: Stage;
          burstConsumed: number;
          burstSendMessages: number;
          burstSenderGso: boolean;
        };
        stats: { sealed: number; tunToJs: number; sendErrors: number; sendMessages: number };
      };
      const { stages } = result;
      const sealed = (stage: Stage) => stage.arrivals.map((a) => [a.counter, a.payload]);
      expect(stages.noSession.arrivals).toEqual([]);
      expect(stages.noSession.toJs).toEqual(["a0"]);
      // Transport messages with the remote index, opened by the send key, padded: 30-byte inner
      // packets (IPv4 + UDP + 2 bytes) padded to 32, so 64 bytes on the wire.
      for (const a of stages.leased.arrivals) {
        expect([a.type, a.index, a.opened, a.length]).toEqual([4, 0xabcd, true, 64]);
      }
      expect(sealed(stages.leased)).toEqual([
        [100, "b0"],
        [101, "b1"],
        [102, "b2"],
      ]);
      // txPackets, txBytes, txPayloadBytes, leaseWanted (the spare was asked for at once).
      expect(stages.leased.report).toEqual([3, 192, 90, 1]);
      // The lease ends at 103; what comes after goes to JS rather than reuse a counter.
      expect(sealed(stages.exhausted)).toEqual([[103, "c0"]]);
      expect(stages.exhausted.toJs).toEqual(["c1", "c2"]);
      expect(stages.granted).toBe(true);
      expect(stages.grantedForOtherKeypair).toBe(false);
      expect(sealed(stages.spare)).toEqual([
        [200, "d0"],
        [201, "d1"],
      ]);
      expect(stages.spare.report[3]).toBe(1); // the next spare is asked for
      expect(stages.noRoute.arrivals).toEqual([]);
      expect(stages.noRoute.toJs).toEqual(["e0"]);
      expect(sealed(stages.rekeyDue)).toEqual([[400, "f0"]]);
      expect(stages.rekeyEvents).toBeGreaterThan(0);
      expect(stages.expired.arrivals).toEqual([]);
      expect(stages.expired.toJs).toEqual(["g0"]);
      expect(stages.stopped.arrivals).toEqual([]);
      expect(stages.stopped.toJs).toEqual(["h0"]);
      // Every counter once.
      const counters = Object.values(stages).flatMap((stage) =>
        typeof stage === "object" && stage !== null ? stage.arrivals.map((a) => a.counter) : [],
      );
      expect(new Set(counters).size).toBe(counters.length);
      // The burst: every datagram whole and opened (1,000 bytes + IPv4 and UDP headers, padded
      // to 1,040, plus header and tag), in order, on consecutive counters of the new lease.
      expect(stages.burstConsumed).toBe(64);
      expect(stages.burst.toJs).toEqual([]);
      expect(stages.burst.arrivals.map((a) => [a.opened, a.length])).toEqual(
        Array.from({ length: 64 }, () => [true, 1072]),
      );
      expect(sealed(stages.burst)).toEqual(
        Array.from({ length: 64 }, (_, i) => [
          1000 + i,
          `i${String(i).padStart(2, "0")}`.padEnd(1000, "x"),
        ]),
      );
      expect(stages.burst.report.slice(0, 3)).toEqual([64, 64 * 1072, 64 * 1028]);
      // One super-packet in, so one batch: runs of up to 64 datagrams (65,000 bytes) go as one
      // UDP GSO message each, 2 here, where one datagram per message would make 64.
      if (pathMtu) expect(stages.burstSendMessages).toBe(64);
      else if (kernelHasUso && stages.burstSenderGso) {
        expect(stages.burstSendMessages).toBeGreaterThan(0);
        expect(stages.burstSendMessages).toBeLessThanOrEqual(4);
      }
      expect(result.stats.sealed).toBe(7 + 64);
      // The earlier stages' few packets may have left together too (read in one batch).
      expect(result.stats.sendMessages).toBeGreaterThan(stages.burstSendMessages);
      expect(result.stats.sendMessages).toBeLessThanOrEqual(7 + stages.burstSendMessages);
      expect(result.stats.sendErrors).toBe(0);
    });
  }

  for (const sends of [false, true]) {
    const mode = sends ? "receive and send thread" : "receive thread";

    it(`${mode}: answers pings; a replayed message is dropped and counted`, async () => {
      const { daemon, peer } = await startPair(sends);
      // The peer initiates: the daemon's session is confirmed by the first data packet, which
      // the native thread opens and reports.
      expect(await pings(peer, PEER_TUNNEL, 20, 10_000)).toBe(20);
      const before = peer.events.length;
      peer.command({ cmd: "replay", count: 10 });
      const replayed = (await peer.next("replayed", before)).count as number;
      expect(replayed).toBe(10);
      // Nothing answers a replay; the pings after it still are.
      expect(await pings(peer, PEER_TUNNEL, 5)).toBe(5);
      expect((await peerDrops(peer)).replayed).toBe(0);
      peer.command({ cmd: "exit" });
      expect(await stop(daemon)).toBe(0);
      const down = daemon.interfaceDown<InterfaceDown>();
      expect(down.drops.replayed).toBe(10);
      expect(down.nativeReceived).toBeGreaterThanOrEqual(25);
      expectSealed(sends, down, 5);
    }, 60_000);

    it(`${mode}: drops an inner packet from a source outside the peer's allowed IPs; wg set allows it at once`, async () => {
      const { daemon, peer, name, peerPublic } = await startPair(sends);
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
      // In send mode the answers to the newly allowed source are routed by the thread too.
      expect(await pings(peer, OTHER_SOURCE, 5)).toBe(5);
      // Narrowed again: that source is refused again.
      bed.exec(etNs, "wg", ["set", name, "peer", peerPublic, "allowed-ips", `${PEER_TUNNEL}/32`]);
      expect(await pings(peer, OTHER_SOURCE, 5, 1_000)).toBe(0);
      expect(await pings(peer, PEER_TUNNEL, 5)).toBe(5);
      expect((await peerDrops(peer)).replayed).toBe(0);
      peer.command({ cmd: "exit" });
      expect(await stop(daemon)).toBe(0);
      const down = daemon.interfaceDown<InterfaceDown>();
      expect(down.drops.source_not_allowed).toBe(10);
      expect(down.nativeReceived).toBeGreaterThanOrEqual(45);
      expectSealed(sends, down, 30);
    }, 60_000);

    it(`${mode}: follows a peer that moves to another port (roaming)`, async () => {
      const { daemon, peer, name, peerPublic } = await startPair(sends);
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
      const down = daemon.interfaceDown<InterfaceDown>();
      expect(down.nativeReceived).toBeGreaterThanOrEqual(10);
      expectSealed(sends, down, 5);
    }, 60_000);

    it(`${mode}: rekeys three times while pings flow: each new session is used, nothing is lost`, async () => {
      const { daemon, peer, name, peerPublic } = await startPair(sends);
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
      // The daemon's answers on every session passed the peer's replay window.
      expect((stats.drops as Record<string, number>).replayed).toBe(0);
      expect((stats.drops as Record<string, number>).decryption_failed).toBe(0);
      const shown = bed.exec(etNs, "wg", ["show", name, "latest-handshakes"]);
      expect(shown).toContain(peerPublic);
      expect(Number(shown.split("\t")[1])).toBeGreaterThanOrEqual(handshakeBefore);
      peer.command({ cmd: "exit" });
      expect(await stop(daemon)).toBe(0);
      const down = daemon.interfaceDown<InterfaceDown>();
      expect(down.nativeReceived).toBeGreaterThanOrEqual(70);
      expect(down.drops.decryption_failed ?? 0).toBe(0);
      expectSealed(sends, down, 60);
    }, 60_000);

    it(`${mode}: stops cleanly while pings flow`, async () => {
      const { daemon, peer } = await startPair(sends);
      expect(await pings(peer, PEER_TUNNEL, 5, 10_000)).toBe(5);
      expect(await pings(peer, PEER_TUNNEL, 5)).toBe(5);
      const flowing = pings(peer, PEER_TUNNEL, 200, 2_000);
      expect(await stop(daemon)).toBe(0);
      await flowing;
      peer.command({ cmd: "exit" });
      const down = daemon.interfaceDown<InterfaceDown>();
      expect(down.nativeReceived).toBeGreaterThanOrEqual(10);
      expectSealed(sends, down, 5);
      expect(bed.exec(etNs, "ip", ["-o", "link", "show"])).not.toContain(`: n${tag}`);
    }, 60_000);
  }

  it("receive thread: bursts of UDP datagrams reach a socket behind the TUN byte for byte, coalesced into USO super-packets", async () => {
    const { daemon, peer, name } = await startPair(true);
    expect(await pings(peer, PEER_TUNNEL, 3, 10_000)).toBe(3);
    // A receiver in the daemon's namespace: checks every datagram's bytes against the sender's
    // pattern (the fixture's udpPayloadByte) and reports it.
    const port = 45000 + counter;
    const receiver = bed.spawn(etNs, process.execPath, [
      "-e",
      `const s = require("node:dgram").createSocket("udp4");
       s.on("message", (m) => {
         const seq = m.readUInt32BE(0);
         let ok = true;
         for (let i = 4; i < m.length; i++)
           if (m[i] !== ((i * 31 + seq * 7 + (i >> 8)) & 0xff)) ok = false;
         console.log(JSON.stringify({ seq, length: m.length, ok }));
       });
       s.bind(${port}, "${ET_TUNNEL}", () => console.log("{}"));`,
    ]);
    scope.add(new WatchedChild("UDP receiver", receiver));
    const got: Array<{ seq: number; length: number; ok: boolean }> = [];
    let listening = false;
    receiver.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      for (const line of chunk.split("\n").filter(Boolean)) {
        const record = JSON.parse(line) as { seq?: number; length: number; ok: boolean };
        if (record.seq === undefined) listening = true;
        else got.push(record as { seq: number; length: number; ok: boolean });
      }
    });
    await waitFor("the UDP receiver to listen", () => listening);
    const tunRx = () =>
      Number(
        /RX:[^\n]*\n\s*\d+\s+(\d+)/.exec(bed.exec(etNs, "ip", ["-s", "link", "show", name]))![1],
      );
    const rxBefore = tunRx();
    // Bursts small enough for the receiver's socket buffer: 40 datagrams, the last shorter.
    const bursts = 5;
    const perBurst = 40;
    for (let b = 0; b < bursts; b++) {
      peer.command({
        cmd: "udp",
        src: PEER_TUNNEL,
        dst: ET_TUNNEL,
        dport: port,
        count: perBurst,
        first: b * perBurst,
        size: 1200,
        last: 300 + b,
      });
      await waitFor(`burst ${b} to arrive`, () => got.length >= (b + 1) * perBurst, 10_000);
    }
    const sent = Array.from({ length: bursts * perBurst }, (_, seq) => ({
      seq,
      length: seq % perBurst === perBurst - 1 ? 300 + Math.floor(seq / perBurst) : 1200,
      ok: true,
    }));
    expect([...got].sort((a, b) => a.seq - b.seq)).toEqual(sent);
    // The TUN counts one received packet per write: fewer writes than datagrams means the
    // receive thread wrote super-packets (a kernel without USO refuses them: one by one).
    const writes = tunRx() - rxBefore;
    if (kernelHasUso) expect(writes).toBeLessThan(bursts * perBurst);
    else expect(writes).toBe(bursts * perBurst);
    peer.command({ cmd: "exit" });
    expect(await stop(daemon)).toBe(0);
    expect(daemon.interfaceDown<InterfaceDown>().nativeReceived).toBeGreaterThanOrEqual(
      bursts * perBurst,
    );
  }, 60_000);

  it("send thread: the daemon initiates; its first packets reach the core, which stages them, shakes hands and sends them; an address without a route goes to the core too", async () => {
    const { daemon, peer, name, peerPublic } = await startPair(true, true);
    // The kernel in the daemon's namespace pings the peer: no session yet, so the thread hands
    // the first echo request to the core, which stages it and starts the handshake.
    const first = await runPing(etNs, PEER_TUNNEL, 1);
    expect(first, "the staged first ping").toBe(1);
    expect(peer.count((e) => e.event === "echo-request")).toBe(1);
    expect(await runPing(etNs, PEER_TUNNEL, 10)).toBe(10);
    // Inside the interface's subnet but in no peer's allowed IPs: the core drops it (no_route).
    expect(await runPing(etNs, "10.222.0.99", 2)).toBe(0);
    // `wg show` transfer after a sync: 11 echo requests of 84 bytes sealed as 96 + 32 bytes
    // (the core's too), the handshake initiation (148 bytes) counted as wireguard-go counts it.
    const [received, sent] = bed
      .exec(etNs, "wg", ["show", name, "transfer"])
      .trim()
      .split("\t")
      .slice(1)
      .map(Number);
    expect(sent).toBeGreaterThanOrEqual(11 * 128);
    expect(sent).toBeLessThanOrEqual(11 * 128 + 148 + 4 * 32);
    expect(received).toBeGreaterThanOrEqual(11 * 128);
    expect((await peerDrops(peer)).replayed).toBe(0);
    expect(bed.exec(etNs, "wg", ["show", name, "peers"]).trim()).toBe(peerPublic);
    peer.command({ cmd: "exit" });
    expect(await stop(daemon)).toBe(0);
    const down = daemon.interfaceDown<InterfaceDown>();
    // The first ping and the two unrouted (the interface's own IPv6 chatter may add more).
    expect(down.nativeTunToJs).toBeGreaterThanOrEqual(3);
    expect(down.drops.no_route).toBeGreaterThanOrEqual(2);
    expectSealed(true, down, 9);
  }, 60_000);
});
