// The primitives of Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, each from the fastest well-kept
// implementation measured on our machines (bench/crypto.ts prints the comparison):
// - X25519: OpenSSL, through the addon when loaded (raw keys, no KeyObjects), else Node's crypto;
// - ChaCha20-Poly1305: Node's crypto (OpenSSL);
// - BLAKE2s in all three roles (HASH, HMAC for the KDF, keyed MAC for mac1/mac2/cookies): our
//   own blake2s.ts. Node has no keyed BLAKE2s at all, and for the protocol's short inputs its
//   per-call object costs more than the hashing: ours is 2.4x faster for HMAC, 1.4x for HASH,
//   6x faster than @noble/hashes for the MAC;
// - XChaCha20-Poly1305 (cookie replies only): @noble/ciphers, since OpenSSL has no XChaCha.
import {
  createCipheriv,
  createDecipheriv,
  diffieHellman,
  randomFillSync,
  timingSafeEqual,
  type KeyObject,
} from "node:crypto";
import { blake2s, blake2sHash, hmacBlake2s } from "./blake2s.js";
import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { KEY_LENGTH, MAC_LENGTH, TAG_LENGTH } from "./messages.js";
import { privateKeyObject, publicKeyObject, rawPublicKey } from "./x25519-keys.js";

export { publicKeyObject } from "./x25519-keys.js";

export const HASH_LENGTH = 32;

/** Randomness is injected so that handshakes can be replayed exactly in tests. */
export interface RandomSource {
  fill(target: Uint8Array): void;
}

export const systemRandom: RandomSource = {
  fill(target) {
    randomFillSync(target);
  },
};

export function hash(...parts: Uint8Array[]): Buffer {
  return blake2sHash(parts);
}

export function hmac(key: Uint8Array, ...parts: Uint8Array[]): Buffer {
  return hmacBlake2s(key, parts);
}

/** Keyed BLAKE2s with a 16-byte output: the protocol's MAC. */
export function mac(key: Uint8Array, message: Uint8Array): Uint8Array {
  return blake2s(message, key, MAC_LENGTH);
}

const ONE = Uint8Array.of(1);
const TWO = Uint8Array.of(2);
const THREE = Uint8Array.of(3);

/** HKDF over HMAC-BLAKE2s returning one, two or three 32-byte outputs (the paper's KDF_n). */
export function kdf1(chainingKey: Uint8Array, input: Uint8Array): Buffer {
  const prk = hmac(chainingKey, input);
  return hmac(prk, ONE);
}

export function kdf2(chainingKey: Uint8Array, input: Uint8Array): [Buffer, Buffer] {
  const prk = hmac(chainingKey, input);
  const t1 = hmac(prk, ONE);
  const t2 = hmac(prk, t1, TWO);
  return [t1, t2];
}

export function kdf3(chainingKey: Uint8Array, input: Uint8Array): [Buffer, Buffer, Buffer] {
  const prk = hmac(chainingKey, input);
  const t1 = hmac(prk, ONE);
  const t2 = hmac(prk, t1, TWO);
  const t3 = hmac(prk, t2, THREE);
  return [t1, t2, t3];
}

/** The 96-bit ChaCha20-Poly1305 nonce: four zero bytes, then the 64-bit counter little-endian. */
export function writeNonce(nonce: Buffer, counter: number): void {
  nonce.fill(0, 0, 4);
  nonce.writeUInt32LE(counter >>> 0, 4);
  nonce.writeUInt32LE(Math.floor(counter / 0x100000000), 8);
}

const handshakeNonce = Buffer.alloc(12);

/** AEAD with counter 0, as used inside handshake messages. Returns ciphertext ‖ tag. */
export function aeadSeal(key: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Buffer {
  const cipher = createCipheriv("chacha20-poly1305", key, handshakeNonce, {
    authTagLength: TAG_LENGTH,
  });
  cipher.setAAD(ad, { plaintextLength: plaintext.length });
  const head = cipher.update(plaintext);
  cipher.final();
  return Buffer.concat([head, cipher.getAuthTag()]);
}

/** Opens ciphertext ‖ tag sealed with counter 0; null when authentication fails. */
export function aeadOpen(key: Uint8Array, sealed: Uint8Array, ad: Uint8Array): Buffer | null {
  if (sealed.length < TAG_LENGTH) return null;
  const body = sealed.subarray(0, sealed.length - TAG_LENGTH);
  const decipher = createDecipheriv("chacha20-poly1305", key, handshakeNonce, {
    authTagLength: TAG_LENGTH,
  });
  decipher.setAAD(ad, { plaintextLength: body.length });
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_LENGTH));
  const plaintext = decipher.update(body);
  try {
    decipher.final();
  } catch {
    return null;
  }
  return plaintext;
}

export function xaeadSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  ad: Uint8Array,
): Uint8Array {
  return xchacha20poly1305(key, nonce, ad).encrypt(plaintext);
}

export function xaeadOpen(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  ad: Uint8Array,
): Uint8Array | null {
  try {
    return xchacha20poly1305(key, nonce, ad).decrypt(sealed);
  } catch {
    return null;
  }
}

// X25519 on raw 32-byte keys, through a seam: Node's crypto by default, which works anywhere,
// and the addon's (raw keys straight into OpenSSL) installed by the host when it loads. Node
// only takes keys as KeyObjects, and importing one costs about half a scalar multiplication, so
// the Node implementation keeps the KeyObjects it made (see nodeX25519).

