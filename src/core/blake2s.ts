// BLAKE2s (RFC 7693) for the protocol's keyed MAC: 16-byte mac1/mac2 and cookies. Node's
// crypto has BLAKE2s but no keyed mode, and this runs on every handshake message (and on every
// message of a handshake flood), so it is written for speed: the working state lives in
// locals, each round's G steps are written out, and nothing is allocated but the result.
// Checked against Node's BLAKE2s (unkeyed) and @noble/hashes (keyed) in test/crypto.test.ts.

const IV = Int32Array.of(
  0x6a09e667,
  0xbb67ae85 | 0,
  0x3c6ef372,
  0xa54ff53a | 0,
  0x510e527f,
  0x9b05688c | 0,
  0x1f83d9ab,
  0x5be0cd19,
);

// The message schedule: which word each of the ten rounds feeds to each G, flattened.
// prettier-ignore
const SIGMA = Uint8Array.of(
  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
  14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3,
  11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4,
  7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8,
  9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13,
  2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9,
  12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11,
  13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10,
  6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5,
  10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0,
);

const BLOCK = 64;
const h = new Int32Array(8);
const block = new Uint8Array(BLOCK);
const words = new DataView(block.buffer);
const m = new Int32Array(16);

/**
 * Compresses `block` into h. `counter` is the number of bytes hashed so far (below 2^32: the
 * messages here are a few hundred bytes); `last` is the finalisation flag. The working state
 * lives in sixteen locals and each round's eight G steps are written out, which is what makes
 * this fast in JavaScript.
 */
function compress(counter: number, last: boolean): void {
  for (let i = 0; i < 16; i++) m[i] = words.getInt32(4 * i, true);
  let v0 = h[0]!;
  let v1 = h[1]!;
  let v2 = h[2]!;
  let v3 = h[3]!;
  let v4 = h[4]!;
  let v5 = h[5]!;
  let v6 = h[6]!;
  let v7 = h[7]!;
  let v8 = IV[0]!;
  let v9 = IV[1]!;
  let v10 = IV[2]!;
  let v11 = IV[3]!;
  let v12 = IV[4]!;
  let v13 = IV[5]!;
  let v14 = IV[6]!;
  let v15 = IV[7]!;
  v12 ^= counter;
  if (last) v14 = ~v14;
  for (let s = 0; s < 160; s += 16) {
    // G on the columns
    v0 = (v0 + v4 + m[SIGMA[s + 0]!]!) | 0;
    v12 ^= v0;
    v12 = (v12 >>> 16) | (v12 << 16);
    v8 = (v8 + v12) | 0;
    v4 ^= v8;
    v4 = (v4 >>> 12) | (v4 << 20);
    v0 = (v0 + v4 + m[SIGMA[s + 1]!]!) | 0;
    v12 ^= v0;
    v12 = (v12 >>> 8) | (v12 << 24);
    v8 = (v8 + v12) | 0;
    v4 ^= v8;
    v4 = (v4 >>> 7) | (v4 << 25);
    v1 = (v1 + v5 + m[SIGMA[s + 2]!]!) | 0;
    v13 ^= v1;
    v13 = (v13 >>> 16) | (v13 << 16);
    v9 = (v9 + v13) | 0;
    v5 ^= v9;
    v5 = (v5 >>> 12) | (v5 << 20);
    v1 = (v1 + v5 + m[SIGMA[s + 3]!]!) | 0;
    v13 ^= v1;
    v13 = (v13 >>> 8) | (v13 << 24);
    v9 = (v9 + v13) | 0;
    v5 ^= v9;
    v5 = (v5 >>> 7) | (v5 << 25);
    v2 = (v2 + v6 + m[SIGMA[s + 4]!]!) | 0;
    v14 ^= v2;
    v14 = (v14 >>> 16) | (v14 << 16);
    v10 = (v10 + v14) | 0;
    v6 ^= v10;
    v6 = (v6 >>> 12) | (v6 << 20);
    v2 = (v2 + v6 + m[SIGMA[s + 5]!]!) | 0;
    v14 ^= v2;
    v14 = (v14 >>> 8) | (v14 << 24);
    v10 = (v10 + v14) | 0;
    v6 ^= v10;
    v6 = (v6 >>> 7) | (v6 << 25);
    v3 = (v3 + v7 + m[SIGMA[s + 6]!]!) | 0;
    v15 ^= v3;
    v15 = (v15 >>> 16) | (v15 << 16);
    v11 = (v11 + v15) | 0;
    v7 ^= v11;
    v7 = (v7 >>> 12) | (v7 << 20);
    v3 = (v3 + v7 + m[SIGMA[s + 7]!]!) | 0;
    v15 ^= v3;
    v15 = (v15 >>> 8) | (v15 << 24);
    v11 = (v11 + v15) | 0;
    v7 ^= v11;
    v7 = (v7 >>> 7) | (v7 << 25);
    // G on the diagonals
    v0 = (v0 + v5 + m[SIGMA[s + 8]!]!) | 0;
    v15 ^= v0;
    v15 = (v15 >>> 16) | (v15 << 16);
    v10 = (v10 + v15) | 0;
    v5 ^= v10;
    v5 = (v5 >>> 12) | (v5 << 20);
    v0 = (v0 + v5 + m[SIGMA[s + 9]!]!) | 0;
    v15 ^= v0;
    v15 = (v15 >>> 8) | (v15 << 24);
    v10 = (v10 + v15) | 0;
    v5 ^= v10;
    v5 = (v5 >>> 7) | (v5 << 25);
    v1 = (v1 + v6 + m[SIGMA[s + 10]!]!) | 0;
    v12 ^= v1;
    v12 = (v12 >>> 16) | (v12 << 16);
    v11 = (v11 + v12) | 0;
    v6 ^= v11;
    v6 = (v6 >>> 12) | (v6 << 20);
    v1 = (v1 + v6 + m[SIGMA[s + 11]!]!) | 0;
    v12 ^= v1;
    v12 = (v12 >>> 8) | (v12 << 24);
    v11 = (v11 + v12) | 0;
    v6 ^= v11;
    v6 = (v6 >>> 7) | (v6 << 25);
    v2 = (v2 + v7 + m[SIGMA[s + 12]!]!) | 0;
    v13 ^= v2;
    v13 = (v13 >>> 16) | (v13 << 16);
    v8 = (v8 + v13) | 0;
    v7 ^= v8;
    v7 = (v7 >>> 12) | (v7 << 20);
    v2 = (v2 + v7 + m[SIGMA[s + 13]!]!) | 0;
    v13 ^= v2;
    v13 = (v13 >>> 8) | (v13 << 24);
    v8 = (v8 + v13) | 0;
    v7 ^= v8;
    v7 = (v7 >>> 7) | (v7 << 25);
    v3 = (v3 + v4 + m[SIGMA[s + 14]!]!) | 0;
    v14 ^= v3;
    v14 = (v14 >>> 16) | (v14 << 16);
    v9 = (v9 + v14) | 0;
    v4 ^= v9;
    v4 = (v4 >>> 12) | (v4 << 20);
    v3 = (v3 + v4 + m[SIGMA[s + 15]!]!) | 0;
    v14 ^= v3;
    v14 = (v14 >>> 8) | (v14 << 24);
    v9 = (v9 + v14) | 0;
    v4 ^= v9;
    v4 = (v4 >>> 7) | (v4 << 25);
  }
  h[0] = h[0]! ^ v0 ^ v8;
  h[1] = h[1]! ^ v1 ^ v9;
  h[2] = h[2]! ^ v2 ^ v10;
  h[3] = h[3]! ^ v3 ^ v11;
  h[4] = h[4]! ^ v4 ^ v12;
  h[5] = h[5]! ^ v5 ^ v13;
  h[6] = h[6]! ^ v6 ^ v14;
  h[7] = h[7]! ^ v7 ^ v15;
}

