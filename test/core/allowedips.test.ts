import { SocketAddress } from "node:net";

import fc from "fast-check";
import { describe, expect, it } from "vitest";

import { AllowedIps } from "../../src/core/allowedips.js";
import { formatAddress, formatCidr, InvalidCidrError, parseCidr } from "../../src/core/ipaddr.js";
import { seededNumbers } from "../support/index.js";

function randomInt(random: () => number, below: number): number {
  return Math.floor(random() * below);
}

function masked(address: Uint8Array, cidr: number): Uint8Array {
  const result = new Uint8Array(address.length);
  for (let i = 0; i < address.length; i++) {
    const bitsInByte = Math.min(Math.max(cidr - i * 8, 0), 8);
    result[i] = address[i]! & ((0xff00 >> bitsInByte) & 0xff);
  }
  return result;
}

function inPrefix(address: Uint8Array, prefix: Uint8Array, cidr: number): boolean {
  return (
    address.length === prefix.length && masked(address, cidr).every((byte, i) => byte === prefix[i])
  );
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

interface Route<T> {
  address: Uint8Array;
  cidr: number;
  value: T;
}

/** What the trie must agree with: a list, scanned in full for the longest match. */
class NaiveRoutes<T> {
  routes: Route<T>[] = [];

  insert(address: Uint8Array, cidr: number, value: T): void {
    const prefix = masked(address, cidr);
    const existing = this.routes.find(
      (route) => route.cidr === cidr && hex(route.address) === hex(prefix),
    );
    if (existing !== undefined) {
      existing.value = value;
    } else {
      this.routes.push({ address: prefix, cidr, value });
    }
  }

  remove(address: Uint8Array, cidr: number, value: T): boolean {
    const prefix = masked(address, cidr);
    const index = this.routes.findIndex(
      (route) => route.cidr === cidr && hex(route.address) === hex(prefix) && route.value === value,
    );
    if (index === -1) {
      return false;
    }
    this.routes.splice(index, 1);
    return true;
  }

  removeByValue(value: T): void {
    this.routes = this.routes.filter((route) => route.value !== value);
  }

  lookup(address: Uint8Array): T | undefined {
    let best: Route<T> | undefined;
    for (const route of this.routes) {
      if (
        inPrefix(address, route.address, route.cidr) &&
        (best === undefined || route.cidr > best.cidr)
      ) {
        best = route;
      }
    }
    return best?.value;
  }

  entriesFor(value: T): string[] {
    return this.routes
      .filter((route) => route.value === value)
      .sort(
        (a, b) =>
          a.address.length - b.address.length ||
          Buffer.compare(Buffer.from(a.address), Buffer.from(b.address)) ||
          a.cidr - b.cidr,
      )
      .map((route) => `${hex(route.address)}/${route.cidr}`);
  }
}

function entryStrings(entries: Array<{ address: Uint8Array; cidr: number }>): string[] {
  return entries.map((entry) => `${hex(entry.address)}/${entry.cidr}`);
}

function ip(text: string): Uint8Array {
  return parseCidr(text).address;
}

interface Peer {
  name: string;
}

function peers(count: number): Peer[] {
  return Array.from({ length: count }, (_, i) => ({ name: `peer${i}` }));
}

describe("AllowedIps against a linear scan", () => {
  // Random routes clustered around a few base addresses, so that prefixes nest, overlap and
  // diverge at every depth rather than being scattered and disjoint.
  function runRandomComparison(addressBytes: 4 | 16, seed: number): void {
    const random = seededNumbers(seed);
    const maxCidr = addressBytes * 8;
    const bases = Array.from({ length: 6 }, () => {
      const base = new Uint8Array(addressBytes);
      for (let i = 0; i < addressBytes; i++) base[i] = randomInt(random, 256);
      return base;
    });
    const randomAddress = (): Uint8Array => {
      const address = Uint8Array.from(bases[randomInt(random, bases.length)]!);
      // Flip a few random bits, mostly in the tail, to land near but not on the base.
      const flips = randomInt(random, 4);
      for (let i = 0; i < flips; i++) {
        const bit = maxCidr - 1 - Math.min(randomInt(random, maxCidr), randomInt(random, maxCidr));
        address[bit >>> 3]! ^= 0x80 >>> (bit & 7);
      }
      if (random() < 0.1) {
        for (let i = 0; i < addressBytes; i++) address[i] = randomInt(random, 256);
      }
      return address;
    };
    const randomCidr = (): number => {
      const roll = random();
      if (roll < 0.02) return 0;
      if (roll < 0.15) return maxCidr;
      return randomInt(random, maxCidr + 1);
    };

    const values = peers(24);
    const trie = new AllowedIps<Peer>();
    const naive = new NaiveRoutes<Peer>();

    let matched = 0;
    let missed = 0;
    for (let step = 0; step < 4000; step++) {
      const roll = random();
      if (roll < 0.6) {
        const address = randomAddress();
        const cidr = randomCidr();
        const value = values[randomInt(random, values.length)]!;
        trie.insert(address, cidr, value);
        naive.insert(address, cidr, value);
      } else if (roll < 0.75 && naive.routes.length > 0) {
        // Remove an existing route, with its own value or (sometimes) the wrong one.
        const route = naive.routes[randomInt(random, naive.routes.length)]!;
        const value = random() < 0.8 ? route.value : values[randomInt(random, values.length)]!;
        // Host bits set on removal must not matter either.
        const address = Uint8Array.from(route.address);
        if (route.cidr < maxCidr && random() < 0.5) address[addressBytes - 1]! |= 1;
        const expected = naive.remove(address, route.cidr, value);
        expect(trie.remove(address, route.cidr, value)).toBe(expected);
      } else if (roll < 0.8) {
        const address = randomAddress();
        const cidr = randomCidr();
        const value = values[randomInt(random, values.length)]!;
        expect(trie.remove(address, cidr, value)).toBe(naive.remove(address, cidr, value));
      } else if (roll < 0.82) {
        const value = values[randomInt(random, values.length)]!;
        trie.removeByValue(value);
        naive.removeByValue(value);
      } else {
        for (let i = 0; i < 10; i++) {
          const address = randomAddress();
          const expected = naive.lookup(address);
          expect(trie.lookup(address)).toBe(expected);
          if (expected === undefined) missed++;
          else matched++;
        }
      }
      expect(trie.size).toBe(naive.routes.length);
      // Removals must not leave dead branch points behind.
      expect(trie.nodeCount).toBeLessThanOrEqual(Math.max(0, 2 * trie.size - 1));
      if (step % 200 === 0) {
        for (const value of values) {
          expect(entryStrings(trie.entriesFor(value))).toEqual(naive.entriesFor(value));
        }
      }
    }

    // The clustering has to produce both hits and misses, or the comparison proves little.
    expect(matched).toBeGreaterThan(1000);
    expect(missed).toBeGreaterThan(10);

    // Finally every stored prefix, probed at its first and last address.
    for (const route of naive.routes) {
      const first = route.address;
      const last = Uint8Array.from(first);
      for (let bit = route.cidr; bit < maxCidr; bit++) last[bit >>> 3]! |= 0x80 >>> (bit & 7);
      expect(trie.lookup(first)).toBe(naive.lookup(first));
      expect(trie.lookup(last)).toBe(naive.lookup(last));
    }
    for (const value of values) {
      expect(entryStrings(trie.entriesFor(value))).toEqual(naive.entriesFor(value));
    }

    // And emptying it leaves nothing behind.
    for (const value of values) trie.removeByValue(value);
    expect(trie.size).toBe(0);
    expect(trie.nodeCount).toBe(0);
    expect(trie.lookup(randomAddress())).toBeUndefined();
  }

  for (const seed of [1, 2, 3, 0xdecafbad]) {
    it(`IPv4, seed ${seed}`, () => runRandomComparison(4, seed));
    it(`IPv6, seed ${seed}`, () => runRandomComparison(16, seed));
  }

  it("both families in one table, thousands of routes", () => {
    const random = seededNumbers(42);
    const values = peers(200);
    const trie = new AllowedIps<Peer>();
    const naive = new NaiveRoutes<Peer>();
    const randomBytes = (length: number): Uint8Array =>
      Uint8Array.from({ length }, () => randomInt(random, 256));
    for (let i = 0; i < 3000; i++) {
      const v6 = random() < 0.5;
      const address = randomBytes(v6 ? 16 : 4);
      // Short prefixes from a narrow range, so many routes overlap.
      address[0] = v6 ? 0xfd : 10;
      const cidr = v6 ? 8 + randomInt(random, 121) : 8 + randomInt(random, 25);
      const value = values[randomInt(random, values.length)]!;
      trie.insert(address, cidr, value);
      naive.insert(address, cidr, value);
    }
    expect(trie.size).toBe(naive.routes.length);
    for (let i = 0; i < 5000; i++) {
      const address = randomBytes(random() < 0.5 ? 16 : 4);
      address[0] = address.length === 16 ? 0xfd : 10;
      expect(trie.lookup(address)).toBe(naive.lookup(address));
    }
  });
});

describe("AllowedIps", () => {
  const [hub, edgeA, edgeB] = peers(3) as [Peer, Peer, Peer];

  it("picks the longest of overlapping prefixes", () => {
    const trie = new AllowedIps<Peer>();
    trie.insert(ip("10.0.0.0"), 8, hub);
    trie.insert(ip("10.1.0.0"), 16, edgeA);
    trie.insert(ip("10.1.2.3"), 32, edgeB);
    expect(trie.lookup(ip("10.1.2.3"))).toBe(edgeB);
    expect(trie.lookup(ip("10.1.2.4"))).toBe(edgeA);
    expect(trie.lookup(ip("10.2.0.1"))).toBe(hub);
    expect(trie.lookup(ip("11.0.0.1"))).toBeUndefined();
    expect(trie.size).toBe(3);

    // Removing the middle prefix exposes the shorter one again.
    expect(trie.remove(ip("10.1.0.0"), 16, edgeA)).toBe(true);
    expect(trie.lookup(ip("10.1.2.4"))).toBe(hub);
    expect(trie.lookup(ip("10.1.2.3"))).toBe(edgeB);
  });

  it("treats /0 as a default route per family", () => {
    const trie = new AllowedIps<Peer>();
    trie.insert(ip("0.0.0.0"), 0, hub);
    expect(trie.lookup(ip("203.0.113.9"))).toBe(hub);
    expect(trie.lookup(ip("255.255.255.255"))).toBe(hub);
    expect(trie.lookup(ip("2001:db8::1"))).toBeUndefined();
    trie.insert(ip("::"), 0, edgeA);
    trie.insert(ip("fd00::"), 64, edgeB);
    expect(trie.lookup(ip("2001:db8::1"))).toBe(edgeA);
    expect(trie.lookup(ip("fd00::42"))).toBe(edgeB);
    expect(trie.lookup(ip("fd00:0:0:1::42"))).toBe(edgeA);
    expect(trie.entriesFor(hub)).toEqual([{ address: ip("0.0.0.0"), cidr: 0 }]);
  });

  it("masks host bits off on insert and remove", () => {
    const trie = new AllowedIps<Peer>();
    trie.insert(ip("192.168.7.99"), 24, edgeA);
    expect(trie.entriesFor(edgeA)).toEqual([{ address: ip("192.168.7.0"), cidr: 24 }]);
    trie.insert(ip("192.168.7.1"), 24, edgeB); // the same prefix: replaces the value
    expect(trie.size).toBe(1);
    expect(trie.entriesFor(edgeA)).toEqual([]);
    expect(trie.lookup(ip("192.168.7.200"))).toBe(edgeB);
    expect(trie.remove(ip("192.168.7.255"), 24, edgeB)).toBe(true);
    expect(trie.size).toBe(0);

    trie.insert(ip("fd00::1:2:3:4"), 64, edgeA);
    expect(trie.entriesFor(edgeA)).toEqual([{ address: ip("fd00::"), cidr: 64 }]);
  });

  it("removes a prefix only when it maps to the given value", () => {
    const trie = new AllowedIps<Peer>();
    trie.insert(ip("10.0.0.0"), 24, edgeA);
    expect(trie.remove(ip("10.0.0.0"), 24, edgeB)).toBe(false);
    expect(trie.remove(ip("10.0.0.0"), 25, edgeA)).toBe(false);
    expect(trie.remove(ip("10.0.0.0"), 23, edgeA)).toBe(false);
    expect(trie.lookup(ip("10.0.0.1"))).toBe(edgeA);
    expect(trie.remove(ip("10.0.0.0"), 24, edgeA)).toBe(true);
    expect(trie.remove(ip("10.0.0.0"), 24, edgeA)).toBe(false);
  });

  it("does not confuse a branch point with a stored prefix", () => {
    const trie = new AllowedIps<Peer>();
    // These two diverge at bit 23, creating a valueless node for 10.0.0.0/23.
    trie.insert(ip("10.0.0.0"), 24, edgeA);
    trie.insert(ip("10.0.1.0"), 24, edgeB);
    expect(trie.size).toBe(2);
    expect(trie.remove(ip("10.0.0.0"), 23, edgeA)).toBe(false);
    trie.insert(ip("10.0.0.0"), 23, hub);
    expect(trie.size).toBe(3);
    expect(trie.lookup(ip("10.0.1.7"))).toBe(edgeB);
    trie.removeByValue(edgeB);
    trie.removeByValue(edgeA);
    expect(trie.lookup(ip("10.0.1.7"))).toBe(hub);
    expect(trie.size).toBe(1);
    expect(trie.nodeCount).toBe(1);
  });

  it("lists a value's prefixes in a stable order", () => {
    const routes = ["fd00::/64", "10.0.0.0/8", "10.0.0.0/24", "192.168.0.0/16", "9.9.9.9/32"];
    const expected = ["9.9.9.9/32", "10.0.0.0/8", "10.0.0.0/24", "192.168.0.0/16", "fd00::/64"];
    const random = seededNumbers(7);
    for (let round = 0; round < 10; round++) {
      const trie = new AllowedIps<Peer>();
      const shuffled = [...routes].sort(() => random() - 0.5);
      for (const text of shuffled) {
        const { address, cidr } = parseCidr(text);
        trie.insert(address, cidr, edgeA);
      }
      trie.insert(ip("172.16.0.0"), 12, edgeB);
      expect(trie.entriesFor(edgeA).map((e) => formatCidr(e.address, e.cidr))).toEqual(expected);
    }
  });

  it("looks up addresses in place inside packets", () => {
    const trie = new AllowedIps<Peer>();
    trie.insert(ip("10.9.0.0"), 16, edgeA);
    trie.insert(ip("fd00:9::"), 32, edgeB);
    // IPv4 header: destination at byte 16. IPv6 header: destination at byte 24.
    const v4Packet = new Uint8Array(64).fill(0xee);
    v4Packet.set(ip("10.9.8.7"), 16);
    expect(trie.lookupV4(v4Packet, 16)).toBe(edgeA);
    expect(trie.lookupV4(v4Packet, 12)).toBeUndefined();
    const v6Packet = new Uint8Array(80).fill(0xee);
    v6Packet.set(ip("fd00:9::1"), 24);
    expect(trie.lookupV6(v6Packet, 24)).toBe(edgeB);
    expect(trie.lookupV6(v6Packet, 8)).toBeUndefined();
    // A full-length prefix at the very end of a buffer must not read past it.
    trie.insert(ip("10.9.8.7"), 32, hub);
    expect(trie.lookupV4(ip("10.9.8.7"), 0)).toBe(hub);
    trie.insert(ip("fd00:9::1"), 128, hub);
    expect(trie.lookupV6(v6Packet.subarray(24, 40), 0)).toBe(hub);
  });

  it("keeps values by identity, including primitives", () => {
    const trie = new AllowedIps<number>();
    trie.insert(ip("10.0.0.0"), 8, 0);
    expect(trie.lookup(ip("10.0.0.1"))).toBe(0);
    expect(trie.entriesFor(0)).toHaveLength(1);
    trie.removeByValue(0);
    expect(trie.lookup(ip("10.0.0.1"))).toBeUndefined();
  });

  it("clears", () => {
    const trie = new AllowedIps<Peer>();
    trie.insert(ip("10.0.0.0"), 8, edgeA);
    trie.insert(ip("fd00::"), 8, edgeA);
    trie.clear();
    expect(trie.size).toBe(0);
    expect(trie.nodeCount).toBe(0);
    expect(trie.lookup(ip("10.0.0.1"))).toBeUndefined();
    expect(trie.entriesFor(edgeA)).toEqual([]);
  });

  it("rejects bad lengths and prefix lengths with a RangeError", () => {
    const trie = new AllowedIps<Peer>();
    expect(() => trie.insert(new Uint8Array(5), 8, edgeA)).toThrow(RangeError);
    expect(() => trie.insert(new Uint8Array(4), 33, edgeA)).toThrow(RangeError);
    expect(() => trie.insert(new Uint8Array(4), -1, edgeA)).toThrow(RangeError);
    expect(() => trie.insert(new Uint8Array(4), 1.5, edgeA)).toThrow(RangeError);
    expect(() => trie.insert(new Uint8Array(16), 129, edgeA)).toThrow(RangeError);
    expect(() => trie.remove(new Uint8Array(0), 0, edgeA)).toThrow(RangeError);
    expect(() => trie.lookup(new Uint8Array(6))).toThrow(RangeError);
    expect(() => trie.lookupV4(new Uint8Array(20), 17)).toThrow(RangeError);
    expect(() => trie.lookupV4(new Uint8Array(20), -1)).toThrow(RangeError);
    expect(() => trie.lookupV6(new Uint8Array(40), 25)).toThrow(RangeError);
    trie.insert(new Uint8Array(16), 128, edgeA);
    trie.insert(new Uint8Array(4), 0, edgeA);
    expect(trie.size).toBe(2);
  });
});

describe("parseCidr", () => {
  it.each([
    ["10.0.0.1/32", "0a000001", 32],
    ["10.0.0.0/8", "0a000000", 8],
    ["10.0.0.1/8", "0a000001", 8], // host bits kept; the trie masks them
    ["0.0.0.0/0", "00000000", 0],
    ["192.168.1.2", "c0a80102", 32],
    ["fd00::/64", "fd000000000000000000000000000000", 64],
    ["::/0", "00000000000000000000000000000000", 0],
    ["::1", "00000000000000000000000000000001", 128],
    ["2001:DB8::AbC/48", "20010db8000000000000000000000abc", 48],
    ["1:2:3:4:5:6:7:8/128", "00010002000300040005000600070008", 128],
    ["1::", "00010000000000000000000000000000", 128],
    ["::ffff:10.1.2.3/96", "00000000000000000000ffff0a010203", 96],
    ["64:ff9b::192.0.2.33/96", "0064ff9b0000000000000000c0000221", 96],
  ])("parses %s", (text, addressHex, cidr) => {
    const parsed = parseCidr(text);
    expect(hex(parsed.address)).toBe(addressHex);
    expect(parsed.cidr).toBe(cidr);
  });

  it.each([
    ["", /not an IPv4 or IPv6 address/],
    ["/8", /not an IPv4 or IPv6 address/],
    ["10.0.0/8", /not an IPv4 or IPv6 address/],
    ["10.0.0.256/8", /not an IPv4 or IPv6 address/],
    ["010.0.0.1", /not an IPv4 or IPv6 address/],
    ["1::2::3/64", /not an IPv4 or IPv6 address/],
    ["fe80::1%eth0/64", /zone index/],
    ["fe80::1%1", /zone index/],
    ["wg0", /not an IPv4 or IPv6 address/],
    ["10.0.0.0/", /prefix length "" is not a decimal number/],
    ["10.0.0.0/8/8", /prefix length "8\/8" is not a decimal number/],
    ["10.0.0.0/-1", /is not a decimal number/],
    ["10.0.0.0/+8", /is not a decimal number/],
    ["10.0.0.0/08", /is not a decimal number/],
    ["10.0.0.0/8a", /is not a decimal number/],
    ["10.0.0.0/33", /prefix length 33 is more than 32 for an IPv4 address/],
    ["fd00::/129", /prefix length 129 is more than 128 for an IPv6 address/],
    ["fd00::/1000", /prefix length 1000 is more than 128/],
    ["10.0.0.0/99999999999999999999999", /is more than 32/],
    [" 10.0.0.0/8", /contains whitespace/],
    ["10.0.0.0 /8", /contains whitespace/],
  ])("rejects %j", (text, message) => {
    expect(() => parseCidr(text)).toThrow(InvalidCidrError);
    expect(() => parseCidr(text)).toThrow(message);
  });

  it("names the input in its error and carries a stable code", () => {
    try {
      parseCidr("10.0.0.0/40");
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(Error);
      expect((error as InvalidCidrError).code).toBe("ERR_INVALID_CIDR");
      expect((error as Error).message).toContain('"10.0.0.0/40"');
    }
  });
});

describe("formatAddress and formatCidr", () => {
  it.each([
    ["10.0.0.1", "10.0.0.1"],
    ["0.0.0.0", "0.0.0.0"],
    ["255.255.255.255", "255.255.255.255"],
    ["fd00:0:0:0:0:0:0:0", "fd00::"],
    ["0:0:0:0:0:0:0:0", "::"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["1:0:0:0:0:0:0:0", "1::"],
    ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // one zero group is not compressed
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"], // the longest run wins
    ["1:0:0:1:1:0:0:1", "1::1:1:0:0:1"], // on a tie, the first
    ["FD00:ABCD::", "fd00:abcd::"],
    ["::ffff:1.2.3.4", "::ffff:1.2.3.4"], // as glibc's inet_ntop, so as `wg show`
    ["::ffff:0:0", "::ffff:0.0.0.0"],
    ["::1.2.3.4", "::1.2.3.4"],
    ["::1:0:1", "::1:0:1"],
  ])("formats %s as %s", (input, expected) => {
    expect(formatAddress(ip(input))).toBe(expected);
  });

  it("matches libuv's inet_ntop on addresses full of zero groups", () => {
    const random = seededNumbers(99);
    for (let i = 0; i < 5000; i++) {
      const bytes = new Uint8Array(16);
      for (let group = 0; group < 8; group++) {
        const roll = random();
        const value = roll < 0.6 ? 0 : roll < 0.7 ? 0xffff : randomInt(random, 0x10000);
        bytes[group * 2] = value >>> 8;
        bytes[group * 2 + 1] = value & 0xff;
      }
      const expanded = Array.from({ length: 8 }, (_, g) =>
        ((bytes[g * 2]! << 8) | bytes[g * 2 + 1]!).toString(16),
      ).join(":");
      const reference = new SocketAddress({ address: expanded, family: "ipv6" }).address;
      expect(formatAddress(bytes)).toBe(reference);
    }
  });

  it("formats prefixes", () => {
    expect(formatCidr(ip("fd00::"), 64)).toBe("fd00::/64");
    expect(formatCidr(ip("0.0.0.0"), 0)).toBe("0.0.0.0/0");
    expect(formatCidr(ip("::"), 0)).toBe("::/0");
    expect(() => formatCidr(ip("10.0.0.0"), 33)).toThrow(RangeError);
    expect(() => formatAddress(new Uint8Array(5))).toThrow(RangeError);
  });

  it("round-trips through parseCidr", () => {
    const prefix = fc.oneof(
      fc.record({
        address: fc.uint8Array({ minLength: 4, maxLength: 4 }),
        cidr: fc.integer({ min: 0, max: 32 }),
      }),
      fc.record({
        // Zero-heavy, so compression and the embedded-IPv4 forms get exercised.
        address: fc
          .array(
            fc.oneof(fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff })),
            {
              minLength: 8,
              maxLength: 8,
            },
          )
          .map((groups) => {
            const bytes = new Uint8Array(16);
            groups.forEach((group, i) => {
              bytes[i * 2] = group >>> 8;
              bytes[i * 2 + 1] = group & 0xff;
            });
            return bytes;
          }),
        cidr: fc.integer({ min: 0, max: 128 }),
      }),
    );
    fc.assert(
      fc.property(prefix, ({ address, cidr }) => {
        const text = formatCidr(address, cidr);
        const parsed = parseCidr(text);
        expect(hex(parsed.address)).toBe(hex(address));
        expect(parsed.cidr).toBe(cidr);
        expect(formatCidr(parsed.address, parsed.cidr)).toBe(text);
      }),
      { numRuns: 3000 },
    );
  });

  it("never throws anything but InvalidCidrError on arbitrary text", () => {
    fc.assert(
      fc.property(
        fc.string({ unit: fc.constantFrom(..."0123456789abcdefABCDEF:./% x-") }),
        (text) => {
          try {
            const { address, cidr } = parseCidr(text);
            expect([4, 16]).toContain(address.length);
            expect(cidr).toBeGreaterThanOrEqual(0);
            expect(cidr).toBeLessThanOrEqual(address.length * 8);
          } catch (error) {
            expect(error).toBeInstanceOf(InvalidCidrError);
          }
        },
      ),
      { numRuns: 5000 },
    );
  });
});
