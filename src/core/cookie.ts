// mac1, mac2 and cookie replies: the DoS defence that lets a responder under load make an
// initiator prove it owns its source address before any Diffie-Hellman is spent on it.
import { constantTimeEqual, hash, mac, xaeadOpen, xaeadSeal, type RandomSource } from "./crypto.js";
import {
  COOKIE_ENCRYPTED,
  COOKIE_LENGTH,
  COOKIE_NONCE,
  COOKIE_NONCE_LENGTH,
  COOKIE_RECEIVER,
  COOKIE_REPLY_LENGTH,
  MAC_LENGTH,
  MessageType,
  macOffsets,
  readUint32,
  writeHeader,
  writeUint32,
} from "./messages.js";

const LABEL_MAC1 = Buffer.from("mac1----", "ascii");
const LABEL_COOKIE = Buffer.from("cookie--", "ascii");

/** The responder's cookie secret is replaced this often, which also bounds a cookie's life. */
export const COOKIE_SECRET_MAX_AGE_MS = 120_000;
/** An initiator stops using a cookie a little early, in case the reply took a while to come. */
export const COOKIE_SECRET_LATENCY_MS = 5_000;

export function mac1Key(publicKey: Uint8Array): Buffer {
  return hash(LABEL_MAC1, publicKey);
}

export function cookieKey(publicKey: Uint8Array): Buffer {
  return hash(LABEL_COOKIE, publicKey);
}

export type MacCheck = "invalid_mac1" | "valid_mac1_no_cookie" | "valid_mac1_and_cookie";

/** Responder side, one per device: checks macs and answers with cookie replies. */
export class CookieChecker {
  private mac1Key: Buffer | null = null;
  private encryptionKey: Buffer | null = null;
  private readonly secret = Buffer.alloc(32);
  private secretCreatedAt = -Infinity;

  constructor(private readonly random: RandomSource) {}

  /** Keys derive from our own public key; null while the device has no private key. */
  setPublicKey(publicKey: Uint8Array | null): void {
    this.mac1Key = publicKey ? mac1Key(publicKey) : null;
    this.encryptionKey = publicKey ? cookieKey(publicKey) : null;
  }

  /**
   * Checks mac1 always, and mac2 only when `checkCookie` (the device is under load), against
   * the cookie that `source` (IP bytes ‖ port bytes) would have been given.
   */
  check(
    message: Uint8Array,
    type: MessageType,
    source: Uint8Array,
    nowMs: number,
    checkCookie: boolean,
  ): MacCheck {
    if (!this.mac1Key) return "invalid_mac1";
    const { mac1, mac2 } = macOffsets(type);
    const expectedMac1 = mac(this.mac1Key, message.subarray(0, mac1));
    if (!constantTimeEqual(expectedMac1, message.subarray(mac1, mac1 + MAC_LENGTH))) {
      return "invalid_mac1";
    }
    if (!checkCookie) return "valid_mac1_no_cookie";
    const expectedMac2 = mac(this.cookieFor(source, nowMs), message.subarray(0, mac2));
    return constantTimeEqual(expectedMac2, message.subarray(mac2, mac2 + MAC_LENGTH))
      ? "valid_mac1_and_cookie"
      : "valid_mac1_no_cookie";
  }

  /** A cookie reply to `message` (an initiation or response with a valid mac1). */
  createReply(
    message: Uint8Array,
    type: MessageType,
    source: Uint8Array,
    nowMs: number,
  ): Buffer | null {
    if (!this.encryptionKey) return null;
    const { mac1 } = macOffsets(type);
    const reply = Buffer.alloc(COOKIE_REPLY_LENGTH);
    writeHeader(reply, MessageType.CookieReply);
    // Both initiation and response carry their sender index at offset 4.
    writeUint32(reply, COOKIE_RECEIVER, readUint32(message, 4));
    const nonce = reply.subarray(COOKIE_NONCE, COOKIE_NONCE + COOKIE_NONCE_LENGTH);
    this.random.fill(nonce);
    const sealed = xaeadSeal(
      this.encryptionKey,
      nonce,
      this.cookieFor(source, nowMs),
      message.subarray(mac1, mac1 + MAC_LENGTH),
    );
    reply.set(sealed, COOKIE_ENCRYPTED);
    return reply;
  }

