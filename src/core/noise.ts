// Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s as WireGuard uses it: the four handshake steps as
// symmetric create/consume functions, session keys, and the previous/current/next keypairs.
// Nothing here does I/O or reads a clock: times come in as arguments.
import {
  aeadOpen,
  aeadSeal,
  dh,
  hash,
  kdf1,
  kdf2,
  kdf3,
  wipe,
  PrivateKey,
  type RandomSource,
} from "./crypto.js";
import {
  INITIATION_EPHEMERAL,
  INITIATION_SENDER,
  INITIATION_STATIC,
  INITIATION_TIMESTAMP,
  INITIATION_MAC1,
  INITIATION_LENGTH,
  KEY_LENGTH,
  MessageType,
  RESPONSE_EMPTY,
  RESPONSE_EPHEMERAL,
  RESPONSE_RECEIVER,
  RESPONSE_SENDER,
  RESPONSE_LENGTH,
  TAG_LENGTH,
  TIMESTAMP_LENGTH,
  readUint32,
  writeHeader,
  writeUint32,
} from "./messages.js";
import { ReplayWindow } from "./replay.js";

const CONSTRUCTION = Buffer.from("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s", "ascii");
const IDENTIFIER = Buffer.from("WireGuard v1 zx2c4 Jason@zx2c4.com", "ascii");

/** C and H before any message: constant for every handshake. */
export const INITIAL_CHAINING_KEY = hash(CONSTRUCTION);
export const INITIAL_HASH = hash(INITIAL_CHAINING_KEY, IDENTIFIER);

const EMPTY = new Uint8Array(0);

// Timestamps are rounded down to this many nanoseconds so that an initiation does not leak the
// sender's fine-grained clock; it still allows the protocol's 50 initiations per second.
const TIMESTAMP_GRANULARITY_NS = 1 << 24;
const TAI64_EPOCH_OFFSET = 0x400000000000000an; // 2^62 + 10: TAI64's label for the Unix epoch

/** TAI64N (12 bytes, big-endian seconds then nanoseconds) for a wall-clock time in ms. */
export function tai64n(wallClockMs: number): Buffer {
  const out = Buffer.alloc(TIMESTAMP_LENGTH);
  const seconds = Math.floor(wallClockMs / 1000);
  const nanoseconds = Math.floor((wallClockMs - seconds * 1000) * 1e6);
  out.writeBigUInt64BE(TAI64_EPOCH_OFFSET + BigInt(seconds), 0);
  out.writeUInt32BE(nanoseconds - (nanoseconds % TIMESTAMP_GRANULARITY_NS), 8);
  return out;
}

/** This device's static identity, with what every handshake derives from it. */
export class StaticIdentity {
  readonly privateKey: PrivateKey;
  /** HASH(INITIAL_HASH ‖ our public key): the responder's first mixing step, precomputed. */
  readonly responderInitialHash: Buffer;

  constructor(privateKey: PrivateKey) {
    this.privateKey = privateKey;
    this.responderInitialHash = hash(INITIAL_HASH, privateKey.publicKey);
  }

  get publicKey(): Buffer {
    return this.privateKey.publicKey;
  }
}

export enum HandshakeStage {
  Zeroed,
  CreatedInitiation,
  ConsumedInitiation,
  CreatedResponse,
  ConsumedResponse,
}

/** Per-peer handshake state; the fields that must survive a session live here too. */
export class Handshake {
  stage = HandshakeStage.Zeroed;
  // The zeroed starting values share one allocation (a hub makes thousands of these); each is
  // replaced by a buffer of its own as a handshake goes, wiped in place by clear(), which
  // then returns to the starting values: the handshake's buffers are small slices of Node's
  // shared 8 KiB pool, and one kept by each of thousands of idle peers would keep most of
  // the pool's blocks alive.
  chainingKey: Buffer;
  hash: Buffer;
  localEphemeral: PrivateKey | null = null;
  remoteEphemeral: Buffer;
  localIndex = 0;
  remoteIndex = 0;

