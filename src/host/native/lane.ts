// The handshake lane (native/lane.c): a thread of the addon's that drains a handshake socket
// through the cookie gate and sends the cookie replies itself, keeping only what passes for the
// JS thread. A flood then costs the JS thread, which also carries the data path, nothing per
// message: it takes the few messages that need the core, when told there are some.
import { loadAddon } from "./addon.js";
import { takeFromRing, type UdpReceiveSlots } from "./batch.js";

/** Counters since the lane started; all are datagram counts except `waiting` and `error`. */
export interface HandshakeLaneStats {
  /** Datagrams read from the socket. */
  received: number;
  /**
   * Of those, how many came in runs the kernel queued as one (UDP GRO: equal-sized datagrams
   * from one sender, as a flooder sending with UDP GSO makes them): read with one copy a run.
   */
  coalesced: number;
  badMac1: number;
  cookieReplies: number;
  /** Needed a cookie reply that could not be made (no randomness). */
  unanswered: number;
  /**
   * Dropped for its source (address and port) while under load: it had had its 64 messages
   * looked at this second (the rest cost a table look-up each, no mac check), or needed a
   * cookie reply after its five of the second (a mac1 check, no encryption and no send).
   */
  overBudget: number;
  /** Passed the gate but found the hand-over ring full (the JS thread fell behind). */
  ringFull: number;
  /** Dropped by the kernel at the socket's full buffer. */
  kernelDrops: number;
  /** Passed messages waiting to be taken. */
  waiting: number;
  /** The errno that stopped the thread (0 while it runs). */
  error: number;
  /** Passed, but waited longer than Rekey-Timeout to be taken: dropped unanswered. */
  stale: number;
}

/** Bytes each taken message may need: the lane keeps at most this much of a datagram. */
export const LANE_MESSAGE_ROOM = 256;

export class HandshakeLane {
  #handle: unknown;
  #stopped = false;

  private constructor(handle: unknown) {
    this.#handle = handle;
  }

  /**
   * Starts the thread on the socket `fd` (the addon's own; its readiness polling must be off).
   * `onPassed` runs on the JS thread when messages wait; it is not called again until
   * {@link take} has emptied the lane, except once after {@link wakeOnActivity}.
   */
  static start(fd: number, onPassed: () => void): HandshakeLane {
    return new HandshakeLane(loadAddon().laneStart(fd, onPassed));
  }

  /** The cookie gate's keys (null: none yet, everything passes) and the core's load verdict. */
  configure(keys: Uint8Array | null, underLoad: boolean): void {
    if (!this.#stopped) loadAddon().laneConfigure(this.#handle, keys, underLoad);
  }

  /** Moves up to `count` waiting messages into slots [0, n) of `slots`; returns n. */
  take(slots: UdpReceiveSlots, count: number): number {
    if (this.#stopped) return 0;
    return takeFromRing(loadAddon().laneTake, this.#handle, slots, count);
  }

  stats(): HandshakeLaneStats {
    return loadAddon().laneStats(this.#handle);
  }

  /**
   * Asks for one more call of `onPassed` at the next datagram the lane reads, whatever the
   * gate makes of it: a JS side that stopped polling the counters while nothing came learns
   * that something did. Returns `received` as of now, so the caller can tell whether a
   * datagram came between its last look at {@link stats} and this call.
   */
  wakeOnActivity(): number {
    if (this.#stopped) return this.stats().received;
    return loadAddon().laneWakeOnActivity(this.#handle);
  }

  /** Stops the thread and waits for it; the socket stays open. Calling it again does nothing. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    loadAddon().laneStop(this.#handle);
  }
}
