import { describe, expect, it } from "vitest";

import { parseCidr } from "../../src/core/ipaddr.js";
import { HandshakeRateLimiter, halfSipHash24 } from "../../src/core/ratelimiter.js";
import { seededNumbers } from "../support/index.js";

const FIXED_HASH_KEY = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);

function ip(text: string): Uint8Array {
  return parseCidr(text).address;
}

function limiter(
  options: { packetsPerSecond?: number; burst?: number; maxEntries?: number } = {},
): HandshakeRateLimiter {
  return new HandshakeRateLimiter({ ...options, hashKey: FIXED_HASH_KEY });
}

/** How many of `count` back-to-back handshakes at `nowMs` get through. */
function allowedOf(
  rateLimiter: HandshakeRateLimiter,
  address: Uint8Array,
  nowMs: number,
  count: number,
): number {
  let allowed = 0;
  for (let i = 0; i < count; i++) {
    if (rateLimiter.allow(address, nowMs)) allowed++;
  }
  return allowed;
}

describe("HandshakeRateLimiter", () => {
  it("lets a burst of 5 through, then limits", () => {
    const rateLimiter = limiter();
    const source = ip("198.51.100.7");
    expect(allowedOf(rateLimiter, source, 1000, 5)).toBe(5);
    expect(rateLimiter.allow(source, 1000)).toBe(false);
    expect(rateLimiter.allow(source, 1001)).toBe(false);
  });

  it("refills one packet per 50 ms at 20 per second", () => {
    const rateLimiter = limiter();
    const source = ip("198.51.100.7");
    expect(allowedOf(rateLimiter, source, 0, 10)).toBe(5);
    expect(rateLimiter.allow(source, 49)).toBe(false);
    expect(rateLimiter.allow(source, 50)).toBe(true);
    expect(rateLimiter.allow(source, 50)).toBe(false);
    expect(rateLimiter.allow(source, 99)).toBe(false);
    expect(rateLimiter.allow(source, 100)).toBe(true);
    // Refused attempts do not use up the refill, and the refill does not round away.
    for (let t = 101; t < 150; t++) expect(rateLimiter.allow(source, t)).toBe(false);
    expect(rateLimiter.allow(source, 150)).toBe(true);
  });

  it("holds a flooding source to the rate over time", () => {
    const rateLimiter = limiter();
    const source = ip("2001:db8::bad");
    let allowed = 0;
    for (let t = 0; t < 10_000; t += 10) {
      if (rateLimiter.allow(source, t)) allowed++;
    }
    // The burst, plus 20 per second for the 9.99 s after the first packet.
    expect(allowed).toBe(Math.floor(5 + (20 * 9990) / 1000));
  });

  it("refills only up to the burst after a pause", () => {
    const rateLimiter = limiter();
    const source = ip("198.51.100.7");
    expect(allowedOf(rateLimiter, source, 0, 5)).toBe(5);
    // Keep it alive with a refused packet or two, then a long pause.
    expect(rateLimiter.allow(source, 10)).toBe(false);
    expect(allowedOf(rateLimiter, source, 900, 20)).toBe(5);
  });

  it("honours other rates and bursts", () => {
    const rateLimiter = limiter({ packetsPerSecond: 3, burst: 2 });
    const source = ip("203.0.113.1");
    expect(allowedOf(rateLimiter, source, 0, 10)).toBe(2);
    // One packet every 333.33 ms: not at 333, at 334.
    expect(rateLimiter.allow(source, 333)).toBe(false);
    expect(rateLimiter.allow(source, 334)).toBe(true);
  });

  it("keeps a separate bucket per IPv4 address", () => {
    const rateLimiter = limiter();
    expect(allowedOf(rateLimiter, ip("10.0.0.1"), 0, 10)).toBe(5);
    expect(allowedOf(rateLimiter, ip("10.0.0.2"), 0, 10)).toBe(5);
    expect(allowedOf(rateLimiter, ip("10.0.0.1"), 0, 10)).toBe(0);
    expect(rateLimiter.size).toBe(2);
  });

  it("groups IPv6 sources by /64", () => {
    const rateLimiter = limiter();
    expect(allowedOf(rateLimiter, ip("2001:db8:0:1::1"), 0, 3)).toBe(3);
    expect(allowedOf(rateLimiter, ip("2001:db8:0:1:ffff:ffff:ffff:ffff"), 0, 10)).toBe(2);
    expect(allowedOf(rateLimiter, ip("2001:db8:0:2::1"), 0, 10)).toBe(5);
    expect(allowedOf(rateLimiter, ip("2001:db8:1:1::1"), 0, 10)).toBe(5);
    expect(rateLimiter.size).toBe(3);
  });

  it("keeps IPv4 and IPv6 apart even when their bytes agree", () => {
    const rateLimiter = limiter();
    expect(allowedOf(rateLimiter, ip("10.0.0.1"), 0, 10)).toBe(5);
    expect(allowedOf(rateLimiter, ip("a00:1::"), 0, 10)).toBe(5);
    expect(allowedOf(rateLimiter, ip("a00:1::1"), 0, 10)).toBe(0);
  });

  it("treats an IPv4-mapped IPv6 source as the IPv4 address it is", () => {
    const rateLimiter = limiter();
    expect(allowedOf(rateLimiter, ip("::ffff:192.0.2.1"), 0, 3)).toBe(3);
    expect(allowedOf(rateLimiter, ip("192.0.2.1"), 0, 10)).toBe(2);
    // Not one /64 for all of IPv4.
    expect(allowedOf(rateLimiter, ip("::ffff:192.0.2.2"), 0, 10)).toBe(5);
    expect(rateLimiter.size).toBe(2);
  });

  it("refuses new sources when the table is full, not known ones", () => {
    const rateLimiter = limiter({ maxEntries: 3 });
    expect(rateLimiter.allow(ip("10.0.0.1"), 0)).toBe(true);
    expect(rateLimiter.allow(ip("10.0.0.2"), 0)).toBe(true);
    expect(rateLimiter.allow(ip("10.0.0.3"), 0)).toBe(true);
    expect(rateLimiter.allow(ip("10.0.0.4"), 0)).toBe(false);
    expect(rateLimiter.allow(ip("fd00::4"), 500)).toBe(false);
    expect(rateLimiter.size).toBe(3);
    expect(rateLimiter.allow(ip("10.0.0.1"), 500)).toBe(true);
    // Once the others have been idle past the collection, there is room again.
    expect(rateLimiter.allow(ip("10.0.0.4"), 1400)).toBe(true);
    expect(rateLimiter.size).toBe(2); // 10.0.0.1 was active at 500 ms, so it stays
  });

  it("collects entries idle for more than a second, lazily", () => {
    const rateLimiter = limiter();
    for (let i = 0; i < 100; i++) rateLimiter.allow(Uint8Array.from([10, 0, 1, i]), 0);
    expect(rateLimiter.size).toBe(100);
    rateLimiter.allow(ip("10.0.0.1"), 999);
    expect(rateLimiter.size).toBe(101);
    // Collection runs at most once a second and only takes what has been idle over 1 s.
    rateLimiter.allow(ip("10.0.0.1"), 1000);
    expect(rateLimiter.size).toBe(101);
    rateLimiter.allow(ip("10.0.0.2"), 1500);
    expect(rateLimiter.size).toBe(102);
    rateLimiter.allow(ip("10.0.0.2"), 2000);
    expect(rateLimiter.size).toBe(2);
    rateLimiter.allow(ip("10.0.0.2"), 3000);
    expect(rateLimiter.size).toBe(1);
  });

  it("survives a clock that steps backwards", () => {
    const rateLimiter = limiter();
    const source = ip("10.0.0.1");
    expect(allowedOf(rateLimiter, source, 10_000, 5)).toBe(5);
    expect(rateLimiter.allow(source, 5_000)).toBe(false);
    expect(rateLimiter.allow(source, 10_049)).toBe(false);
    expect(rateLimiter.allow(source, 10_050)).toBe(true);
  });

  it("rejects a bad address length and bad options", () => {
    const rateLimiter = limiter();
    expect(() => rateLimiter.allow(new Uint8Array(6), 0)).toThrow(RangeError);
    expect(() => limiter({ packetsPerSecond: 0 })).toThrow(RangeError);
    expect(() => limiter({ burst: 0 })).toThrow(RangeError);
    expect(() => limiter({ burst: 1.5 })).toThrow(RangeError);
    expect(() => limiter({ maxEntries: 0 })).toThrow(RangeError);
    expect(() => new HandshakeRateLimiter({ hashKey: new Uint8Array(7) })).toThrow(RangeError);
    // The defaults, with a random hash key.
    const withDefaults = new HandshakeRateLimiter();
    expect(allowedOf(withDefaults, ip("10.0.0.1"), 0, 10)).toBe(5);
  });
});

