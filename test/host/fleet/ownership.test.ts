// The rule between the fleet and the other sources of change (src/host/reconfigure.ts
// respectOwners), on a real daemon over in-memory devices: `wg setconf`, `wg syncconf`, `wg set
// … remove` and a reload of the file leave the fleet's peers alone (and say so in the log); a
// file or control-socket peer cannot take an edge's allowed IPs, nor an edge a file peer's;
// the fleet's own changes go through the same queue, one edge per change, whatever the size
// of the fleet.
import { afterEach, describe, expect, it } from "vitest";
import { decodeKey, encodeKey, generatePrivateKey, publicKeyOf } from "../../../src/core/keys.js";
import { parseCidr } from "../../../src/core/ipaddr.js";
import { parseConfig } from "../../../src/host/config.js";
import type { Daemon } from "../../../src/host/daemon.js";
import { FleetConflictError } from "../../../src/host/fleet/sink.js";
import { nativeLoadError } from "../../../src/host/native/index.js";
import { handleSet } from "../../../src/host/uapi.js";
import { captureJsonLog, startFleetDaemon, testEdge } from "../../support/fleet-daemon.js";

const addonMissing = nativeLoadError();
const skip = addonMissing ? `needs the native addon (${addonMissing.message})` : null;
if (skip) console.warn(`fleet ownership tests skipped: ${skip}`);

const newKey = () => decodeKey(publicKeyOf(generatePrivateKey()));
const hex = (key: Uint8Array) => Buffer.from(key).toString("hex");

const running: Daemon[] = [];
afterEach(async () => {
  for (const daemon of running.splice(0)) await daemon.stop();
});

