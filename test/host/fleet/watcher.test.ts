// The fleet watcher against a real etcd (started here on loopback): the hub-side device follows
// the store through adds, changes and removals; malformed records and conflicts are skipped
// and counted; a partition, an etcd restart and a compaction lose no change and apply none
// twice. The peers land in a real daemon's device through its reconfiguration queue (over
// in-memory TUN and UDP devices: no root needed).
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Device } from "../../../src/core/device.js";
import { parseCidr } from "../../../src/core/ipaddr.js";
import { EtcdClient } from "../../../src/host/fleet/etcd.js";
import {
  edgeAllowedIps,
  edgeKey,
  formatEdgeRecord,
  type EdgeRecord,
} from "../../../src/host/fleet/records.js";
import type { FleetSink } from "../../../src/host/fleet/sink.js";
import type { Daemon } from "../../../src/host/daemon.js";
import { FleetWatcher } from "../../../src/host/fleet/watcher.js";
import { CuttableLink, TestEtcd, etcdUnavailableReason } from "../../support/etcd.js";
import { captureJsonLog, startFleetDaemon, testEdge } from "../../support/fleet-daemon.js";
import { waitFor } from "../../support/netns.js";

const skip = etcdUnavailableReason();
if (skip) console.warn(`fleet watcher tests skipped: ${skip}`);

let prefixCounter = 0;
const newPrefix = () => `/w${process.pid}x${prefixCounter++}`;

/** The real sink over a bare device, counting what it is asked to do. */
class CountingSink implements FleetSink {
  readonly applied: string[] = [];
  readonly removed: string[] = [];
  constructor(private readonly inner: FleetSink) {}
  async upsertPeer(e: EdgeRecord, previous: EdgeRecord | null): Promise<void> {
    await this.inner.upsertPeer(e, previous);
    this.applied.push(`${e.name}@${e.persistentKeepalive}`);
  }
  async removePeer(e: EdgeRecord): Promise<void> {
    await this.inner.removePeer(e);
    this.removed.push(e.name);
  }
}

/** A real daemon over in-memory devices, its file's peers given, the fleet's sink attached. */
const running: Daemon[] = [];
async function hub(filePeers: EdgeRecord[] = []) {
  const { daemon, sink: inner } = await startFleetDaemon({
    filePeers: filePeers.map((p) => ({ publicKey: p.publicKey, allowedIps: edgeAllowedIps(p) })),
  });
  running.push(daemon);
  return { device: daemon.device, sink: new CountingSink(inner) };
}

/** The device holds exactly the edges in `expected`, by key and allowed IPs. */
function expectPeers(device: Device, expected: EdgeRecord[]): void {
  const wanted = new Map(expected.map((e) => [e.publicKey.toString("base64"), e]));
  expect([...device.peers.keys()].sort()).toEqual([...wanted.keys()].sort());
  for (const [key, e] of wanted) {
    const peer = device.peers.get(key)!;
    expect(peer.persistentKeepalive).toBe(e.persistentKeepalive);
    expect(device.allowedIps.entriesFor(peer).length).toBe(1 + e.podCidrs.length);
  }
}