// One hash at a time: begin, update, finish. JavaScript runs one call at a time and none of
// these calls out, so the module-level state cannot be interleaved.
let pending = 0; // bytes waiting in `block`; a full block waits until more data or the end
let counter = 0;
let outputLength = 32;

function begin(outLength: number, key: Uint8Array | null): void {
  const keyLength = key?.length ?? 0;
  if (keyLength > 32) throw new RangeError("a BLAKE2s key is at most 32 bytes");
  if (!Number.isInteger(outLength) || outLength < 1 || outLength > 32) {
    throw new RangeError("a BLAKE2s digest is 1 to 32 bytes");
  }
  h.set(IV);
  h[0] = h[0]! ^ 0x01010000 ^ (keyLength << 8) ^ outLength;
  counter = 0;
  outputLength = outLength;
  pending = 0;
  if (key && keyLength > 0) {
    // The key, zero-padded to a whole block, is hashed first.
    block.fill(0);
    block.set(key);
    pending = BLOCK;
  }
}

function update(data: Uint8Array): void {
  let offset = 0;
  while (offset < data.length) {
    if (pending === BLOCK) {
      // Only now is it known that this block is not the last one.
      counter += BLOCK;
      compress(counter, false);
      pending = 0;
    }
    const take = Math.min(BLOCK - pending, data.length - offset);
    block.set(data.subarray(offset, offset + take), pending);
    pending += take;
    offset += take;
  }
}

function finish(): Buffer {
  counter += pending;
  block.fill(0, pending);
  compress(counter, true);
  const out = Buffer.allocUnsafe(outputLength);
  for (let i = 0; i < outputLength; i++) out[i] = (h[i >> 2]! >>> (8 * (i & 3))) & 0xff;
  return out;
}

/**
 * BLAKE2s of `message` with an optional key (up to 32 bytes) and a digest of `outLength`
 * bytes (1 to 32). The digest length is a parameter of the hash, not a truncation.
 */
export function blake2s(message: Uint8Array, key: Uint8Array | null, outLength: number): Buffer {
  begin(outLength, key);
  update(message);
  return finish();
}

/** BLAKE2s-256 of the concatenation of `parts`: the protocol's HASH. */
export function blake2sHash(parts: readonly Uint8Array[]): Buffer {
  begin(32, null);
  for (const part of parts) update(part);
  return finish();
}

const HMAC_BLOCK = 64;
const innerPad = new Uint8Array(HMAC_BLOCK);
const outerPad = new Uint8Array(HMAC_BLOCK);

/** HMAC (RFC 2104) over BLAKE2s-256, for keys up to one block: the protocol's HMAC. */
export function hmacBlake2s(key: Uint8Array, parts: readonly Uint8Array[]): Buffer {
  if (key.length > HMAC_BLOCK) throw new RangeError("HMAC keys here are at most 64 bytes");
  innerPad.fill(0x36);
  outerPad.fill(0x5c);
  for (let i = 0; i < key.length; i++) {
    innerPad[i] = innerPad[i]! ^ key[i]!;
    outerPad[i] = outerPad[i]! ^ key[i]!;
  }
  begin(32, null);
  update(innerPad);
  for (const part of parts) update(part);
  const inner = finish();
  begin(32, null);
  update(outerPad);
  update(inner);
  return finish();
}
