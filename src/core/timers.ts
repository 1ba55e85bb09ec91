// The WireGuard timer state machine. The send and receive paths call the event hooks below
// (never timers directly); the hooks arm and disarm five per-peer timers, all kept in one
// coarse timer wheel that the device advances with its injected clock.
import {
  KEEPALIVE_TIMEOUT_MS,
  MAX_TIMER_HANDSHAKES,
  REJECT_AFTER_TIME_MS,
  REKEY_TIMEOUT_JITTER_MAX_MS,
  REKEY_TIMEOUT_MS,
} from "./messages.js";

export class Timer {
  /** When it fires; Infinity when not armed. */
  deadline = Infinity;
  /** Slot in the wheel, or -1 when in none (an unarmed timer may stay in one, see below). */
  slot = -1;
  /** The tick at which the wheel next looks at it, while in a slot. */
  tick = 0;
  constructor(readonly onExpiry: () => void) {}

  get pending(): boolean {
    return this.deadline !== Infinity;
  }
}

/**
 * A hashed timer wheel: O(1) to arm, re-arm and cancel, which matters because some timers are
 * re-armed on every packet. Timers fire at most one granule late.
 *
 * Re-arming later and cancelling are lazy: the timer keeps its slot and only its deadline
 * changes; when the wheel reaches the slot it moves the timer to its deadline's slot or, if
 * cancelled, drops it. A peer with steady traffic re-arms its timers on every report of the
 * data path (each a cancel and an arm a second per peer at a fleet's hub); so they cost a
 * field each, and the wheel's slots are touched once per timeout, not per report.
 *
 * The wheel keeps no clock of its own: the host calls `advance` when `nextDueMs` says something
 * is due, and in between sleeps. An idle daemon then wakes for its timers only, not 20 times a
 * second. So that a sleeping host learns of a timer armed earlier than its planned wake (a
 * packet arms one), `onEarlierDue` is told whenever the earliest due time moves earlier.
 */
export class TimerWheel {
  // Slots are created on first use: a device with few peers touches only a handful.
  private readonly slots: Array<Set<Timer> | undefined>;
  private processedTick: number;
  /**
   * The earliest due tick the host knows of (from `nextDueMs` or `onEarlierDue`); Infinity
   * once that has passed. Not raised by `cancel`: a wake with nothing to fire costs a sweep,
   * a missed wake a timer.
   */
  private earliestTick = Infinity;
  /**
   * Told the due time (ms) of a timer just armed that may be due before every other. A host
   * keeps the earlier of this and its planned wake.
   */
  onEarlierDue: ((dueMs: number) => void) | null = null;

  constructor(
    nowMs: number,
    readonly granularityMs = 50,
    private readonly slotCount = 1024,
  ) {
    this.slots = new Array<Set<Timer> | undefined>(slotCount);
    this.processedTick = Math.floor(nowMs / granularityMs);
  }

  schedule(timer: Timer, deadlineMs: number): void {
    // Rounding up means a timer is due whenever its slot is swept (fires late, never early);
    // a deadline already behind the cursor goes in the next slot to be swept.
    const tick = Math.max(Math.ceil(deadlineMs / this.granularityMs), this.processedTick + 1);
    timer.deadline = deadlineMs;
    if (tick < this.earliestTick) {
      this.earliestTick = tick;
      this.onEarlierDue?.(tick * this.granularityMs);
    }
    // Looked at no later than due: the sweep then moves it on (see the class comment).
    if (timer.slot >= 0 && timer.tick <= tick) return;
    this.place(timer, tick);
  }

  cancel(timer: Timer): void {
    // Left in its slot until the sweep reaches it (see the class comment).
    timer.deadline = Infinity;
  }

  /**
   * Cancels and lets go of a timer that will not be armed again (its peer removed): a host
   * with nothing due never sweeps, so a cancelled timer left in its slot would keep a removed
   * peer alive, and peers added and removed while idle would pile up.
   */
  remove(timer: Timer): void {
    timer.deadline = Infinity;
    if (timer.slot < 0) return;
    this.slots[timer.slot]!.delete(timer);
    timer.slot = -1;
  }

  /** Timers in the wheel's slots: armed ones, and cancelled ones not yet swept. */
  get held(): number {
    let count = 0;
    for (const slot of this.slots) count += slot?.size ?? 0;
    return count;
  }

  private place(timer: Timer, tick: number): void {
    const slot = tick % this.slotCount;
    timer.tick = tick;
    if (timer.slot === slot) return;
    if (timer.slot >= 0) this.slots[timer.slot]!.delete(timer);
    (this.slots[slot] ??= new Set()).add(timer);
    timer.slot = slot;
  }

  /** Fires every timer whose deadline is at or before `nowMs`. */
  advance(nowMs: number): void {
    const targetTick = Math.floor(nowMs / this.granularityMs);
    // After a long pause one sweep of every slot is enough: each timer is checked by deadline.
    const firstTick = Math.max(this.processedTick + 1, targetTick - this.slotCount + 1);
    for (let tick = firstTick; tick <= targetTick; tick++) {
      const slot = this.slots[tick % this.slotCount];
      if (!slot || slot.size === 0) continue;
      for (const timer of slot) {
        if (timer.deadline === Infinity) {
          slot.delete(timer); // cancelled since it was placed
          timer.slot = -1;
          continue;
        }
        if (timer.deadline > nowMs) {
          // A later rotation's, or re-armed later since it was placed: on to its own tick,
          // which is after targetTick (deadline > nowMs), so not swept again in this call.
          this.place(timer, Math.ceil(timer.deadline / this.granularityMs));
          continue;
        }
        slot.delete(timer);
        timer.slot = -1;
        timer.deadline = Infinity;
        timer.onExpiry();
      }
    }
    this.processedTick = Math.max(this.processedTick, targetTick);
    // What was earliest has fired; until `nextDueMs` looks again, every new timer is reported.
    if (this.earliestTick <= this.processedTick) this.earliestTick = Infinity;
  }

