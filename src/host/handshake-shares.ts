// Fair shares of the handshake budget while handshakes arrive faster than they are taken in.
//
// Under a flood the kernel's buffer decides which handshake messages live, blind to who sent
// them: a joining peer's one initiation a second is lost among a flooder's hundred thousand.
// So the daemon drains the handshake socket quickly and, while there is a backlog, lets each
// source (an IPv4 address or an IPv6 /64, as the rate limiter keys them) have only a few
// messages of each turn; the excess is dropped and counted, unread beyond its address. A
// flooder then costs the daemon a few bytes of comparison per message, and a joining peer's
// initiation is seen in the first turn after it arrives. Without a backlog nothing is dropped
// here: every message read is handled, as before.
import { randomFillSync } from "node:crypto";
import { ENDPOINT_SIZE } from "./native/index.js";

/** Handshake messages one source may have handled per turn while there is a backlog. */
export const HANDSHAKES_PER_SOURCE_PER_TURN = 4;

/** Bytes 0..11 of an endpoint record that holds an IPv4 address (::ffff:a.b.c.d). */
const V4_MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

export class HandshakeShares {
  /** Source key → messages taken this turn; cleared at the start of each turn. */
  private readonly taken = new Map<number, number>();
  private readonly seed: number;
  private limited = false;

  constructor(private readonly perSource = HANDSHAKES_PER_SOURCE_PER_TURN) {
    // A secret seed, so that a sender cannot pick addresses whose keys collide with a peer's.
    this.seed = randomFillSync(new Uint32Array(1))[0]!;
  }

  /** Starts a turn; `backlogged` says whether more messages wait than a turn takes. */
  beginTurn(backlogged: boolean): void {
    this.taken.clear();
    this.limited = backlogged;
  }

  /** Whether the message from endpoint record `index` in `records` may be handled this turn. */
  admit(records: Uint8Array, index: number): boolean {
    if (!this.limited) return true;
    const key = this.sourceKey(records, index * ENDPOINT_SIZE);
    const count = (this.taken.get(key) ?? 0) + 1;
    this.taken.set(key, count);
    return count <= this.perSource;
  }

  /** FNV-1a over the IPv4 address or the IPv6 /64, seeded. */
  private sourceKey(records: Uint8Array, at: number): number {
    let v4 = true;
    for (let k = 0; k < 12 && v4; k++) v4 = records[at + k] === V4_MAPPED_PREFIX[k];
    const [from, to] = v4 ? [at + 12, at + 16] : [at, at + 8];
    let hash = (0x811c9dc5 ^ this.seed) >>> 0;
    for (let k = from; k < to; k++) hash = Math.imul(hash ^ records[k]!, 0x01000193) >>> 0;
    return v4 ? hash : hash ^ 0x80000000;
  }
}
