// Records and the overlap check, without etcd: strict parsing, and the allowed-IPs table's
// overlap query against a naive reference over random prefixes (IPv4 and IPv6).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { generatePrivateKey, publicKeyOf } from "../../../src/core/keys.js";
import { AllowedIps } from "../../../src/core/allowedips.js";
import { formatCidr, parseCidr } from "../../../src/core/ipaddr.js";
import {
  FleetRecordError,
  contains,
  formatEdgeRecord,
  maskAddress,
  parseEdgeRecord,
  parseHubRecord,
  type Prefix,
} from "../../../src/host/fleet/records.js";

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

describe("AllowedIps.firstOverlap (the fleet's conflict check)", () => {
  const overlaps = (a: Prefix, b: Prefix) =>
    a.address.length === b.address.length &&
    (a.cidr <= b.cidr ? contains(a, b.address) : contains(b, a.address));

  it("finds an overlap exactly when a naive comparison does, ignoring the values it is told to", () => {
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
          const table = new AllowedIps<string>();
          const kept = new Map<string, [Prefix, string]>();
          for (const [p, owner] of held) {
            table.insert(p.address, p.cidr, `o${owner}`);
            kept.set(formatCidr(p.address, p.cidr), [p, `o${owner}`]);
          }
          // Remove one, so that removal (and the trie's pruning) is covered too.
          const first = [...kept.values()][0];
          if (first) {
            table.remove(first[0].address, first[0].cidr, first[1]);
            kept.delete(formatCidr(first[0].address, first[0].cidr));
          }
          for (const self of ["o0", "o9"]) {
            const naive = [...kept.values()].some(([p, o]) => o !== self && overlaps(p, probe));
            const found = table.firstOverlap(probe.address, probe.cidr, (o) => o === self);
            expect(found !== undefined).toBe(naive);
            if (found) {
              expect(found.value).not.toBe(self);
              expect(overlaps(found, probe)).toBe(true);
            }
          }
        },
      ),
      { numRuns: 400 },
    );
  });

  it("names the overlapping prefix", () => {
    const table = new AllowedIps<string>();
    const wide = parseCidr("10.50.0.0/16");
    table.insert(wide.address, wide.cidr, "file peer");
    const inside = parseCidr("10.50.3.0/24");
    expect(table.firstOverlap(inside.address, inside.cidr, () => false)).toMatchObject({
      cidr: 16,
      value: "file peer",
    });
    const eight = parseCidr("10.0.0.0/8");
    expect(table.firstOverlap(eight.address, eight.cidr, () => false)?.cidr).toBe(16);
    const other = parseCidr("10.51.0.0/16");
    expect(table.firstOverlap(other.address, other.cidr, () => false)).toBeUndefined();
  });
});
