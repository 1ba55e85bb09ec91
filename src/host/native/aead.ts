// ChaCha20-Poly1305 over a batch of packets, in place (OpenSSL EVP in the addon).
import type { TransportCipher } from "../../core/crypto.js";
import { loadAddon, AEAD_KEY_SIZE, AEAD_TAG_SIZE, type AeadBatchArguments } from "./addon.js";
import { type AeadSlots } from "./batch.js";

/**
 * Keys for {@link sealBatch}/{@link openBatch}: `slots` × 32 bytes in one Buffer, addressed
 * by index from the per-packet `keySlots` array (a peer's keypair gets a slot).
 */
export class AeadKeyTable {
  readonly keys: Buffer;
  readonly slots: number;

  constructor(slots: number) {
    if (!Number.isInteger(slots) || slots < 1) {
      throw new RangeError(`slots must be a positive integer, got ${slots}`);
    }
    this.slots = slots;
    this.keys = Buffer.alloc(slots * AEAD_KEY_SIZE);
  }

  set(slot: number, key: Uint8Array): void {
    if (key.length !== AEAD_KEY_SIZE) {
      throw new RangeError(`a ChaCha20-Poly1305 key is ${AEAD_KEY_SIZE} bytes, got ${key.length}`);
    }
    this.keys.set(key, this.#offset(slot));
  }

  /** Overwrites the slot with zeros, so an expired key does not linger in memory. */
  clear(slot: number): void {
    const at = this.#offset(slot);
    this.keys.fill(0, at, at + AEAD_KEY_SIZE);
  }

  #offset(slot: number): number {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slots) {
      throw new RangeError(`key slot ${slot} is outside a table of ${this.slots}`);
    }
    return slot * AEAD_KEY_SIZE;
  }
}

/** What the addon's seal and open take for packets [first, first + count) of `slots`. */
function batchArguments(
  slots: AeadSlots,
  keys: AeadKeyTable | Uint8Array,
  count: number,
  first: number,
): AeadBatchArguments {
  const keyBytes = keys instanceof AeadKeyTable ? keys.keys : keys;
  const { arena, offsets, lengths, keySlots, counters } = slots;
  return [
    arena,
    offsets,
    lengths,
    keySlots,
    counters,
    keyBytes,
    slots.status ?? null,
    first,
    count,
  ];
}

/**
 * Encrypts packets [first, first + count) in place as WireGuard transport payloads: nonce =
 * 4 zero bytes ‖ counter (u64 little-endian), no AAD. The 16-byte tag is written right after
 * each plaintext (the caller leaves that room: a RangeError otherwise) and lengths[i] grows
 * by 16. All arguments are checked before any packet is touched.
 */
export function sealBatch(
  slots: AeadSlots,
  keys: AeadKeyTable | Uint8Array,
  count: number,
  first = 0,
): void {
  loadAddon().aeadSealBatch(...batchArguments(slots, keys, count, first));
}

/**
 * Decrypts packets [first, first + count) (ciphertext ‖ tag) in place; returns how many
 * failed authentication. An authentic packet gets status[i] = 0 and lengths[i] shrinks by
 * 16; a forged or corrupted one gets status[i] = {@link STATUS_AUTH_FAILED}, keeps its
 * length and is zeroed. Other packets of the batch are unaffected.
 */
export function openBatch(
  slots: AeadSlots,
  keys: AeadKeyTable | Uint8Array,
  count: number,
  first = 0,
): number {
  return loadAddon().aeadOpenBatch(...batchArguments(slots, keys, count, first));
}

/** Packets per second of Node's OpenSSL measured in C, see {@link measureOpenSslReference}. */
export interface OpenSslReferenceRates {
  /** EVP_EncryptUpdate over packet-sized chunks, no per-message work (`openssl speed -evp`). */
  streaming: number;
  /** Nonce, encrypt, final and tag for each packet, as the batch does, but with no JS at all. */
  perPacket: number;
}

/**
 * For benchmarks: what OpenSSL itself achieves for `packetSize`-byte packets on this core,
 * so a batched figure can be read as a share of it. Blocks for `milliseconds`.
 */
export function measureOpenSslReference(
  packetSize: number,
  milliseconds = 1000,
): OpenSslReferenceRates {
  return loadAddon().aeadCalibrate(packetSize, milliseconds);
}

/** The 12-byte WireGuard nonce for `counter`. */
export function wireguardNonce(counter: bigint): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64LE(BigInt.asUintN(64, counter), 4);
  return nonce;
}

/**
 * General RFC 8439 ChaCha20-Poly1305 (any 12-byte nonce, optional AAD) on the same native
 * code as the batches; returns ciphertext ‖ tag. For single messages and for checking the
 * native path against published test vectors.
 */
export function chacha20Poly1305Seal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad?: Uint8Array,
): Buffer {
  return loadAddon().aeadSeal(key, nonce, aad ?? null, plaintext);
}

/** Inverse of {@link chacha20Poly1305Seal}; null when authentication fails. */
export function chacha20Poly1305Open(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad?: Uint8Array,
): Buffer | null {
  return loadAddon().aeadOpen(key, nonce, aad ?? null, sealed);
}

// One-packet descriptors reused by the adapter below, so a call allocates nothing but the
// plaintext it returns from open().
const single = {
  offsets: new Uint32Array(1),
  lengths: new Uint32Array(1),
  keySlots: new Uint32Array(1),
  counters: new Uint32Array(2),
  status: new Int32Array(1),
};

function setSingleCounter(counter: number): void {
  if (!Number.isSafeInteger(counter) || counter < 0) {
    throw new RangeError(`counter must be a non-negative safe integer, got ${counter}`);
  }
  single.counters[0] = counter % 0x1_0000_0000;
  single.counters[1] = Math.floor(counter / 0x1_0000_0000);
}

/**
 * The protocol core's {@link TransportCipher} contract on the native code, one packet per
 * call: a drop-in for code that is not batched yet (the batched calls are faster still).
 */
export const nativeTransportCipher: TransportCipher = {
  seal(key, counter, plaintext, out) {
    if (out.length < plaintext.length + AEAD_TAG_SIZE) {
      throw new RangeError(
        `out needs ${plaintext.length + AEAD_TAG_SIZE} bytes for ciphertext and tag, has ${out.length}`,
      );
    }
    setSingleCounter(counter);
    out.set(plaintext, 0);
    single.offsets[0] = 0;
    single.lengths[0] = plaintext.length;
    sealBatch({ ...single, arena: out }, key, 1);
  },
  open(key, counter, sealed) {
    if (sealed.length < AEAD_TAG_SIZE) {
      return null;
    }
    setSingleCounter(counter);
    const copy = Buffer.from(sealed);
    single.offsets[0] = 0;
    single.lengths[0] = copy.length;
    const failed = openBatch({ ...single, arena: copy }, key, 1);
    return failed === 0 ? copy.subarray(0, single.lengths[0]) : null;
  },
};