  readonly remoteStatic: Buffer;
  presharedKey: Buffer;
  // DH(our static, their static) is made on first use, not when the peer is added: a hub
  // starting with 5,000 peers would otherwise spend seconds before the first packet, mostly
  // for peers not yet talking.
  #identity: StaticIdentity | null = null;
  /** undefined: not computed yet for the current identity. */
  #staticStatic: Buffer | null | undefined = undefined;
  /** The newest initiation timestamp accepted from this peer (replay protection). */
  readonly latestTimestamp: Buffer;
  readonly #zeroed: { chainingKey: Buffer; hash: Buffer; remoteEphemeral: Buffer };
  lastInitiationConsumedAt = -Infinity;

  constructor(remoteStatic: Uint8Array) {
    if (remoteStatic.length !== KEY_LENGTH) throw new RangeError("a public key is 32 bytes");
    const initial = Buffer.alloc(5 * KEY_LENGTH + TIMESTAMP_LENGTH);
    const part = (index: number, length = KEY_LENGTH) =>
      initial.subarray(index * KEY_LENGTH, index * KEY_LENGTH + length);
    this.remoteStatic = part(0);
    this.remoteStatic.set(remoteStatic);
    this.chainingKey = part(1);
    this.hash = part(2);
    this.remoteEphemeral = part(3);
    this.presharedKey = part(4);
    this.latestTimestamp = part(5, TIMESTAMP_LENGTH);
    this.#zeroed = {
      chainingKey: this.chainingKey,
      hash: this.hash,
      remoteEphemeral: this.remoteEphemeral,
    };
  }

  /** DH(our static, their static), fixed until either key changes; null if it is all zeros. */
  get precomputedStaticStatic(): Buffer | null {
    if (this.#staticStatic === undefined) {
      this.#staticStatic = this.#identity ? dh(this.#identity.privateKey, this.remoteStatic) : null;
    }
    return this.#staticStatic;
  }

  /** Forgets what depends on our static key; called when the device key changes. */
  setLocalIdentity(identity: StaticIdentity | null): void {
    wipe(this.#staticStatic ?? null);
    this.#identity = identity;
    this.#staticStatic = undefined;
  }

  clear(): void {
    this.stage = HandshakeStage.Zeroed;
    wipe(this.chainingKey);
    wipe(this.hash);
    wipe(this.remoteEphemeral);
    ({
      chainingKey: this.chainingKey,
      hash: this.hash,
      remoteEphemeral: this.remoteEphemeral,
    } = this.#zeroed);
    wipe(this.localEphemeral?.raw);
    this.localEphemeral = null;
    this.localIndex = 0;
    this.remoteIndex = 0;
  }
}

/**
 * Writes a handshake initiation (without macs) for the peer's handshake state, which moves to
 * CreatedInitiation. The caller assigns the local index beforehand. Returns null if the
 * peer's static key yields an all-zero shared secret (no handshake is possible).
 */
export function createInitiation(
  identity: StaticIdentity,
  handshake: Handshake,
  wallClockMs: number,
  random: RandomSource,
): Buffer | null {
  const staticStatic = handshake.precomputedStaticStatic;
  if (!staticStatic) return null;
  const message = Buffer.alloc(INITIATION_LENGTH);
  writeHeader(message, MessageType.HandshakeInitiation);
  writeUint32(message, INITIATION_SENDER, handshake.localIndex);

  let h = hash(INITIAL_HASH, handshake.remoteStatic);
  let ck: Buffer = INITIAL_CHAINING_KEY;

  /* e */
  const ephemeral = PrivateKey.generate(random);
  ephemeral.publicKey.copy(message, INITIATION_EPHEMERAL);
  ck = kdf1(ck, ephemeral.publicKey);
  h = hash(h, ephemeral.publicKey);

  /* es */
  const es = dh(ephemeral, handshake.remoteStatic);
  if (!es) return null;
  let key: Buffer;
  [ck, key] = kdf2(ck, es);

  /* s */
  const encryptedStatic = aeadSeal(key, identity.publicKey, h);
  encryptedStatic.copy(message, INITIATION_STATIC);
  h = hash(h, encryptedStatic);

  /* ss */
  [ck, key] = kdf2(ck, staticStatic);

  /* {t} */
  const encryptedTimestamp = aeadSeal(key, tai64n(wallClockMs), h);
  encryptedTimestamp.copy(message, INITIATION_TIMESTAMP);
  h = hash(h, encryptedTimestamp);

  handshake.clear();
  handshake.localIndex = readUint32(message, INITIATION_SENDER);
  handshake.localEphemeral = ephemeral;
  handshake.chainingKey = ck;
  handshake.hash = h;
  handshake.stage = HandshakeStage.CreatedInitiation;
  return message;
}

export type InitiationResult<P> =
  | { ok: true; peer: P; timestamp: Buffer }
  | {
      ok: false;
      reason:
        | "handshake_decryption_failed"
        | "unknown_peer"
        | "handshake_replay"
        | "handshake_flood"
        | "no_identity";
    };

const INITIATIONS_PER_SECOND = 50;
const MIN_INITIATION_INTERVAL_MS = 1000 / INITIATIONS_PER_SECOND;

/**
 * Consumes a handshake initiation whose mac1 was already checked. Finds the sender's peer by
 * its decrypted static key and, only if every step succeeds, moves that peer's handshake to
 * ConsumedInitiation (replacing any handshake of ours in flight, as the protocol requires).
 */
export function consumeInitiation<P extends { handshake: Handshake }>(
  identity: StaticIdentity | null,
  message: Uint8Array,
  findPeer: (publicKey: Buffer) => P | undefined,
  nowMs: number,
): InitiationResult<P> {
  if (!identity) return { ok: false, reason: "no_identity" };
  const remoteEphemeral = Buffer.from(
    message.subarray(INITIATION_EPHEMERAL, INITIATION_EPHEMERAL + KEY_LENGTH),
  );
  const encryptedStatic = message.subarray(INITIATION_STATIC, INITIATION_TIMESTAMP);
  const encryptedTimestamp = message.subarray(INITIATION_TIMESTAMP, INITIATION_MAC1);

  let h = identity.responderInitialHash;
  let ck: Buffer = INITIAL_CHAINING_KEY;

  /* e */
  ck = kdf1(ck, remoteEphemeral);
  h = hash(h, remoteEphemeral);

  /* es */
  const es = dh(identity.privateKey, remoteEphemeral);
  if (!es) return { ok: false, reason: "handshake_decryption_failed" };
  let key: Buffer;
  [ck, key] = kdf2(ck, es);

  /* s */
  const remoteStatic = aeadOpen(key, encryptedStatic, h);
  if (!remoteStatic) return { ok: false, reason: "handshake_decryption_failed" };
  h = hash(h, encryptedStatic);
  const peer = findPeer(remoteStatic);
  if (!peer) return { ok: false, reason: "unknown_peer" };
  const handshake = peer.handshake;

  /* ss */
  if (!handshake.precomputedStaticStatic) {
    return { ok: false, reason: "handshake_decryption_failed" };
  }
  [ck, key] = kdf2(ck, handshake.precomputedStaticStatic);

  /* {t} */
  const timestamp = aeadOpen(key, encryptedTimestamp, h);
  if (!timestamp) return { ok: false, reason: "handshake_decryption_failed" };
  h = hash(h, encryptedTimestamp);

  if (Buffer.compare(timestamp, handshake.latestTimestamp) <= 0) {
    return { ok: false, reason: "handshake_replay" };
  }
  if (nowMs - handshake.lastInitiationConsumedAt < MIN_INITIATION_INTERVAL_MS) {
    return { ok: false, reason: "handshake_flood" };
  }

  handshake.clear();
  handshake.remoteEphemeral = remoteEphemeral;
  handshake.latestTimestamp.set(timestamp);
  handshake.lastInitiationConsumedAt = nowMs;
  handshake.remoteIndex = readUint32(message, INITIATION_SENDER);
  handshake.chainingKey = ck;
  handshake.hash = h;
  handshake.stage = HandshakeStage.ConsumedInitiation;
  return { ok: true, peer, timestamp };
}

/**
 * Writes a handshake response (without macs) to the initiation this handshake consumed, and
 * moves it to CreatedResponse. The caller has set handshake.localIndex. Null on a zero DH.
 */
export function createResponse(handshake: Handshake, random: RandomSource): Buffer | null {
  if (handshake.stage !== HandshakeStage.ConsumedInitiation) return null;
  const message = Buffer.alloc(RESPONSE_LENGTH);
  writeHeader(message, MessageType.HandshakeResponse);
  writeUint32(message, RESPONSE_SENDER, handshake.localIndex);
  writeUint32(message, RESPONSE_RECEIVER, handshake.remoteIndex);

  let h = handshake.hash;
  let ck = handshake.chainingKey;

  /* e */
  const ephemeral = PrivateKey.generate(random);
  ephemeral.publicKey.copy(message, RESPONSE_EPHEMERAL);
  ck = kdf1(ck, ephemeral.publicKey);
  h = hash(h, ephemeral.publicKey);

  /* ee */
  const ee = dh(ephemeral, handshake.remoteEphemeral);
  if (!ee) return null;
  ck = kdf1(ck, ee);

  /* se */
  const se = dh(ephemeral, handshake.remoteStatic);
  if (!se) return null;
  ck = kdf1(ck, se);

  /* psk */
  const [nextCk, tau, key] = kdf3(ck, handshake.presharedKey);
  ck = nextCk;
  h = hash(h, tau);

  /* {} */
  const encryptedNothing = aeadSeal(key, EMPTY, h);
  encryptedNothing.copy(message, RESPONSE_EMPTY);
  h = hash(h, encryptedNothing);

  handshake.localEphemeral = ephemeral;
  handshake.chainingKey = ck;
  handshake.hash = h;
  handshake.stage = HandshakeStage.CreatedResponse;
  return message;
}

export type ResponseResult =
  { ok: true } | { ok: false; reason: "handshake_decryption_failed" | "unexpected_handshake" };

/**
 * Consumes a handshake response addressed (by receiver index) to this handshake, which must be
 * waiting in CreatedInitiation. On success the handshake moves to ConsumedResponse.
 */
export function consumeResponse(
  identity: StaticIdentity,
  handshake: Handshake,
  message: Uint8Array,
): ResponseResult {
  const ephemeral = handshake.localEphemeral;
  if (handshake.stage !== HandshakeStage.CreatedInitiation || !ephemeral) {
    return { ok: false, reason: "unexpected_handshake" };
  }
  const remoteEphemeral = Buffer.from(
    message.subarray(RESPONSE_EPHEMERAL, RESPONSE_EPHEMERAL + KEY_LENGTH),
  );
  const encryptedNothing = message.subarray(RESPONSE_EMPTY, RESPONSE_EMPTY + TAG_LENGTH);

  let h = handshake.hash;
  let ck = handshake.chainingKey;

  /* e */
  ck = kdf1(ck, remoteEphemeral);
  h = hash(h, remoteEphemeral);

  /* ee */
  const ee = dh(ephemeral, remoteEphemeral);
  if (!ee) return { ok: false, reason: "handshake_decryption_failed" };
  ck = kdf1(ck, ee);

  /* se */
  const se = dh(identity.privateKey, remoteEphemeral);
  if (!se) return { ok: false, reason: "handshake_decryption_failed" };
  ck = kdf1(ck, se);

  /* psk */
  const [nextCk, tau, key] = kdf3(ck, handshake.presharedKey);
  ck = nextCk;
  h = hash(h, tau);

  /* {} */
  if (!aeadOpen(key, encryptedNothing, h)) {
    return { ok: false, reason: "handshake_decryption_failed" };
  }
  h = hash(h, encryptedNothing);

  handshake.remoteEphemeral = remoteEphemeral;
  handshake.remoteIndex = readUint32(message, RESPONSE_SENDER);
  handshake.chainingKey = ck;
  handshake.hash = h;
  handshake.stage = HandshakeStage.ConsumedResponse;
  return { ok: true };
}

/** Transport keys of one session, with their counters and replay window. */
export class Keypair {
  sendingCounter = 0;
  readonly replay = new ReplayWindow();
  sendingValid = true;
  receivingValid = true;

  readonly sendingKey: Buffer;
  readonly receivingKey: Buffer;

  /** Copies both keys into one allocation of the keypair's own (see Handshake: the pool). */
  constructor(
    sendingKey: Uint8Array,
    receivingKey: Uint8Array,
    readonly isInitiator: boolean,
    readonly localIndex: number,
    readonly remoteIndex: number,
    /** Monotonic ms at which the session was derived. */
    readonly createdAt: number,
  ) {
    const keys = Buffer.alloc(2 * KEY_LENGTH);
    keys.set(sendingKey, 0);
    keys.set(receivingKey, KEY_LENGTH);
    this.sendingKey = keys.subarray(0, KEY_LENGTH);
    this.receivingKey = keys.subarray(KEY_LENGTH);
  }

  wipe(): void {
    this.sendingValid = false;
    this.receivingValid = false;
    wipe(this.sendingKey);
    wipe(this.receivingKey);
  }
}

/**
 * Derives the session from a completed handshake (ConsumedResponse for the initiator,
 * CreatedResponse for the responder) and zeroes the handshake. Null in any other stage.
 */
export function beginSession(handshake: Handshake, nowMs: number): Keypair | null {
  const isInitiator = handshake.stage === HandshakeStage.ConsumedResponse;
  if (!isInitiator && handshake.stage !== HandshakeStage.CreatedResponse) return null;
  const [first, second] = kdf2(handshake.chainingKey, EMPTY);
  const keypair = new Keypair(
    isInitiator ? first : second,
    isInitiator ? second : first,
    isInitiator,
    handshake.localIndex,
    handshake.remoteIndex,
    nowMs,
  );
  wipe(first);
  wipe(second);
  handshake.clear();
  return keypair;
}

/**
 * The three keypairs a peer holds. A responder's new keypair waits in `next` until the first
 * packet arrives on it, because only then does it know the initiator has the same keys.
 */
export class Keypairs {
  previous: Keypair | null = null;
  current: Keypair | null = null;
  next: Keypair | null = null;

  /** Installs a new session; returns the keypairs that were dropped so their indices can go. */
  add(keypair: Keypair): Keypair[] {
    const dropped: Keypair[] = [];
    const drop = (k: Keypair | null): void => {
      if (k) dropped.push(k);
    };
    if (keypair.isInitiator) {
      if (this.next) {
        // A responder session never confirmed: keep it as previous so late packets on it
        // still decrypt, and retire the current one.
        drop(this.previous);
        drop(this.current);
        this.previous = this.next;
        this.next = null;
      } else {
        drop(this.previous);
        this.previous = this.current;
      }
      this.current = keypair;
    } else {
      drop(this.next);
      this.next = keypair;
      drop(this.previous);
      this.previous = null;
    }
    for (const k of dropped) k.wipe();
    return dropped;
  }

  /**
   * Called after a packet authenticated with `keypair`. Returns true when this confirmed a
   * waiting `next` keypair (the responder's handshake is now complete).
   */
  receivedWith(keypair: Keypair): Keypair[] | null {
    if (keypair !== this.next) return null;
    const dropped = this.previous ? [this.previous] : [];
    this.previous?.wipe();
    this.previous = this.current;
    this.current = keypair;
    this.next = null;
    return dropped;
  }

  /** Drops all keypairs; returns them so their indices can be freed. */
  clear(): Keypair[] {
    const all = [this.previous, this.current, this.next].filter((k): k is Keypair => k !== null);
    for (const k of all) k.wipe();
    this.previous = this.current = this.next = null;
    return all;
  }
}
