/**
 * Per-source token buckets for handshake messages, consulted only while the device is under
 * load: a handshake costs Diffie-Hellman operations, so one flooding source must not be able
 * to take them all. Rates as in the kernel: 20 handshakes per second per source, bursts of 5.
 *
 * A source is an IPv4 address or an IPv6 /64 (one subscriber usually gets a whole /64, so
 * keying by full IPv6 address would give an attacker 2^64 buckets).
 *
 * The table is an open-addressing hash table in typed arrays: a flood of handshakes from
 * spoofed sources is exactly when this runs, so it allocates nothing per call, its size is
 * bounded, and its hash is keyed with a secret so that sources cannot be chosen to collide.
 * Idle entries are collected lazily, at most once per second, from inside `allow`.
 */

import { randomFillSync } from "node:crypto";

import { IPV4_ADDRESS_BYTES, IPV6_ADDRESS_BYTES } from "./ipaddr.js";

export const DEFAULT_HANDSHAKES_PER_SECOND = 20;
export const DEFAULT_HANDSHAKE_BURST = 5;
export const DEFAULT_RATE_LIMIT_ENTRIES = 65536;

const MS_PER_SECOND = 1000;
/**
 * An entry idle this long has refilled its bucket to the brim (5 packets at 20/s take 250 ms),
 * so forgetting it changes nothing a source can observe.
 */
const IDLE_EXPIRY_MS = 1000;
const COLLECT_INTERVAL_MS = 1000;
const INITIAL_SLOTS = 64;
/** 2^24 sources is far beyond any real table and keeps the slot arrays allocatable. */
const MAX_ENTRIES_LIMIT = 1 << 24;

/** Slot kinds double as the byte length of the key, which the hash mixes in. */
const EMPTY = 0;
const IPV4_KEY_BYTES = 4;
const IPV6_PREFIX_KEY_BYTES = 8;

export class HandshakeRateLimiter {
  // Tokens are counted in units of 1/packetsPerSecond milliseconds: a millisecond adds
  // `packetsPerSecond` tokens and a packet costs 1000. With an integer clock every quantity
  // stays an exact integer, whatever the rate.
  readonly #tokensPerMs: number;
  readonly #tokensPerPacket = MS_PER_SECOND;
  readonly #bucketCapacity: number;
  readonly #maxEntries: number;
  readonly #maxSlots: number;
  readonly #hashKey0: number;
  readonly #hashKey1: number;

  // Empty until the constructor's #allocateSlots.
  #slotMask = -1;
  #slotKind = new Uint8Array(0);
  #slotKey0 = new Int32Array(0);
  #slotKey1 = new Int32Array(0);
  #slotHash = new Int32Array(0);
  #slotTokens = new Float64Array(0);
  #slotLastMs = new Float64Array(0);
  #entryCount = 0;
  #lastCollectMs = -Infinity;

  constructor(
    options: {
      packetsPerSecond?: number;
      burst?: number;
      maxEntries?: number;
      /** 8 secret bytes for the table's hash; random unless a test needs determinism. */
      hashKey?: Uint8Array;
    } = {},
  ) {
    const packetsPerSecond = options.packetsPerSecond ?? DEFAULT_HANDSHAKES_PER_SECOND;
    const burst = options.burst ?? DEFAULT_HANDSHAKE_BURST;
    const maxEntries = options.maxEntries ?? DEFAULT_RATE_LIMIT_ENTRIES;
    if (!(Number.isFinite(packetsPerSecond) && packetsPerSecond > 0)) {
      throw new RangeError(`packetsPerSecond must be a positive number, not ${packetsPerSecond}`);
    }
    if (!(Number.isInteger(burst) && burst >= 1)) {
      throw new RangeError(`burst must be a positive integer, not ${burst}`);
    }
    if (!(Number.isInteger(maxEntries) && maxEntries >= 1 && maxEntries <= MAX_ENTRIES_LIMIT)) {
      throw new RangeError(`maxEntries must be an integer in 1..${MAX_ENTRIES_LIMIT}`);
    }
    const hashKey = options.hashKey ?? randomFillSync(new Uint8Array(8));
    if (hashKey.length !== 8) {
      throw new RangeError(`hashKey must be 8 bytes, not ${hashKey.length}`);
    }

    this.#tokensPerMs = packetsPerSecond;
    this.#bucketCapacity = burst * this.#tokensPerPacket;
    this.#maxEntries = maxEntries;
    // Linear probing stays short while at most half the slots are used.
    this.#maxSlots = nextPowerOfTwo(maxEntries * 2);
    this.#hashKey0 = readWordLittleEndian(hashKey, 0);
    this.#hashKey1 = readWordLittleEndian(hashKey, 4);

    this.#allocateSlots(Math.min(INITIAL_SLOTS, this.#maxSlots));
  }

