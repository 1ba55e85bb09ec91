// Records and the overlap index, without etcd: strict parsing, and PrefixOwners against a
// naive reference over random prefixes (IPv4 and IPv6).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { generatePrivateKey, publicKeyOf } from "../../../src/core/keys.js";
import { parseCidr } from "../../../src/core/ipaddr.js";
import {
  FleetRecordError,
  contains,
  formatEdgeRecord,
  maskAddress,
  parseEdgeRecord,
  parseHubRecord,
  type Prefix,
} from "../../../src/host/fleet/records.js";
import { PrefixOwners } from "../../../src/host/fleet/sink.js";

const key = publicKeyOf(generatePrivateKey());

describe("fleet records", () => {
  it("round-trips an edge and refuses anything loose", () => {
    const text = JSON.stringify({
      publicKey: key,
      tunnelAddress: "10.99.0.7",
      podCidrs: ["10.244.7.0/24", "fd00:7::/64"],
      endpoint: "[2001:db8::1]:51820",
      persistentKeepalive: 25,
    });
    const edge = parseEdgeRecord("edge-7", Buffer.from(text));
    expect(JSON.parse(formatEdgeRecord(edge))).toEqual(JSON.parse(text));
    const bad: Array<[string, unknown]> = [
      ["missing key", { tunnelAddress: "10.99.0.7" }],
      ["address with length", { publicKey: key, tunnelAddress: "10.99.0.7/32" }],
      ["host bits", { publicKey: key, tunnelAddress: "10.99.0.7", podCidrs: ["10.1.1.1/24"] }],
      ["not a list", { publicKey: key, tunnelAddress: "10.99.0.7", podCidrs: "10.1.0.0/16" }],
      ["bad endpoint", { publicKey: key, tunnelAddress: "10.99.0.7", endpoint: "x" }],
      ["keepalive", { publicKey: key, tunnelAddress: "10.99.0.7", persistentKeepalive: -1 }],
      ["extra field", { publicKey: key, tunnelAddress: "10.99.0.7", privateKey: key }],
      ["array", [key]],
    ];
    for (const [why, value] of bad) {
      expect(() => parseEdgeRecord("e", Buffer.from(JSON.stringify(value))), why).toThrow(
        FleetRecordError,
      );
    }
    expect(() => parseEdgeRecord("E!", Buffer.from(text))).toThrow(/invalid name/);
    // No part of a refused key shows in the message.
    const psk = Buffer.alloc(32, 7).toString("base64").slice(0, 40);
    try {
      parseEdgeRecord(
        "e",
        Buffer.from(
          JSON.stringify({ publicKey: key, tunnelAddress: "10.99.0.7", presharedKey: psk }),
        ),
      );
      expect.unreachable();
    } catch (error) {
      expect((error as Error).message).not.toContain(psk.slice(0, 12));
    }
  });

  it("checks a hub's address is inside its subnet", () => {
    const hub = {
      publicKey: key,
      endpoints: ["192.0.2.1:51820"],
      subnet: "10.99.0.0/16",
      address: "10.99.0.1",
    };
    expect(parseHubRecord("h", Buffer.from(JSON.stringify(hub))).allowedIps).toHaveLength(1);
    expect(() =>
      parseHubRecord("h", Buffer.from(JSON.stringify({ ...hub, address: "10.98.0.1" }))),
    ).toThrow(/outside/);
  });
});

describe("PrefixOwners", () => {
  const overlaps = (a: Prefix, b: Prefix) =>
    a.address.length === b.address.length &&
    (a.cidr <= b.cidr ? contains(a, b.address) : contains(b, a.address));

  it("finds exactly the overlaps a naive comparison finds", () => {
    const prefix = (v6: boolean) =>
      fc
        .tuple(
          fc.uint8Array({ minLength: v6 ? 16 : 4, maxLength: v6 ? 16 : 4 }),
          fc.integer({ min: 0, max: v6 ? 128 : 32 }),
        )
        .map(([bytes, cidr]) => {
          // Few distinct high bits, so that overlaps actually happen.
          bytes[0] = bytes[0]! & 0x81;
          return { address: maskAddress(bytes, cidr), cidr };
        });
    fc.assert(
      fc.property(
        fc
          .boolean()
          .chain((v6) =>
            fc.tuple(
              fc.array(fc.tuple(prefix(v6), fc.integer({ min: 0, max: 4 })), { maxLength: 30 }),
              prefix(v6),
            ),
          ),
        ([held, probe]) => {
          const owners = new PrefixOwners();
          const kept: Array<[Prefix, string]> = [];
          for (const [p, owner] of held) {
            // As the sink does: a prefix is added only when it overlaps nobody else's.
            const same = kept.some(
              ([k, o]) => o === `o${owner}` && k.cidr === p.cidr && overlaps(k, p),
            );
            if (!same && owners.overlap(p, `o${owner}`, []) === null) {
              owners.add(p, `o${owner}`);
              kept.push([p, `o${owner}`]);
            }
          }
          // Remove one, to check removal too.
          if (kept.length > 0) {
            const [p, owner] = kept.shift()!;
            owners.remove(p, owner);
          }
          for (const self of ["o0", "o9"]) {
            const own = kept.filter(([, o]) => o === self).map(([p]) => p);
            const naive = kept.some(([p, o]) => o !== self && overlaps(p, probe));
            expect(owners.overlap(probe, self, own) !== null).toBe(naive);
          }
        },
      ),
      { numRuns: 400 },
    );
  });

  it("names the covering prefix", () => {
    const owners = new PrefixOwners();
    owners.add(parseCidr("10.50.0.0/16"), "file peer x");
    expect(owners.overlap(parseCidr("10.50.3.0/24"), "edge a", [])).toBe(
      "10.50.0.0/16 of file peer x",
    );
    expect(owners.overlap(parseCidr("10.0.0.0/8"), "edge a", [])).toMatch(
      /narrower prefix inside 10.0.0.0\/8/,
    );
    expect(owners.overlap(parseCidr("10.51.0.0/16"), "edge a", [])).toBeNull();
  });
});