  /**
   * mac1 key ‖ cookie encryption key ‖ the current cookie secret, for a filter that does
   * these same checks and replies in a batch before messages reach {@link check} (the host's
   * native cookie gate); null while the device has no private key. Rewritten in place.
   */
  batchKeys(nowMs: number): Uint8Array | null {
    if (!this.mac1Key || !this.encryptionKey) return null;
    this.rotateSecret(nowMs);
    this.batchKeyBytes.set(this.mac1Key, 0);
    this.batchKeyBytes.set(this.encryptionKey, 32);
    this.batchKeyBytes.set(this.secret, 64);
    return this.batchKeyBytes;
  }
  private readonly batchKeyBytes = new Uint8Array(96);

  /**
   * When the current cookie secret has lived its time (the next use after it makes a new one);
   * -Infinity while none has been made. A filter given {@link batchKeys} needs new keys then.
   */
  get secretExpiresAtMs(): number {
    return this.secretCreatedAt + COOKIE_SECRET_MAX_AGE_MS;
  }

  private cookieFor(source: Uint8Array, nowMs: number): Uint8Array {
    this.rotateSecret(nowMs);
    return mac(this.secret, source);
  }

  private rotateSecret(nowMs: number): void {
    if (nowMs - this.secretCreatedAt >= COOKIE_SECRET_MAX_AGE_MS) {
      this.random.fill(this.secret);
      this.secretCreatedAt = nowMs;
    }
  }
}

interface CookieMakerState {
  readonly mac1Key: Buffer;
  readonly encryptionKey: Buffer;
  readonly cookie: Buffer;
  readonly lastMac1Sent: Buffer;
}

/**
 * Initiator side, one per peer: adds macs to our handshake messages and stores cookies.
 * Its keys and buffers are made at the first handshake message, not when the peer is added:
 * a hub with 5,000 peers would otherwise hash and allocate for each before the first packet.
 */
export class CookieMaker {
  readonly #peerPublicKey: Uint8Array;
  #state: CookieMakerState | null = null;
  private cookieReceivedAt = -Infinity;
  private haveSentMac1 = false;

  /** `peerPublicKey` is kept, not copied: the caller does not change it. */
  constructor(peerPublicKey: Uint8Array) {
    this.#peerPublicKey = peerPublicKey;
  }

  get #keys(): CookieMakerState {
    if (this.#state === null) {
      const buffers = Buffer.alloc(COOKIE_LENGTH + MAC_LENGTH);
      this.#state = {
        mac1Key: mac1Key(this.#peerPublicKey),
        encryptionKey: cookieKey(this.#peerPublicKey),
        cookie: buffers.subarray(0, COOKIE_LENGTH),
        lastMac1Sent: buffers.subarray(COOKIE_LENGTH),
      };
    }
    return this.#state;
  }

  addMacs(message: Buffer, type: MessageType, nowMs: number): void {
    const keys = this.#keys;
    const { mac1, mac2 } = macOffsets(type);
    const mac1Value = mac(keys.mac1Key, message.subarray(0, mac1));
    message.set(mac1Value, mac1);
    keys.lastMac1Sent.set(mac1Value);
    this.haveSentMac1 = true;
    const cookieAge = nowMs - this.cookieReceivedAt;
    if (cookieAge < COOKIE_SECRET_MAX_AGE_MS - COOKIE_SECRET_LATENCY_MS) {
      message.set(mac(keys.cookie, message.subarray(0, mac2)), mac2);
    } else {
      message.fill(0, mac2, mac2 + MAC_LENGTH);
    }
  }

  /** Stores the cookie from a reply to our last mac1; false if it does not authenticate. */
  consumeReply(reply: Uint8Array, nowMs: number): boolean {
    if (!this.haveSentMac1) return false;
    const keys = this.#keys;
    const nonce = reply.subarray(COOKIE_NONCE, COOKIE_NONCE + COOKIE_NONCE_LENGTH);
    const sealed = reply.subarray(COOKIE_ENCRYPTED, COOKIE_REPLY_LENGTH);
    const cookie = xaeadOpen(keys.encryptionKey, nonce, sealed, keys.lastMac1Sent);
    if (!cookie) return false;
    keys.cookie.set(cookie);
    this.cookieReceivedAt = nowMs;
    this.haveSentMac1 = false;
    return true;
  }
}