  /**
   * The clock time at which `advance` will next fire a timer (its deadline rounded up to the
   * granule, so that timers close together fire in one wake); Infinity when none is pending.
   * Walks one rotation of the wheel: for the host to call after a wake, not per packet.
   */
  nextDueMs(): number {
    // Due ticks of timers whose slot comes before their due tick (a later rotation's, or
    // re-armed later lazily): a timer sits in a slot no later than its due tick, so once the
    // walk reaches a timer due at its own slot's tick, nothing after it is due earlier.
    let dueLater = Infinity;
    for (let tick = this.processedTick + 1; tick <= this.processedTick + this.slotCount; tick++) {
      if (tick >= dueLater) break;
      const slot = this.slots[tick % this.slotCount];
      if (!slot || slot.size === 0) continue;
      for (const timer of slot) {
        // A deadline already passed when it was armed waits in the next slot to be swept.
        const due = Math.max(Math.ceil(timer.deadline / this.granularityMs), tick);
        if (due === tick) {
          this.earliestTick = tick;
          return tick * this.granularityMs;
        }
        dueLater = Math.min(dueLater, due);
      }
    }
    this.earliestTick = dueLater;
    return dueLater * this.granularityMs;
  }
}

/** What the timers ask the device to do when they expire. */
export interface TimerActions {
  sendInitiation(isRetry: boolean): void;
  sendKeepalive(): void;
  /** Handshake attempts exhausted: drop packets waiting for a session. */
  abandonHandshake(): void;
  zeroKeyMaterial(): void;
}

export class PeerTimers {
  private readonly retransmitHandshake: Timer;
  private readonly sendKeepalive: Timer;
  private readonly newHandshake: Timer;
  private readonly zeroKeyMaterial: Timer;
  private readonly persistentKeepalive: Timer;
  handshakeAttempts = 0;
  private needAnotherKeepalive = false;
  /** Seconds; 0 disables. */
  persistentKeepaliveInterval = 0;
  /** Set after the last-minute rekey of a session we initiated, so it is sent only once. */
  sentLastMinuteHandshake = false;

  constructor(
    private readonly wheel: TimerWheel,
    private readonly clock: () => number,
    private readonly jitter: () => number,
    actions: TimerActions,
  ) {
    this.retransmitHandshake = new Timer(() => {
      if (this.handshakeAttempts >= MAX_TIMER_HANDSHAKES) {
        this.wheel.cancel(this.sendKeepalive);
        actions.abandonHandshake();
        if (!this.zeroKeyMaterial.pending) this.arm(this.zeroKeyMaterial, REJECT_AFTER_TIME_MS * 3);
      } else {
        this.handshakeAttempts++;
        actions.sendInitiation(true);
      }
    });
    this.sendKeepalive = new Timer(() => {
      actions.sendKeepalive();
      if (this.needAnotherKeepalive) {
        this.needAnotherKeepalive = false;
        this.arm(this.sendKeepalive, KEEPALIVE_TIMEOUT_MS);
      }
    });
    this.newHandshake = new Timer(() => actions.sendInitiation(false));
    this.zeroKeyMaterial = new Timer(() => actions.zeroKeyMaterial());
    this.persistentKeepalive = new Timer(() => {
      if (this.persistentKeepaliveInterval > 0) actions.sendKeepalive();
    });
  }

  private arm(timer: Timer, delayMs: number): void {
    this.wheel.schedule(timer, this.clock() + delayMs);
  }

  /** A data packet (not a keepalive) was sent: expect an answer within 15 s or rekey. */
  dataSent(): void {
    if (!this.newHandshake.pending) {
      this.arm(this.newHandshake, KEEPALIVE_TIMEOUT_MS + REKEY_TIMEOUT_MS + this.jitter());
    }
  }

  /** A data packet was received: answer with a keepalive if we send nothing for 10 s. */
  dataReceived(): void {
    if (!this.sendKeepalive.pending) this.arm(this.sendKeepalive, KEEPALIVE_TIMEOUT_MS);
    else this.needAnotherKeepalive = true;
  }

  anyAuthenticatedPacketSent(): void {
    this.wheel.cancel(this.sendKeepalive);
  }

  anyAuthenticatedPacketReceived(): void {
    this.wheel.cancel(this.newHandshake);
  }

  handshakeInitiated(): void {
    this.arm(this.retransmitHandshake, REKEY_TIMEOUT_MS + this.jitter());
  }

  handshakeComplete(): void {
    this.wheel.cancel(this.retransmitHandshake);
    this.handshakeAttempts = 0;
    this.sentLastMinuteHandshake = false;
  }

  sessionDerived(): void {
    this.arm(this.zeroKeyMaterial, REJECT_AFTER_TIME_MS * 3);
  }

  anyAuthenticatedPacketTraversal(): void {
    if (this.persistentKeepaliveInterval > 0) {
      this.arm(this.persistentKeepalive, this.persistentKeepaliveInterval * 1000);
    }
  }

  /** Stops every timer (peer removed or device key gone); the wheel keeps none of them. */
  stopAll(): void {
    for (const timer of [
      this.retransmitHandshake,
      this.sendKeepalive,
      this.newHandshake,
      this.zeroKeyMaterial,
      this.persistentKeepalive,
    ]) {
      this.wheel.remove(timer);
    }
  }

  get retransmitPending(): boolean {
    return this.retransmitHandshake.pending;
  }
}

export function randomJitterMs(random: () => number): number {
  return Math.floor(random() * (REKEY_TIMEOUT_JITTER_MAX_MS + 1));
}