/** X25519 (RFC 7748) on raw keys. */
export interface X25519 {
  /** Writes X25519(privateKey, 9), the public key of a clamped private key, to `out`. */
  publicKey(privateKey: Uint8Array, out: Uint8Array): void;
  /**
   * Writes X25519(privateKey, peerPublicKey) to `out`. Returns false, leaving `out` zeroed, when
   * the result is all zeros (a low-order peer key) or the key is refused.
   */
  sharedSecret(privateKey: PrivateKey, peerPublicKey: Uint8Array, out: Uint8Array): boolean;
}

/**
 * A KeyObject cache keyed by the key's buffer, checked against a copy of its bytes so a buffer
 * reused for another key is never matched stale. A handshake passes the same buffers again
 * (the peer's static key every time, the remote ephemeral twice), so each is imported once.
 */
class KeyObjectCache {
  readonly #entries = new WeakMap<Uint8Array, { bytes: Buffer; keyObject: KeyObject }>();

  get(raw: Uint8Array, make: (raw: Uint8Array) => KeyObject): KeyObject {
    const entry = this.#entries.get(raw);
    if (entry && entry.bytes.equals(raw)) return entry.keyObject;
    const keyObject = make(raw);
    this.#entries.set(raw, { bytes: Buffer.from(raw), keyObject });
    return keyObject;
  }
}

const privateKeyObjects = new KeyObjectCache();
const publicKeyObjects = new KeyObjectCache();

export const nodeX25519: X25519 = {
  publicKey(privateKey, out) {
    out.set(rawPublicKey(privateKeyObjects.get(privateKey, privateKeyObject)));
  },
  sharedSecret(privateKey, peerPublicKey, out) {
    try {
      const shared = diffieHellman({
        privateKey: privateKeyObjects.get(privateKey.raw, privateKeyObject),
        publicKey: publicKeyObjects.get(peerPublicKey, publicKeyObject),
      });
      out.set(shared);
    } catch {
      // OpenSSL refuses to derive an all-zero secret.
      out.fill(0);
      return false;
    }
    return !isZero(out);
  },
};

let x25519: X25519 = nodeX25519;

/** Installs the X25519 implementation used from now on (the host installs the addon's). */
export function useX25519(implementation: X25519): void {
  x25519 = implementation;
}

/** A private key with its public half computed once. */
export class PrivateKey {
  readonly raw: Buffer;
  readonly publicKey: Buffer;

  constructor(raw: Uint8Array) {
    if (raw.length !== KEY_LENGTH) throw new RangeError("a private key is 32 bytes");
    this.raw = Buffer.from(raw);
    clamp(this.raw);
    this.publicKey = Buffer.alloc(KEY_LENGTH);
    x25519.publicKey(this.raw, this.publicKey);
  }

  /** Node's KeyObject for this key, for code that calls node:crypto directly. */
  get keyObject(): KeyObject {
    return privateKeyObjects.get(this.raw, privateKeyObject);
  }

  static generate(random: RandomSource = systemRandom): PrivateKey {
    const raw = Buffer.alloc(KEY_LENGTH);
    random.fill(raw);
    return new PrivateKey(raw);
  }
}

/** Clamps a Curve25519 scalar the way `wg genkey` does, so stored keys look the same. */
export function clamp(scalar: Uint8Array): void {
  scalar[0]! &= 248;
  scalar[31]! &= 127;
  scalar[31]! |= 64;
}

/**
 * X25519(private, public). Returns null for a low-order public key (an all-zero shared secret),
 * which the protocol must reject. Key buffers passed here should not be reused for other keys:
 * the Node implementation recognises them to skip a second import.
 */
export function dh(privateKey: PrivateKey, publicKey: Uint8Array): Buffer | null {
  if (publicKey.length !== KEY_LENGTH) return null;
  const shared = Buffer.alloc(KEY_LENGTH);
  return x25519.sharedSecret(privateKey, publicKey, shared) && !isZero(shared) ? shared : null;
}

export function isZero(bytes: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < bytes.length; i++) acc |= bytes[i]!;
  return acc === 0;
}

export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export function wipe(bytes: Uint8Array | null | undefined): void {
  bytes?.fill(0);
}

/**
 * Transport-data encryption. This per-packet implementation uses Node's crypto; the native
 * addon provides a batched one with the same contract, swapped in by the daemon.
 */
export interface TransportCipher {
  /** Seals `plaintext` with the counter nonce, writing ciphertext ‖ tag at `out`. */
  seal(key: Uint8Array, counter: number, plaintext: Uint8Array, out: Uint8Array): void;
  /** Opens ciphertext ‖ tag; returns the plaintext, or null when authentication fails. */
  open(key: Uint8Array, counter: number, sealed: Uint8Array): Buffer | null;
}

const transportNonce = Buffer.alloc(12);

export const nodeTransportCipher: TransportCipher = {
  seal(key, counter, plaintext, out) {
    writeNonce(transportNonce, counter);
    const cipher = createCipheriv("chacha20-poly1305", key, transportNonce, {
      authTagLength: TAG_LENGTH,
    });
    const body = cipher.update(plaintext);
    cipher.final();
    out.set(body, 0);
    out.set(cipher.getAuthTag(), plaintext.length);
  },
  open(key, counter, sealed) {
    if (sealed.length < TAG_LENGTH) return null;
    writeNonce(transportNonce, counter);
    const decipher = createDecipheriv("chacha20-poly1305", key, transportNonce, {
      authTagLength: TAG_LENGTH,
    });
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG_LENGTH));
    const plaintext = decipher.update(sealed.subarray(0, sealed.length - TAG_LENGTH));
    try {
      decipher.final();
    } catch {
      return null;
    }
    return plaintext;
  },
};
