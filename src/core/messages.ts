// WireGuard wire format: every message type, size and field offset in one place.
// All integers are little-endian. A message starts with a type byte and three zero bytes.
// Sizes are derived from their parts so a reader can check them against the paper.

export const KEY_LENGTH = 32;
export const TAG_LENGTH = 16; // Poly1305 tag
export const MAC_LENGTH = 16;
export const TIMESTAMP_LENGTH = 12; // TAI64N
export const COOKIE_LENGTH = 16;
export const COOKIE_NONCE_LENGTH = 24; // XChaCha20-Poly1305

export enum MessageType {
  HandshakeInitiation = 1,
  HandshakeResponse = 2,
  CookieReply = 3,
  TransportData = 4,
}

const HEADER_LENGTH = 4; // type + 3 reserved zero bytes
const INDEX_LENGTH = 4;

// Handshake initiation (type 1).
export const INITIATION_SENDER = HEADER_LENGTH;
export const INITIATION_EPHEMERAL = INITIATION_SENDER + INDEX_LENGTH;
export const INITIATION_STATIC = INITIATION_EPHEMERAL + KEY_LENGTH;
export const INITIATION_TIMESTAMP = INITIATION_STATIC + KEY_LENGTH + TAG_LENGTH;
export const INITIATION_MAC1 = INITIATION_TIMESTAMP + TIMESTAMP_LENGTH + TAG_LENGTH;
export const INITIATION_MAC2 = INITIATION_MAC1 + MAC_LENGTH;
export const INITIATION_LENGTH = INITIATION_MAC2 + MAC_LENGTH; // 148

// Handshake response (type 2).
export const RESPONSE_SENDER = HEADER_LENGTH;
export const RESPONSE_RECEIVER = RESPONSE_SENDER + INDEX_LENGTH;
export const RESPONSE_EPHEMERAL = RESPONSE_RECEIVER + INDEX_LENGTH;
export const RESPONSE_EMPTY = RESPONSE_EPHEMERAL + KEY_LENGTH;
export const RESPONSE_MAC1 = RESPONSE_EMPTY + TAG_LENGTH;
export const RESPONSE_MAC2 = RESPONSE_MAC1 + MAC_LENGTH;
export const RESPONSE_LENGTH = RESPONSE_MAC2 + MAC_LENGTH; // 92

// Cookie reply (type 3).
export const COOKIE_RECEIVER = HEADER_LENGTH;
export const COOKIE_NONCE = COOKIE_RECEIVER + INDEX_LENGTH;
export const COOKIE_ENCRYPTED = COOKIE_NONCE + COOKIE_NONCE_LENGTH;
export const COOKIE_REPLY_LENGTH = COOKIE_ENCRYPTED + COOKIE_LENGTH + TAG_LENGTH; // 64

// Transport data (type 4).
export const DATA_RECEIVER = HEADER_LENGTH;
export const DATA_COUNTER = DATA_RECEIVER + INDEX_LENGTH;
export const DATA_HEADER_LENGTH = DATA_COUNTER + 8; // 16
export const DATA_MIN_LENGTH = DATA_HEADER_LENGTH + TAG_LENGTH; // 32: a keepalive
/** Transport plaintext is zero-padded to a multiple of this. */
export const PADDING_MULTIPLE = 16;
/**
 * Room a packet sealed in place needs behind its plaintext: padding (less than one multiple)
 * and the tag.
 */
export const DATA_TRAILER_ROOM = PADDING_MULTIPLE + TAG_LENGTH;

/** The offset of mac1 and mac2 within a handshake message of the given type. */
export function macOffsets(type: MessageType): { mac1: number; mac2: number } {
  return type === MessageType.HandshakeInitiation
    ? { mac1: INITIATION_MAC1, mac2: INITIATION_MAC2 }
    : { mac1: RESPONSE_MAC1, mac2: RESPONSE_MAC2 };
}

export type MessageCheck =
  { ok: true; type: MessageType } | { ok: false; reason: "unknown_type" | "bad_length" };

/**
 * Classifies a datagram by (type, exact length) before any cryptography is attempted, so
 * malformed input costs a few comparisons. Reserved bytes must be zero, as the kernel requires
 * (reading the first four bytes as one little-endian word).
 */
export function classifyMessage(datagram: Uint8Array): MessageCheck {
  if (datagram.length < HEADER_LENGTH) return { ok: false, reason: "bad_length" };
  if (datagram[1] !== 0 || datagram[2] !== 0 || datagram[3] !== 0) {
    return { ok: false, reason: "unknown_type" };
  }
  switch (datagram[0]) {
    case MessageType.HandshakeInitiation:
      return datagram.length === INITIATION_LENGTH
        ? { ok: true, type: MessageType.HandshakeInitiation }
        : { ok: false, reason: "bad_length" };
    case MessageType.HandshakeResponse:
      return datagram.length === RESPONSE_LENGTH
        ? { ok: true, type: MessageType.HandshakeResponse }
        : { ok: false, reason: "bad_length" };
    case MessageType.CookieReply:
      return datagram.length === COOKIE_REPLY_LENGTH
        ? { ok: true, type: MessageType.CookieReply }
        : { ok: false, reason: "bad_length" };
    case MessageType.TransportData:
      return datagram.length >= DATA_MIN_LENGTH
        ? { ok: true, type: MessageType.TransportData }
        : { ok: false, reason: "bad_length" };
    default:
      return { ok: false, reason: "unknown_type" };
  }
}