/**
 * The same rules with a Map and string keys, to check the hash table underneath. Tokens in
 * thousandths of a packet, so that both sides do exact integer arithmetic.
 */
class NaiveRateLimiter {
  readonly #buckets = new Map<string, { tokens: number; lastMs: number }>();
  #lastCollectMs = -Infinity;
  /** New sources turned away because the table was full. */
  refusedAsFull = 0;

  constructor(private readonly maxEntries: number) {}

  get size(): number {
    return this.#buckets.size;
  }

  allow(address: Uint8Array, nowMs: number): boolean {
    const mapped =
      address.length === 16 && address.subarray(0, 12).join() === "0,0,0,0,0,0,0,0,0,0,255,255";
    const key =
      address.length === 4
        ? `v4 ${address.join(".")}`
        : mapped
          ? `v4 ${address.subarray(12).join(".")}`
          : `v6 ${Buffer.from(address.subarray(0, 8)).toString("hex")}`;
    if (nowMs - this.#lastCollectMs >= 1000) {
      this.#lastCollectMs = nowMs;
      for (const [bucketKey, bucket] of this.#buckets) {
        if (nowMs - bucket.lastMs > 1000) this.#buckets.delete(bucketKey);
      }
    }
    const bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      if (this.#buckets.size >= this.maxEntries) {
        this.refusedAsFull++;
        return false;
      }
      this.#buckets.set(key, { tokens: 4000, lastMs: nowMs });
      return true;
    }
    if (nowMs > bucket.lastMs) {
      bucket.tokens = Math.min(5000, bucket.tokens + (nowMs - bucket.lastMs) * 20);
      bucket.lastMs = nowMs;
    }
    if (bucket.tokens < 1000) return false;
    bucket.tokens -= 1000;
    return true;
  }
}

