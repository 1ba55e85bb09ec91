/**
 * Anti-replay window for the 64-bit counters of transport data messages (RFC 6479's sliding
 * bitmap, sized as in the Linux driver).
 *
 * UDP reorders packets, so a receiver cannot demand strictly increasing counters; it accepts
 * any counter it has not seen that is no more than REPLAY_WINDOW_SIZE below the highest one
 * accepted so far. Call `accept` only after the packet has been authenticated: otherwise a
 * forged packet with a huge counter would slide the window forward and make the peer's real
 * traffic look old.
 */

const BITS_PER_WORD = 32;
/** 8192 bits of history: what the kernel keeps, and far more reordering than a path makes. */
const RING_BITS = 8192;
const RING_WORDS = RING_BITS / BITS_PER_WORD;

/**
 * How far below the highest accepted counter a counter may be and still be accepted. The ring
 * holds the word of the highest counter and the 255 words before it; the highest counter can
 * sit anywhere in its word, so only 255 words (8160 counters) of history are guaranteed. The
 * same reasoning gives the kernel's 8192 - 64 with its 64-bit words.
 */
export const REPLAY_WINDOW_SIZE = RING_BITS - BITS_PER_WORD;

export class ReplayWindow {
  /**
   * Bit `c % 32` of word `floor(c / 32) % RING_WORDS` records counter `c`. Only words for
   * counters within reach of the window are meaningful; the rest are cleared as the window
   * slides over them. Made at the first counter: a keypair whose data the native receive
   * thread opens never uses this one, and a hub holds thousands of keypairs (1 KiB each).
   */
  #seen: Uint32Array | null = null;
  /** Highest counter accepted, or -1 before the first. */
  #highest = -1;

  /** Returns true and records the counter if it is new and not too old; false otherwise. */
  accept(counter: number): boolean {
    // The caller bounds counters; anything else here is a decoding bug, and dropping the
    // packet is the safe answer.
    if (!Number.isSafeInteger(counter) || counter < 0) {
      return false;
    }
    if (this.#highest - counter > REPLAY_WINDOW_SIZE) {
      return false;
    }
    // Exact for any safe integer: division by a power of two does not round.
    const wordIndex = Math.floor(counter / BITS_PER_WORD);
    const seen = (this.#seen ??= new Uint32Array(RING_WORDS));
    if (counter > this.#highest) {
      // Clear the words the window slides onto: they still hold bits from counters one or
      // more laps of the ring ago. Words already in the window keep their history. Bounded by
      // the ring size, so a far jump costs the same as a jump by exactly one ring.
      const highestWordIndex = Math.floor(this.#highest / BITS_PER_WORD);
      const wordsToClear = Math.min(wordIndex - highestWordIndex, RING_WORDS);
      for (let i = 1; i <= wordsToClear; i++) {
        seen[(highestWordIndex + i) % RING_WORDS] = 0;
      }
      this.#highest = counter;
    }
    const ringIndex = wordIndex % RING_WORDS;
    const bit = 1 << (counter % BITS_PER_WORD);
    const word = seen[ringIndex]!;
    if ((word & bit) !== 0) {
      return false;
    }
    seen[ringIndex] = word | bit;
    return true;
  }

  /** Forgets everything: for a new keypair, whose counters start again at zero. */
  reset(): void {
    this.#seen?.fill(0);
    this.#highest = -1;
  }
}