export function writeHeader(message: Uint8Array, type: MessageType, offset = 0): void {
  message[offset] = type;
  message[offset + 1] = 0;
  message[offset + 2] = 0;
  message[offset + 3] = 0;
}

export function readUint32(bytes: Uint8Array, offset: number): number {
  return (
    (bytes[offset]! |
      (bytes[offset + 1]! << 8) |
      (bytes[offset + 2]! << 16) |
      (bytes[offset + 3]! << 24)) >>>
    0
  );
}

export function writeUint32(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = value & 0xff;
  bytes[offset + 1] = (value >>> 8) & 0xff;
  bytes[offset + 2] = (value >>> 16) & 0xff;
  bytes[offset + 3] = (value >>> 24) & 0xff;
}

/**
 * Reads the 64-bit transport counter as a JS number. Counters at or above 2^53 cannot be
 * represented exactly; they are returned as Infinity so the caller rejects them. A real sender
 * would need decades at line rate to get there (and rekeys long before).
 */
export function readCounter(bytes: Uint8Array, offset: number): number {
  const low = readUint32(bytes, offset);
  const high = readUint32(bytes, offset + 4);
  if (high >= 0x200000) return Infinity;
  return high * 0x100000000 + low;
}

export function writeCounter(bytes: Uint8Array, offset: number, counter: number): void {
  writeUint32(bytes, offset, counter >>> 0);
  writeUint32(bytes, offset + 4, Math.floor(counter / 0x100000000));
}

/**
 * Whether `length` bytes at `offset` look like a transport data message: its type, zero
 * reserved bytes and at least a header and a tag. The cheap check that sends a datagram down
 * the batched data path; anything else goes to {@link classifyMessage} and the handshake path.
 */
export function isTransportData(bytes: Uint8Array, offset: number, length: number): boolean {
  return (
    length >= DATA_MIN_LENGTH &&
    bytes[offset] === MessageType.TransportData &&
    bytes[offset + 1] === 0 &&
    bytes[offset + 2] === 0 &&
    bytes[offset + 3] === 0
  );
}

/** Writes the 16-byte transport header at `offset`. */
export function writeDataHeader(
  target: Uint8Array,
  offset: number,
  receiverIndex: number,
  counter: number,
): void {
  writeHeader(target, MessageType.TransportData, offset);
  writeUint32(target, offset + DATA_RECEIVER, receiverIndex);
  writeCounter(target, offset + DATA_COUNTER, counter);
}

/**
 * Frames an inner packet for sealing where it lies: its `length` bytes at `offset` are
 * zero-padded to `padded` and the transport header goes into the DATA_HEADER_LENGTH bytes in
 * front. The plaintext to seal is then [offset, offset + padded), with room for the tag behind.
 */
export function frameDataInPlace(
  target: Uint8Array,
  offset: number,
  length: number,
  padded: number,
  receiverIndex: number,
  counter: number,
): void {
  target.fill(0, offset + length, offset + padded);
  writeDataHeader(target, offset - DATA_HEADER_LENGTH, receiverIndex, counter);
}

/** Length of the padded transport plaintext for an inner packet of `length` bytes. */
export function paddedLength(length: number, mtu: number): number {
  const padded = Math.ceil(length / PADDING_MULTIPLE) * PADDING_MULTIPLE;
  if (length > mtu) return length; // never shrink; oversize packets are the sender's problem
  return Math.min(padded, mtu);
}

// Protocol constants (WireGuard paper, section 6). Times in milliseconds.
export const REKEY_AFTER_MESSAGES = 2 ** 60;
/** 2^64 − 2^13 − 1 is beyond a JS number's exact range; counters stop at 2^53 (see readCounter). */
export const REJECT_AFTER_MESSAGES = Number.MAX_SAFE_INTEGER;
export const REKEY_AFTER_TIME_MS = 120_000;
export const REJECT_AFTER_TIME_MS = 180_000;
export const REKEY_ATTEMPT_TIME_MS = 90_000;
export const REKEY_TIMEOUT_MS = 5_000;
export const REKEY_TIMEOUT_JITTER_MAX_MS = 333;
export const KEEPALIVE_TIMEOUT_MS = 10_000;
/** Handshake retransmissions before giving up: Rekey-Attempt-Time / Rekey-Timeout. */
export const MAX_TIMER_HANDSHAKES = REKEY_ATTEMPT_TIME_MS / REKEY_TIMEOUT_MS;
