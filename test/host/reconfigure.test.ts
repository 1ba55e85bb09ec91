// The reconfiguration queue without root: the plan of prefixes that appear and disappear
// matches what applying the change really does (random changes, fast-check), a refused step
// leaves the device exactly as it was, changes run one at a time, and a file diff names only
// the peers that differ.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Device } from "../../src/core/device.js";
import { formatCidr, parseCidr } from "../../src/core/ipaddr.js";
import { decodeKey, generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import {
  ReconfigurationError,
  Reconfigurer,
  applyToDevice,
  changeFromConfig,
  planPrefixes,
  withoutUnchangedAllowedIps,
  type ConfigChange,
  type PeerChange,
  type Prefix,
  type ReconfigurationHost,
  type RouteKeeper,
} from "../../src/host/reconfigure.js";

const privateKey = () => decodeKey(generatePrivateKey());
const publicKeys = Array.from({ length: 6 }, () => decodeKey(publicKeyOf(generatePrivateKey())));
const prefixes = [
  "10.0.0.0/24",
  "10.0.1.0/24",
  "10.0.0.0/16",
  "fd00::/64",
  "0.0.0.0/0",
  "10.0.0.7/32",
];

/** Every prefix in the device's allowed IPs, as text. */
function allPrefixes(device: Device): Set<string> {
  const all = new Set<string>();
  for (const peer of device.peers.values()) {
    for (const p of device.allowedIps.entriesFor(peer)) all.add(formatCidr(p.address, p.cidr));
  }
  return all;
}

/** A snapshot of what a change may alter: keys, endpoints, keepalives, allowed IPs. */
function snapshot(device: Device): string {
  return JSON.stringify(
    [...device.peers.values()].map((peer) => [
      peer.publicKeyBase64,
      peer.presharedKey.toString("hex"),
      peer.endpoint,
      peer.persistentKeepalive,
      device.allowedIps.entriesFor(peer).map((p) => formatCidr(p.address, p.cidr)),
    ]),
  );
}

const peerChange = fc.record({
  key: fc.integer({ min: 0, max: publicKeys.length - 1 }),
  remove: fc.boolean(),
  updateOnly: fc.boolean(),
  replaceAllowedIps: fc.boolean(),
  allowedIps: fc.subarray(prefixes),
});

function toChange(
  sections: Array<{
    key: number;
    remove: boolean;
    updateOnly: boolean;
    replaceAllowedIps: boolean;
    allowedIps: string[];
  }>,
  replacePeers: boolean,
): ConfigChange {
  return {
    replacePeers,
    peers: sections.map((s): PeerChange => ({
      publicKey: publicKeys[s.key]!,
      remove: s.remove,
      updateOnly: s.updateOnly,
      replaceAllowedIps: s.replaceAllowedIps,
      allowedIps: s.allowedIps.map(parseCidr),
    })),
  };
}

describe("planPrefixes", () => {
  it("predicts exactly which prefixes appear and disappear (random devices and changes)", () => {
    fc.assert(
      fc.property(
        fc.array(peerChange, { maxLength: 6 }),
        fc.array(peerChange, { maxLength: 6 }),
        fc.boolean(),
        (initial, sections, replacePeers) => {
          const device = new Device({ privateKey: privateKey() });
          applyToDevice(device, toChange(initial, false));
          const before = allPrefixes(device);
          const change = toChange(sections, replacePeers);
          const { appearing, disappearing } = planPrefixes(device, change);
          applyToDevice(device, change);
          const after = allPrefixes(device);
          const text = (list: Prefix[]) => list.map((p) => formatCidr(p.address, p.cidr)).sort();
          expect(text(appearing)).toEqual([...after].filter((p) => !before.has(p)).sort());
          expect(text(disappearing)).toEqual([...before].filter((p) => !after.has(p)).sort());
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe("withoutUnchangedAllowedIps", () => {
  it("drops only replacements that change nothing: the device ends the same (random changes)", () => {
    fc.assert(
      fc.property(
        fc.array(peerChange, { maxLength: 6 }),
        fc.array(peerChange, { maxLength: 6 }),
        (initial, sections) => {
          const whole = new Device({ privateKey: privateKey() });
          const trimmed = new Device({ privateKey: privateKey() });
          applyToDevice(whole, toChange(initial, false));
          applyToDevice(trimmed, toChange(initial, false));
          const change = toChange(sections, false);
          applyToDevice(whole, change);
          applyToDevice(trimmed, withoutUnchangedAllowedIps(trimmed, change));
          expect(snapshot(trimmed)).toEqual(snapshot(whole));
        },
      ),
      { numRuns: 500 },
    );
  });

  it("a wg syncconf of an unchanged fleet replaces no allowed IPs", () => {
    const ownKey = privateKey();
    const device = new Device({ privateKey: ownKey });
    const sections = publicKeys.map((publicKey, i) => ({
      publicKey,
      remove: false,
      updateOnly: false,
      replaceAllowedIps: true,
      allowedIps: [parseCidr(`10.9.${i}.0/24`), parseCidr(`10.8.${i}.1/32`)],
    }));
    applyToDevice(device, { replacePeers: false, peers: sections });
    // wg syncconf sends the running private key along: that changes nothing either.
    const trimmed = withoutUnchangedAllowedIps(device, {
      privateKey: ownKey,
      replacePeers: false,
      peers: sections,
    });
    expect(trimmed.peers.every((p) => !p.replaceAllowedIps && p.allowedIps.length === 0)).toBe(
      true,
    );
    // A new private key is left alone, whole.
    const rekeyed = { privateKey: privateKey(), replacePeers: false, peers: sections };
    expect(withoutUnchangedAllowedIps(device, rekeyed)).toBe(rekeyed);
    // One peer's prefixes changed: that section alone still replaces.
    const changed = sections.map((p, i) =>
      i === 2 ? { ...p, allowedIps: [parseCidr("10.7.0.0/24")] } : p,
    );
    const one = withoutUnchangedAllowedIps(device, { replacePeers: false, peers: changed });
    expect(one.peers.map((p) => p.replaceAllowedIps)).toEqual(sections.map((_, i) => i === 2));
    // A prefix listed twice in place of one of the peer's two: the replacement drops the other.
    const repeated = [
      { ...sections[3]!, allowedIps: [sections[3]!.allowedIps[0]!, sections[3]!.allowedIps[0]!] },
    ];
    expect(
      withoutUnchangedAllowedIps(device, { replacePeers: false, peers: repeated }).peers[0]!
        .replaceAllowedIps,
    ).toBe(true);
    // Peer 1's prefix given to peer 0 first, then peer 1 listed unchanged: the replacement
    // takes it back (the prefix ends with peer 1), so it must stay in the change.
    const moved = [
      { ...sections[0]!, replaceAllowedIps: false, allowedIps: [sections[1]!.allowedIps[0]!] },
      sections[1]!,
    ];
    const kept = withoutUnchangedAllowedIps(device, { replacePeers: false, peers: moved });
    expect(kept.peers[1]!.replaceAllowedIps).toBe(true);
    applyToDevice(device, kept);
    expect(device.allowedIps.exact(sections[1]!.allowedIps[0]!.address, 24)).toBe(
      device.peer(publicKeys[1]!),
    );
  });
});

class Host implements ReconfigurationHost {
  port = 51820;
  mark = 0;
  routes: RouteKeeper | null = null;
  constructor(readonly device: Device) {}
  listenPort(): number {
    return this.port;
  }
  prepareListenPort(port: number) {
    if (port === 1) throw Object.assign(new Error("port 1 is in use"), { code: "EADDRINUSE" });
    return { commit: () => (this.port = port), abort: () => undefined };
  }
  fwmark(): number {
    return this.mark;
  }
  setFwmark(mark: number): void {
    this.mark = mark;
  }
}

describe("Reconfigurer", () => {
  const upsert = (key: number, ...allowedIps: string[]): PeerChange => ({
    publicKey: publicKeys[key]!,
    remove: false,
    updateOnly: false,
    replaceAllowedIps: true,
    allowedIps: allowedIps.map(parseCidr),
  });

  it("a refused route leaves peers, port and fwmark exactly as they were", async () => {
    const device = new Device({ privateKey: privateKey() });
    const host = new Host(device);
    const queue = new Reconfigurer(host);
    await queue.apply({ replacePeers: false, peers: [upsert(0, "10.0.0.0/24")] }, "test");
    const before = snapshot(device);
    host.routes = {
      plan: (appearing, disappearing) => ({
        add: [...appearing],
        remove: [...disappearing],
        needsFwmark: 51820,
      }),
      install: () => {
        throw Object.assign(new Error("route 10.9.0.0/24 table main: EEXIST"), { errno: -17 });
      },
      retire: () => undefined,
    };
    const refused = queue.apply(
      {
        listenPort: 40000,
        fwmark: 7,
        replacePeers: false,
        peers: [upsert(0, "10.9.0.0/24"), upsert(1, "0.0.0.0/0")],
      },
      "test",
    );
    await expect(refused).rejects.toMatchObject({ code: "ERR_RECONFIGURE_ROUTES", errno: -17 });
    expect(snapshot(device)).toBe(before);
    expect(host.port).toBe(51820);
    expect(host.mark).toBe(0);
  });

  it("a port in use is refused with EADDRINUSE and nothing changes; the queue goes on", async () => {
    const device = new Device({ privateKey: privateKey() });
    const host = new Host(device);
    const queue = new Reconfigurer(host);
    const refused = queue.apply(
      { listenPort: 1, fwmark: 9, replacePeers: false, peers: [upsert(0, "10.0.0.0/24")] },
      "test",
    );
    const next = queue.apply({ replacePeers: false, peers: [upsert(1, "10.0.1.0/24")] }, "test");
    await expect(refused).rejects.toBeInstanceOf(ReconfigurationError);
    await expect(refused).rejects.toMatchObject({
      code: "ERR_RECONFIGURE_LISTEN_PORT",
      errno: -98,
    });
    expect(await next).toMatchObject({ peersAdded: 1 });
    expect(device.peer(publicKeys[0]!)).toBeUndefined();
    expect(host.mark).toBe(0);
  });

  it("an invalid change is refused before anything is looked at", async () => {
    const host = new Host(new Device({ privateKey: privateKey() }));
    await expect(
      new Reconfigurer(host).apply(
        { replacePeers: false, peers: [{ ...upsert(0), persistentKeepalive: 70000 }] },
        "test",
      ),
    ).rejects.toMatchObject({ code: "ERR_RECONFIGURE_INVALID", errno: -22 });
  });

  it("a file diff names only the peers that differ, so one changed peer among many costs one", () => {
    const key = privateKey();
    const device = new Device({ privateKey: key });
    const filePeers = publicKeys.map((publicKey, i) => ({
      publicKey: Buffer.from(publicKey),
      presharedKey: null,
      endpoint: null,
      allowedIps: [parseCidr(`10.1.${i}.0/24`)],
      persistentKeepalive: 0,
      line: i,
    }));
    const config = { privateKey: Buffer.from(key), listenPort: null, fwmark: 0, peers: filePeers };
    const current = { listenPort: 51820, fwmark: 0 };
    applyToDevice(device, changeFromConfig(device, config, [], current));
    expect(changeFromConfig(device, config, [], current)).toEqual({
      replacePeers: false,
      peers: [],
    });
    filePeers[3] = { ...filePeers[3]!, allowedIps: [parseCidr("10.2.3.0/24")] };
    const change = changeFromConfig(device, config, [], current);
    expect(change.peers).toHaveLength(1);
    expect(change.peers[0]).toMatchObject({
      publicKey: filePeers[3]!.publicKey,
      replaceAllowedIps: true,
    });
  });
});
