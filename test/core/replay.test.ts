import { describe, expect, it } from "vitest";

import { REPLAY_WINDOW_SIZE, ReplayWindow } from "../../src/core/replay.js";
import { seededNumbers } from "../support/index.js";

const W = REPLAY_WINDOW_SIZE;
/** Bits in the ring: a counter this far past another lands on the same bit. */
const RING = 8192;

type Case = [counter: number, accepted: boolean, why: string];

/** Feeds the cases to one window, in order, reporting the first that disagrees by number. */
function runTable(cases: Case[]): void {
  const window = new ReplayWindow();
  cases.forEach(([counter, accepted, why], index) => {
    expect(window.accept(counter), `case ${index + 1} (${counter}): ${why}`).toBe(accepted);
  });
}

describe("ReplayWindow", () => {
  it("is 8192 bits less one 32-bit word", () => {
    expect(REPLAY_WINDOW_SIZE).toBe(8160);
  });

  it("accepts and rejects the table of counters", () => {
    runTable([
      [0, true, "zero is the first counter of a session"],
      [0, false, "a replay of zero"],
      [1, true, "in order"],
      [2, true, "in order"],
      [10, true, "a gap: 3..9 lost or late"],
      [7, true, "late, inside the window"],
      [9, true, "late"],
      [8, true, "late"],
      [7, false, "a late one replayed"],
      [10, false, "the highest replayed"],
      [3, true, "very late, still inside"],
      [W + 20, true, "a jump that puts 20 exactly at the window's edge"],
      [20, true, "exactly REPLAY_WINDOW_SIZE below the highest: still accepted"],
      [20, false, "and not twice"],
      [19, false, "one past the edge: too old"],
      [11, false, "older still, though never seen"],
      [21, true, "just inside the edge"],
      [W + 20, false, "the highest replayed"],
      [W + 19, true, "just below the highest"],
      [W + 21, true, "just above: the window slides by one"],
      [21, false, "now exactly at the edge, and seen"],
      [20, false, "slid out of the window"],
      [22, true, "inside, never seen"],
      [W * 3, true, "a jump forward of more than a whole ring"],
      [W * 2 - 1, false, "just beyond the new edge"],
      [W * 2, true, "exactly at the new edge, never seen"],
      [W + 21, false, "accepted before the jump, now far too old"],
      [W * 3 - 1, true, "late after the jump"],
      [W * 3 + 1, true, "in order"],
      [W * 2, false, "was the edge, now one past it, and seen anyway"],
      [W * 2 + 1, true, "the new edge"],
      [0, false, "zero, long gone"],
    ]);
  });

  it("reuses ring bits only once they have left the window", () => {
    runTable([
      [40, true, "bit 8 of word 1"],
      [RING + 40, true, "the same bit one lap later: the word is cleared on the way"],
      [40, false, "too old now, though its bit was reused"],
      [RING + 39, true, "unseen, in the same recycled word"],
      [RING + 8, true, "low end of the same recycled word"],
      [RING + 40 - W, true, "exactly at the edge: the oldest word kept in the ring"],
      [RING + 39 - W, false, "one past the edge"],
      [2 * RING + 100, true, "another lap, not word-aligned"],
      [2 * RING + 100 - W, true, "the edge after it"],
      [RING + 100, false, "its last-lap twin is too old"],
      [2 * RING + 96, true, "the start of the highest counter's own word"],
      [2 * RING + 127, true, "past the highest, in the same word: nothing to clear"],
      [2 * RING + 128, true, "into the next word, which must be cleared"],
      [2 * RING + 127, false, "seen"],
    ]);
  });

  it("handles counters up to the largest safe integer", () => {
    const top = Number.MAX_SAFE_INTEGER - 1;
    runTable([
      [5, true, "a small counter first"],
      [top, true, "then the largest the caller lets through"],
      [top - 1, true, "late"],
      [top - W, true, "the edge, far up"],
      [top - W - 1, false, "past it"],
      [top, false, "replayed"],
      [5, false, "ancient"],
    ]);
  });

  it("drops counters no caller should pass", () => {
    const window = new ReplayWindow();
    expect(window.accept(-1)).toBe(false);
    expect(window.accept(1.5)).toBe(false);
    expect(window.accept(Number.NaN)).toBe(false);
    expect(window.accept(Number.MAX_SAFE_INTEGER + 1)).toBe(false);
    // None of them disturbed the state.
    expect(window.accept(0)).toBe(true);
    expect(window.accept(1)).toBe(true);
  });

  it("forgets everything on reset", () => {
    const window = new ReplayWindow();
    expect(window.accept(0)).toBe(true);
    expect(window.accept(W * 10)).toBe(true);
    window.reset();
    expect(window.accept(0)).toBe(true);
    expect(window.accept(W * 10)).toBe(true);
    expect(window.accept(W * 10)).toBe(false);
  });

  it("works from a reset before any counter (its bitmap is made at the first)", () => {
    const window = new ReplayWindow();
    window.reset();
    expect(window.accept(5)).toBe(true);
    expect(window.accept(5)).toBe(false);
    expect(window.accept(4)).toBe(true);
  });
});

/** The definition, with no bitmap: seen before, or more than W below the highest, is refused. */
class NaiveReplayWindow {
  readonly #seen = new Set<number>();
  #highest = -1;

  accept(counter: number): boolean {
    if (this.#highest - counter > W || this.#seen.has(counter)) {
      return false;
    }
    this.#seen.add(counter);
    this.#highest = Math.max(this.#highest, counter);
    return true;
  }
}

describe("ReplayWindow against a set of every counter seen", () => {
  // A sender's counter stream as a lossy, reordering, replaying path delivers it, with an
  // occasional attacker's replay of something old and an occasional far jump.
  function* deliveredCounters(random: () => number, count: number): Generator<number> {
    let next = 0;
    const recent: number[] = [];
    for (let i = 0; i < count; i++) {
      const roll = random();
      let counter: number;
      if (roll < 0.55) {
        counter = next++;
      } else if (roll < 0.75) {
        // Reordered: a bit behind or ahead of the sender, by up to about two windows.
        counter = Math.max(0, next + Math.floor((random() - 0.7) * 2.5 * W));
      } else if (roll < 0.88 && recent.length > 0) {
        counter = recent[Math.floor(random() * recent.length)]!; // a duplicate
      } else if (roll < 0.93) {
        // Right around the edge of the window, where off-by-ones live.
        counter = Math.max(0, next - W + Math.floor(random() * 70) - 35);
      } else if (roll < 0.97) {
        next += Math.floor(random() * 4 * RING); // a burst lost, or a far jump
        counter = next++;
      } else {
        counter = Math.floor(random() * next); // anything ever sent
      }
      recent.push(counter);
      if (recent.length > 64) recent.shift();
      yield counter;
    }
  }

  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`agrees on a random stream, seed ${seed}`, () => {
      const random = seededNumbers(seed);
      const window = new ReplayWindow();
      const naive = new NaiveReplayWindow();
      let accepted = 0;
      let index = 0;
      for (const counter of deliveredCounters(random, 20_000)) {
        const expected = naive.accept(counter);
        if (window.accept(counter) !== expected) {
          expect.fail(`counter #${index} (${counter}): expected ${expected}`);
        }
        if (expected) accepted++;
        index++;
      }
      // Both answers must be common, or the stream tested little.
      expect(accepted).toBeGreaterThan(5_000);
      expect(accepted).toBeLessThan(19_000);
    });
  }
});