describe.skipIf(skip !== null)("fleet peers and the other sources of change", () => {
  it("wg setconf, wg syncconf, wg set … remove and a reload leave the fleet's peers; the log says so", async () => {
    const filePeer = { publicKey: newKey(), allowedIps: [parseCidr("10.50.0.0/16")] };
    const { lines, logger } = captureJsonLog();
    const { daemon, sink, configText } = await startFleetDaemon({
      filePeers: [filePeer],
      logger,
    });
    running.push(daemon);
    const e1 = testEdge("e1", 1);
    await sink.upsertPeer(e1, null);
    const e1Key = e1.publicKey.toString("base64");
    const has = (key: Uint8Array) => daemon.device.peer(key) !== undefined;
    const skipped = () =>
      lines.filter(
        (l) => l.msg === "peers owned by another source left as they are; change them there",
      );

    // `wg set hub0 peer E1 remove`: answered 0 (wg syncconf sends the same line), not done.
    expect(await handleSet(daemon, [`public_key=${hex(e1.publicKey)}`, "remove=true"])).toBe(0);
    expect(has(e1.publicKey)).toBe(true);
    expect(skipped().at(-1)).toMatchObject({
      source: "control socket",
      peers: 1,
      first: ["fleet edge e1"],
    });

    // `wg setconf` with another file peer: replace_peers replaces the file's peers only.
    const second = newKey();
    expect(
      await handleSet(daemon, [
        "replace_peers=true",
        `public_key=${hex(second)}`,
        "allowed_ip=10.51.0.0/16",
      ]),
    ).toBe(0);
    expect(has(filePeer.publicKey)).toBe(false);
    expect(has(second)).toBe(true);
    expect(has(e1.publicKey)).toBe(true);
    expect(skipped()).toHaveLength(2);
    expect(daemon.device.allowedIps.lookup(parseCidr("10.100.1.9").address)?.publicKeyBase64).toBe(
      e1Key,
    );

    // `wg syncconf` of a file without the edge: what wg sends is a remove for each peer
    // missing from the file; the edge's is left out, the rest applies.
    expect(
      await handleSet(daemon, [
        `public_key=${hex(second)}`,
        "remove=true",
        `public_key=${hex(filePeer.publicKey)}`,
        "allowed_ip=10.50.0.0/16",
        `public_key=${hex(e1.publicKey)}`,
        "remove=true",
      ]),
    ).toBe(0);
    expect(has(second)).toBe(false);
    expect(has(filePeer.publicKey)).toBe(true);
    expect(has(e1.publicKey)).toBe(true);

    // A reload (SIGHUP, edgetun syncconf) of a file that has no fleet peers.
    await daemon.applyConfig(parseConfig(configText, "hub.conf"));
    expect(has(e1.publicKey)).toBe(true);
    expect(has(filePeer.publicKey)).toBe(true);

    // The fleet removes its own.
    await sink.removePeer(e1);
    expect(has(e1.publicKey)).toBe(false);
  });

  it("a control-socket peer cannot take an edge's allowed IPs, nor an edge a file peer's; both refused whole", async () => {
    const filePeer = { publicKey: newKey(), allowedIps: [parseCidr("10.50.0.0/16")] };
    const { daemon, sink } = await startFleetDaemon({ filePeers: [filePeer] });
    running.push(daemon);
    const e1 = testEdge("e1", 1);
    await sink.upsertPeer(e1, null);
    const before = daemon.device.peers.size;

    // wg set with a new peer that would take a /28 inside e1's pods, plus a harmless one.
    const intruder = newKey();
    const harmless = newKey();
    const errno = await handleSet(daemon, [
      `public_key=${hex(harmless)}`,
      "allowed_ip=10.60.0.0/24",
      `public_key=${hex(intruder)}`,
      "allowed_ip=10.100.1.16/28",
    ]);
    expect(errno).toBe(-22);
    expect(daemon.device.peers.size).toBe(before);
    expect(daemon.device.peer(harmless)).toBeUndefined();

    // An edge inside the file peer's /16, and one with the file peer's key: refused whole.
    const inside = { ...testEdge("inside", 2), podCidrs: [parseCidr("10.50.3.0/24")] };
    await expect(sink.upsertPeer(inside, null)).rejects.toBeInstanceOf(FleetConflictError);
    const sameKey = { ...testEdge("samekey", 3), publicKey: Buffer.from(filePeer.publicKey) };
    await expect(sink.upsertPeer(sameKey, null)).rejects.toMatchObject({ kind: "public_key" });
    expect(daemon.device.peers.size).toBe(before);
    expect(daemon.device.allowedIps.lookup(parseCidr("10.99.0.4").address)).toBeUndefined();
    expect(sink.peerOwner.owns(inside.publicKey.toString("base64"))).toBe(false);
    // The refused edge is not the fleet's: the file source may still use that key.
    expect(encodeKey(inside.publicKey)).toHaveLength(44);
  });

  it("adds, changes and removes one edge among 5,000 as a change of that one peer", async () => {
    const { lines, logger } = captureJsonLog();
    const { daemon, sink } = await startFleetDaemon({ logger });
    running.push(daemon);
    const fleet = Array.from({ length: 5000 }, (_, i) => testEdge(`e${i}`, i));
    for (const e of fleet) await sink.upsertPeer(e, null);
    expect(daemon.device.peers.size).toBe(5000);
    const applied = () =>
      lines.filter((l) => l.msg === "configuration applied" && l.source === "fleet");
    const last = () => applied().at(-1)!;

    const added = testEdge("new", 5001);
    await sink.upsertPeer(added, null);
    expect(last()).toMatchObject({ peersAdded: 1, peersRemoved: 0, peersChanged: 0 });

    const peer = daemon.device.peer(fleet[7]!.publicKey);
    const changed = {
      ...fleet[7]!,
      podCidrs: [parseCidr("10.200.7.0/24")],
      persistentKeepalive: 25,
    };
    await sink.upsertPeer(changed, fleet[7]!);
    expect(last()).toMatchObject({ peersAdded: 0, peersRemoved: 0, peersChanged: 1 });
    // Same key: the same peer object (sessions and counters kept), its prefixes replaced.
    expect(daemon.device.peer(changed.publicKey)).toBe(peer);
    expect(daemon.device.allowedIps.lookup(parseCidr("10.200.7.9").address)).toBe(peer);
    expect(daemon.device.allowedIps.lookup(parseCidr("10.100.7.9").address)).toBeUndefined();

    const rekeyed = { ...fleet[8]!, publicKey: newKey() };
    await sink.upsertPeer(rekeyed, fleet[8]!);
    expect(last()).toMatchObject({ peersAdded: 1, peersRemoved: 1, peersChanged: 0 });
    expect(daemon.device.peer(fleet[8]!.publicKey)).toBeUndefined();

    await sink.removePeer(added);
    expect(last()).toMatchObject({ peersAdded: 0, peersRemoved: 1, peersChanged: 0 });
    expect(daemon.device.peers.size).toBe(5000);
  }, 60_000);
});