describe("HandshakeRateLimiter against a Map", () => {
  // Many sources coming and going makes the table grow, collide, collect and shift entries
  // back after deletions; any slip shows up as a source with the wrong bucket.
  for (const seed of [1, 2, 3, 4]) {
    it(`agrees over a busy random minute, seed ${seed}`, () => {
      const random = seededNumbers(seed);
      // Below the crowd's size, so the table also runs full at times.
      const maxEntries = 200;
      const rateLimiter = new HandshakeRateLimiter({
        maxEntries,
        hashKey: Uint8Array.from({ length: 8 }, () => Math.floor(random() * 256)),
      });
      const naive = new NaiveRateLimiter(maxEntries);
      const sources = Array.from({ length: 1500 }, (_, i) => {
        if (i % 3 === 0) return Uint8Array.from([10, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff]);
        const v6 = new Uint8Array(16);
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[6] = i >> 8;
        v6[7] = i & 0xff;
        v6[15] = Math.floor(random() * 256); // host bits, which must not matter
        if (i % 3 === 2) {
          v6.fill(0, 0, 10); // IPv4-mapped, sharing buckets with the 10.x sources
          v6.set([0xff, 0xff, 10, 0, (i >> 8) & 0xff, (i - 2) & 0xff], 10);
        }
        return v6;
      });
      let nowMs = 0;
      let allowed = 0;
      for (let step = 0; step < 60_000; step++) {
        nowMs += Math.floor(random() * 3);
        // A hot set of sources plus a rotating crowd, so entries age out and return.
        const crowdStart = Math.floor(nowMs / 50) % sources.length;
        const index =
          random() < 0.3
            ? Math.floor(random() * 10)
            : (crowdStart + Math.floor(random() * 400)) % sources.length;
        const source = sources[index]!;
        const expected = naive.allow(source, nowMs);
        if (rateLimiter.allow(source, nowMs) !== expected) {
          expect.fail(`step ${step} at ${nowMs} ms, source #${index}: expected ${expected}`);
        }
        if (expected) allowed++;
        if (step % 1000 === 0) expect(rateLimiter.size).toBe(naive.size);
      }
      expect(rateLimiter.size).toBe(naive.size);
      expect(naive.refusedAsFull).toBeGreaterThan(100);
      expect(allowed).toBeGreaterThan(10_000);
      expect(allowed).toBeLessThan(59_000);
    });
  }
});

describe("halfSipHash24", () => {
  // From the reference implementation's vectors: key 00..07, message 00..(n-1), 32-bit output
  // read as a little-endian word.
  it("matches the published vectors for 4- and 8-byte messages", () => {
    const key0 = 0x03020100;
    const key1 = 0x07060504;
    expect(halfSipHash24(key0, key1, 0x03020100, 0, 4)).toBe(0x89466e2a);
    expect(halfSipHash24(key0, key1, 0x03020100, 0x07060504, 8)).toBe(0x8f84b8d0);
  });
});