  /** New, empty slot arrays of `slots` (a power of two) each. */
  #allocateSlots(slots: number): void {
    this.#slotMask = slots - 1;
    this.#slotKind = new Uint8Array(slots);
    this.#slotKey0 = new Int32Array(slots);
    this.#slotKey1 = new Int32Array(slots);
    this.#slotHash = new Int32Array(slots);
    this.#slotTokens = new Float64Array(slots);
    this.#slotLastMs = new Float64Array(slots);
  }

  /** Sources currently tracked (idle ones linger until the next collection). */
  get size(): number {
    return this.#entryCount;
  }

  /**
   * Whether a handshake message from `address` (4 or 16 raw bytes of the source IP) may be
   * processed now. `nowMs` is a monotonic clock in milliseconds.
   */
  allow(address: Uint8Array, nowMs: number): boolean {
    let kind: number;
    let key0: number;
    let key1 = 0;
    if (address.length === IPV4_ADDRESS_BYTES) {
      kind = IPV4_KEY_BYTES;
      key0 = readWordLittleEndian(address, 0);
    } else if (address.length === IPV6_ADDRESS_BYTES) {
      if (isIPv4Mapped(address)) {
        // A dual-stack socket reports IPv4 sources as ::ffff:a.b.c.d. By /64 they would all
        // share one bucket, and one IPv4 flooder would starve every other IPv4 peer.
        kind = IPV4_KEY_BYTES;
        key0 = readWordLittleEndian(address, 12);
      } else {
        kind = IPV6_PREFIX_KEY_BYTES;
        key0 = readWordLittleEndian(address, 0);
        key1 = readWordLittleEndian(address, 4);
      }
    } else {
      throw new RangeError(`an IP address is 4 or 16 bytes, not ${address.length}`);
    }

    // Collection walks the whole table, so it runs on the clock and never because the table
    // is full: otherwise a flood of new sources would make every call pay for a full walk.
    if (nowMs - this.#lastCollectMs >= COLLECT_INTERVAL_MS) {
      this.#collectIdle(nowMs);
    }

    const hash = halfSipHash24(this.#hashKey0, this.#hashKey1, key0, key1, kind);
    const found = this.#find(kind, key0, key1, hash);
    if (found >= 0) {
      return this.#spend(found, nowMs);
    }
    if (this.#entryCount >= this.#maxEntries) {
      // Like the kernel: a full table refuses new sources rather than evicting known ones.
      return false;
    }
    let slot = ~found;
    if ((this.#entryCount + 1) * 2 > this.#slotMask + 1) {
      this.#grow();
      slot = ~this.#find(kind, key0, key1, hash);
    }
    this.#slotKind[slot] = kind;
    this.#slotKey0[slot] = key0;
    this.#slotKey1[slot] = key1;
    this.#slotHash[slot] = hash;
    // A new source starts with a full bucket, less this packet.
    this.#slotTokens[slot] = this.#bucketCapacity - this.#tokensPerPacket;
    this.#slotLastMs[slot] = nowMs;
    this.#entryCount++;
    return true;
  }

  #spend(slot: number, nowMs: number): boolean {
    let tokens = this.#slotTokens[slot]!;
    const elapsedMs = nowMs - this.#slotLastMs[slot]!;
    // A clock that steps back earns nothing and does not move the entry's time back either.
    if (elapsedMs > 0) {
      tokens = Math.min(this.#bucketCapacity, tokens + elapsedMs * this.#tokensPerMs);
      this.#slotLastMs[slot] = nowMs;
    }
    if (tokens < this.#tokensPerPacket) {
      this.#slotTokens[slot] = tokens;
      return false;
    }
    this.#slotTokens[slot] = tokens - this.#tokensPerPacket;
    return true;
  }

  /** The slot holding the key, or the one's complement of the empty slot where it belongs. */
  #find(kind: number, key0: number, key1: number, hash: number): number {
    const mask = this.#slotMask;
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const slotKind = this.#slotKind[slot];
      if (slotKind === EMPTY) {
        return ~slot;
      }
      if (slotKind === kind && this.#slotKey0[slot] === key0 && this.#slotKey1[slot] === key1) {
        return slot;
      }
    }
  }

  #collectIdle(nowMs: number): void {
    this.#lastCollectMs = nowMs;
    const slots = this.#slotMask + 1;
    for (let slot = 0; slot < slots; slot++) {
      // Removal can shift a later entry into this slot, so look at the slot again.
      while (this.#slotKind[slot] !== EMPTY && nowMs - this.#slotLastMs[slot]! > IDLE_EXPIRY_MS) {
        this.#removeAt(slot);
      }
    }
  }

  /**
   * Deletion without tombstones: entries after the hole that would have landed in it are
   * moved back, so every entry stays reachable from its home slot without gaps.
   */
  #removeAt(slot: number): void {
    const mask = this.#slotMask;
    let hole = slot;
    this.#slotKind[hole] = EMPTY;
    this.#entryCount--;
    for (let next = (hole + 1) & mask; this.#slotKind[next] !== EMPTY; next = (next + 1) & mask) {
      const home = this.#slotHash[next]! & mask;
      // The entry may fill the hole unless its home lies between the hole and itself.
      if (((next - home) & mask) >= ((next - hole) & mask)) {
        this.#moveSlot(next, hole);
        this.#slotKind[next] = EMPTY;
        hole = next;
      }
    }
  }

  #moveSlot(from: number, to: number): void {
    this.#slotKind[to] = this.#slotKind[from]!;
    this.#slotKey0[to] = this.#slotKey0[from]!;
    this.#slotKey1[to] = this.#slotKey1[from]!;
    this.#slotHash[to] = this.#slotHash[from]!;
    this.#slotTokens[to] = this.#slotTokens[from]!;
    this.#slotLastMs[to] = this.#slotLastMs[from]!;
  }

  /** Doubles the slot arrays; amortized over the entries that filled them, never per call. */
  #grow(): void {
    const oldKind = this.#slotKind;
    const oldKey0 = this.#slotKey0;
    const oldKey1 = this.#slotKey1;
    const oldHash = this.#slotHash;
    const oldTokens = this.#slotTokens;
    const oldLastMs = this.#slotLastMs;
    const slots = Math.min((this.#slotMask + 1) * 2, this.#maxSlots);
    const mask = slots - 1;
    this.#allocateSlots(slots);
    for (let from = 0; from < oldKind.length; from++) {
      if (oldKind[from] === EMPTY) {
        continue;
      }
      let to = oldHash[from]! & mask;
      while (this.#slotKind[to] !== EMPTY) {
        to = (to + 1) & mask;
      }
      this.#slotKind[to] = oldKind[from]!;
      this.#slotKey0[to] = oldKey0[from]!;
      this.#slotKey1[to] = oldKey1[from]!;
      this.#slotHash[to] = oldHash[from]!;
      this.#slotTokens[to] = oldTokens[from]!;
      this.#slotLastMs[to] = oldLastMs[from]!;
    }
  }
}

