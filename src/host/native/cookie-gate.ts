// The cookie gate (native/cookie.c): mac1 checks and cookie replies for a batch of handshake
// messages in one call, so that a flood's messages never reach the JS thread one by one.
import { loadAddon } from "./addon.js";
import { PacketBatch, type UdpReceiveSlots } from "./batch.js";

/** What the gate did with message i (`verdicts[i]`); values as native/cookie.c. */
export const enum GateVerdict {
  /** For the core: a valid mac1 (and a valid mac2 under load), or not a handshake at all. */
  Pass = 0,
  BadMac1 = 1,
  /** Answered with a cookie reply, which is in the reply batch. */
  CookieReply = 2,
  /** Needed a cookie reply that could not be made (no randomness): dropped. */
  NoReply = 3,
  /**
   * Under load, its source had had its share this second (lanes only): of messages looked at
   * (then dropped unread), or of cookie replies when it needed one.
   */
  OverBudget = 4,
}

/** Length of the gate's keys: mac1 key ‖ cookie encryption key ‖ cookie secret. */
export const COOKIE_GATE_KEYS_LENGTH = 96;

/** Cookie reply: 64 bytes (type, receiver, nonce, sealed cookie). */
const COOKIE_REPLY_SLOT = 64;

/** Scratch for one gate call per batch of up to `capacity` handshake messages. */
export class CookieGate {
  readonly verdicts: Uint8Array;
  /** Cookie replies [0, n) after {@link judge} returned n, ready for sendBatch. */
  readonly replies: PacketBatch;

  constructor(readonly capacity: number) {
    this.verdicts = new Uint8Array(capacity);
    this.replies = new PacketBatch(capacity, { slotSize: COOKIE_REPLY_SLOT });
  }

  /**
   * Judges messages [0, count) of `slots` with `keys` (see COOKIE_GATE_KEYS_LENGTH): a bad
   * mac1 is dropped, and while `underLoad` a valid mac1 without a valid mac2 is answered
   * with a cookie reply; returns how many replies wait in {@link replies}.
   */
  judge(slots: UdpReceiveSlots, count: number, keys: Uint8Array, underLoad: boolean): number {
    const replies = this.replies;
    return loadAddon().cookieGate(
      slots.arena,
      slots.offsets,
      slots.lengths,
      slots.endpoints,
      slots.locals ?? null,
      count,
      keys,
      underLoad,
      this.verdicts,
      replies.arena,
      replies.offsets,
      replies.lengths,
      replies.endpoints,
      replies.locals,
    );
  }
}