describe.skipIf(skip !== null)("fleet watcher with a real etcd", () => {
  let etcd: TestEtcd;
  let client: EtcdClient;

  beforeAll(async () => {
    etcd = await TestEtcd.create();
    client = etcd.client();
  }, 30_000);

  afterEach(async () => {
    for (const daemon of running.splice(0)) await daemon.stop();
  });

  afterAll(async () => {
    client?.close();
    await etcd?.cleanup();
  });

  it("loads the fleet, then follows adds, changes and removals one edge at a time", async () => {
    const prefix = newPrefix();
    const a = testEdge("a", 1);
    const b = testEdge("b", 2);
    await client.put(edgeKey(prefix, "a"), formatEdgeRecord(a));
    const { device, sink } = await hub();
    const { logger } = captureJsonLog();
    const watcher = new FleetWatcher({ client: etcd.client(), prefix, sink, logger });
    watcher.start();
    try {
      expect(await watcher.loaded(10_000)).toBe(true);
      expectPeers(device, [a]);
      const sessionPeer = device.peers.get(a.publicKey.toString("base64"));
      await client.put(edgeKey(prefix, "b"), formatEdgeRecord(b));
      await waitFor("b applied", () => device.peers.size === 2);
      const a2 = { ...a, persistentKeepalive: 25, podCidrs: [parseCidr("10.200.0.0/24")] };
      await client.put(edgeKey(prefix, "a"), formatEdgeRecord(a2));
      await waitFor("a changed", () => sink.applied.includes("a@25"));
      expectPeers(device, [a2, b]);
      // Same key: changed in place, the peer object (and its sessions) kept.
      expect(device.peers.get(a.publicKey.toString("base64"))).toBe(sessionPeer);
      expect(device.allowedIps.lookup(parseCidr("10.200.0.9").address)).toBe(sessionPeer);
      expect(device.allowedIps.lookup(parseCidr("10.100.1.9").address)).toBeUndefined();
      await client.delete(edgeKey(prefix, "b"));
      await waitFor("b removed", () => device.peers.size === 1);
      expectPeers(device, [a2]);
      expect(sink.applied).toEqual(["a@0", "b@0", "a@25"]);
      expect(watcher.readinessNote()).toBeNull();
    } finally {
      await watcher.stop();
    }
  });

  it("skips malformed records with a log line and a count, and keeps an edge's last good version", async () => {
    const prefix = newPrefix();
    const good = testEdge("good", 3);
    await client.put(edgeKey(prefix, "good"), formatEdgeRecord(good));
    await client.put(`${prefix}/edges/Bad_Name!`, formatEdgeRecord(testEdge("x", 4)));
    await client.put(`${prefix}/edges/notjson`, "{publicKey:");
    const { device, sink } = await hub();
    const { lines, logger } = captureJsonLog();
    const watcher = new FleetWatcher({ client: etcd.client(), prefix, sink, logger });
    watcher.start();
    try {
      await watcher.loaded(10_000);
      expectPeers(device, [good]);
      expect(watcher.stats.rejected.malformed).toBe(2);
      const bad = [
        JSON.stringify({ publicKey: "short", tunnelAddress: "10.99.0.9" }),
        JSON.stringify({ ...JSON.parse(formatEdgeRecord(good)), tunnelAddress: "10.99.0.0/24" }),
        JSON.stringify({ ...JSON.parse(formatEdgeRecord(good)), podCidrs: ["10.1.2.3/24"] }),
        JSON.stringify({ ...JSON.parse(formatEdgeRecord(good)), surprise: 1 }),
        JSON.stringify({ ...JSON.parse(formatEdgeRecord(good)), persistentKeepalive: 70000 }),
        "x".repeat(10_000),
      ];
      for (const value of bad) await client.put(edgeKey(prefix, "good"), value);
      const fine = testEdge("fine", 5);
      await client.put(edgeKey(prefix, "fine"), formatEdgeRecord(fine));
      await waitFor("fine applied", () => device.peers.size === 2);
      expect(watcher.stats.rejected.malformed).toBe(2 + bad.length);
      expectPeers(device, [good, fine]);
      const skipped = lines.filter((l) => l.msg === "fleet record skipped: malformed");
      expect(skipped).toHaveLength(2 + bad.length);
      expect(skipped.every((l) => typeof l.error === "string" && typeof l.key === "string")).toBe(
        true,
      );
    } finally {
      await watcher.stop();
    }
  });

  it("refuses a conflicting edge whole (same key, overlapping allowed IPs), counts it, and takes it once the conflict is gone", async () => {
    const prefix = newPrefix();
    const fromFile = testEdge("file", 6, { podCidrs: [parseCidr("10.50.0.0/16")] });
    const { device, sink } = await hub([fromFile]);
    const { lines, logger } = captureJsonLog();
    const watcher = new FleetWatcher({ client: etcd.client(), prefix, sink, logger });
    watcher.start();
    try {
      await watcher.loaded(10_000);
      const sameKey = testEdge("samekey", 7, { publicKey: fromFile.publicKey });
      const inside = testEdge("inside", 8, { podCidrs: [parseCidr("10.50.3.0/24")] });
      const first = testEdge("first", 9, { podCidrs: [parseCidr("10.60.0.0/24")] });
      const wider = testEdge("wider", 10, { podCidrs: [parseCidr("10.60.0.0/16")] });
      for (const e of [sameKey, inside, first, wider]) {
        await client.put(edgeKey(prefix, e.name), formatEdgeRecord(e));
      }
      await waitFor(
        "all four seen",
        () =>
          watcher.stats.revision > 0 &&
          sink.applied.includes("first@0") &&
          watcher.stats.rejected.allowed_ips === 2,
      );
      expect(watcher.stats.rejected.public_key).toBe(1);
      expectPeers(
        device,
        [fromFile, first].map((e) => e),
      );
      const refusals = lines.filter(
        (l) => l.msg === "fleet edge refused; the running peers are unchanged",
      );
      expect(refusals.map((l) => l.reason).sort()).toEqual([
        "allowed_ips",
        "allowed_ips",
        "public_key",
      ]);
      expect(String(refusals.find((l) => l.edge === "inside")!.error)).toContain("10.50.0.0/16");
      // The file peer kept its prefix; the edge that was there first kept its own.
      expect(device.allowedIps.lookup(parseCidr("10.50.3.1").address)!.publicKey).toEqual(
        fromFile.publicKey,
      );
      // Once "first" leaves, "wider" fits and is applied without anyone writing it again.
      await client.delete(edgeKey(prefix, "first"));
      await waitFor("wider applied", () => sink.applied.includes("wider@0"));
      expect(device.allowedIps.lookup(parseCidr("10.60.9.9").address)!.publicKey).toEqual(
        wider.publicKey,
      );
    } finally {
      await watcher.stop();
    }
  });

  it("loses no change and applies none twice across a partition, an etcd restart and a compaction", async () => {
    const prefix = newPrefix();
    const link = await CuttableLink.open(etcd.clientPort);
    const watched = new EtcdClient({ host: "127.0.0.1", port: link.port, prefix, tls: false });
    const { device, sink } = await hub();
    const { lines, logger } = captureJsonLog();
    const watcher = new FleetWatcher({
      client: watched,
      prefix,
      sink,
      logger,
      retryMinMs: 50,
      retryMaxMs: 200,
    });
    const records = new Map<string, EdgeRecord>();
    const write = async (e: EdgeRecord) => {
      records.set(e.name, e);
      // A write that etcd took while its answer was lost is written again: same content.
      for (let attempt = 0; ; attempt++) {
        try {
          await client.put(edgeKey(prefix, e.name), formatEdgeRecord(e));
          return;
        } catch (error) {
          if (attempt > 200) throw error;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    };
    const base = Array.from({ length: 10 }, (_, i) => testEdge(`e${i}`, 20 + i));
    for (const e of base) await write(e);
    watcher.start();
    try {
      await watcher.loaded(10_000);
      let version = 0;
      const change = async () => {
        version++;
        const e = records.get(`e${version % 10}`)!;
        await write({ ...e, persistentKeepalive: version });
      };
      // 1. Partition: changes made while the hub cannot see etcd arrive after it can.
      for (let i = 0; i < 5; i++) await change();
      link.sever();
      await waitFor("watcher notices", () => !watcher.stats.connected);
      expect(watcher.readinessNote()).toMatch(/fleet store unreachable/);
      for (let i = 0; i < 5; i++) await change();
      link.restore();
      await waitFor("caught up after partition", () =>
        sink.applied.includes(`e${version % 10}@${version}`),
      );
      // 2. etcd itself stops in the middle of a stream of changes and comes back.
      const writer = (async () => {
        for (let i = 0; i < 20; i++) {
          await change();
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })();
      await new Promise((resolve) => setTimeout(resolve, 100));
      await etcd.stop("SIGKILL");
      await new Promise((resolve) => setTimeout(resolve, 300));
      await etcd.start();
      await writer;
      await waitFor(
        "caught up after restart",
        () => sink.applied.includes(`e${version % 10}@${version}`),
        20_000,
      );
      // Up to here the watch always resumed from its revision: every version, in order.
      const versions = sink.applied.filter((item) => !item.endsWith("@0"));
      expect(versions).toEqual(
        Array.from({ length: version }, (_, i) => `e${(i + 1) % 10}@${i + 1}`),
      );
      // 3. Compaction: partitioned while edges change and history is compacted away.
      link.sever();
      await waitFor("watcher notices again", () => !watcher.stats.connected);
      for (let i = 0; i < 5; i++) await change();
      const gone = records.get("e3")!;
      records.delete("e3");
      await client.delete(edgeKey(prefix, "e3"));
      const fresh = testEdge("fresh", 40);
      await write(fresh);
      const { revision } = await client.rangePrefix(prefix);
      await client.compact(revision);
      link.restore();
      await waitFor(
        "resynced",
        () => watcher.stats.fullLoads === 2 && watcher.stats.connected,
        20_000,
      );
      expect(watcher.stats.compactions).toBe(1);
      expect(device.peer(gone.publicKey)).toBeUndefined();
      expectPeers(device, [...records.values()]);
      // Nothing applied twice: every (edge, version) exactly once.
      const counts = new Map<string, number>();
      for (const item of sink.applied) counts.set(item, (counts.get(item) ?? 0) + 1);
      expect([...counts.entries()].filter(([, n]) => n > 1)).toEqual([]);
      expect(watcher.stats.reconnects).toBeGreaterThanOrEqual(2);
      expect(watcher.stats.fullLoads).toBe(2);
      expect(lines.some((l) => l.msg === "fleet store reachable again")).toBe(true);
      expect(
        lines.some((l) => l.msg === "fleet watch compacted away; reading the whole fleet again"),
      ).toBe(true);
      expect(watcher.readinessNote()).toBeNull();
    } finally {
      await watcher.stop();
      watched.close();
      await link.close();
    }
  }, 60_000);
});