function isIPv4Mapped(address: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) {
    if (address[i] !== 0) {
      return false;
    }
  }
  return address[10] === 0xff && address[11] === 0xff;
}

function readWordLittleEndian(bytes: Uint8Array, offset: number): number {
  return (
    bytes[offset]! |
    (bytes[offset + 1]! << 8) |
    (bytes[offset + 2]! << 16) |
    (bytes[offset + 3]! << 24)
  );
}

function nextPowerOfTwo(value: number): number {
  let power = 1;
  while (power < value) {
    power *= 2;
  }
  return power;
}

// HalfSipHash-2-4 (Aumasson and Bernstein's 32-bit SipHash variant) with a 32-bit output,
// for messages of one or two little-endian words. A keyed PRF rather than a plain mixer, so
// that someone who can choose source addresses still cannot pile them onto one probe chain.
// The state lives in module scope so hashing allocates nothing; JS runs one call at a time.
const sipState = new Int32Array(4);

/**
 * Hashes the `byteLength` (4 or 8) bytes given as little-endian words `word0`, `word1` under
 * the key words `key0`, `key1`. Exported for its test vectors.
 */
export function halfSipHash24(
  key0: number,
  key1: number,
  word0: number,
  word1: number,
  byteLength: number,
): number {
  const state = sipState;
  state[0] = key0;
  state[1] = key1;
  state[2] = key0 ^ 0x6c796765;
  state[3] = key1 ^ 0x74656462;
  absorb(state, word0);
  if (byteLength === 8) {
    absorb(state, word1);
  }
  // The last block carries the length in its top byte (and no leftover bytes: the input is
  // whole words).
  absorb(state, byteLength << 24);
  state[2] = state[2]! ^ 0xff;
  sipRounds(state, 4);
  return (state[1]! ^ state[3]!) >>> 0;
}

function absorb(state: Int32Array, word: number): void {
  state[3] = state[3]! ^ word;
  sipRounds(state, 2);
  state[0] = state[0]! ^ word;
}

function sipRounds(state: Int32Array, rounds: number): void {
  let v0 = state[0]!;
  let v1 = state[1]!;
  let v2 = state[2]!;
  let v3 = state[3]!;
  for (let round = 0; round < rounds; round++) {
    v0 = (v0 + v1) | 0;
    v1 = rotateLeft(v1, 5) ^ v0;
    v0 = rotateLeft(v0, 16);
    v2 = (v2 + v3) | 0;
    v3 = rotateLeft(v3, 8) ^ v2;
    v0 = (v0 + v3) | 0;
    v3 = rotateLeft(v3, 7) ^ v0;
    v2 = (v2 + v1) | 0;
    v1 = rotateLeft(v1, 13) ^ v2;
    v2 = rotateLeft(v2, 16);
  }
  state[0] = v0;
  state[1] = v1;
  state[2] = v2;
  state[3] = v3;
}

function rotateLeft(value: number, bits: number): number {
  return (value << bits) | (value >>> (32 - bits));
}
