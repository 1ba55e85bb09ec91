// Receiver indices: the 32-bit numbers that let a datagram find its handshake or keypair
// without revealing which peer it belongs to. Chosen at random, never reused while live.
import type { RandomSource } from "./crypto.js";

export class IndexTable<T> {
  private readonly entries = new Map<number, T>();
  private readonly scratch = new Uint8Array(4);

  constructor(private readonly random: RandomSource) {}

  /** Registers `entry` under a fresh random index, retrying on collision. */
  allocate(entry: T): number {
    for (;;) {
      this.random.fill(this.scratch);
      const index =
        (this.scratch[0]! |
          (this.scratch[1]! << 8) |
          (this.scratch[2]! << 16) |
          (this.scratch[3]! << 24)) >>>
        0;
      if (!this.entries.has(index)) {
        this.entries.set(index, entry);
        return index;
      }
    }
  }

  /** Points an existing index at a new entry (a handshake's index passing to its keypair). */
  replace(index: number, entry: T): void {
    if (this.entries.has(index)) this.entries.set(index, entry);
  }

  lookup(index: number): T | undefined {
    return this.entries.get(index);
  }

  /** Removes the index only if it still belongs to `entry`. */
  remove(index: number, entry: T): void {
    if (this.entries.get(index) === entry) this.entries.delete(index);
  }

  get size(): number {
    return this.entries.size;
  }
}
