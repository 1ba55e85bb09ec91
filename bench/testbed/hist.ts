// A latency histogram with logarithmic buckets (2 % wide, 1 µs to 1,000 s), small enough to
// pass between processes as JSON and merge exactly: each load generator sends its own, the
// testbed adds them up and reads percentiles over all requests of a step.
const GROWTH = 1.02;
const LOG_GROWTH = Math.log(GROWTH);

export type HistogramJson = Array<[number, number]>;

export class Histogram {
  private readonly counts = new Map<number, number>();
  count = 0;
  sumMs = 0;
  maxMs = 0;

  record(ms: number): void {
    const us = Math.max(1, ms * 1000);
    const bucket = Math.min(1400, Math.ceil(Math.log(us) / LOG_GROWTH));
    this.counts.set(bucket, (this.counts.get(bucket) ?? 0) + 1);
    this.count++;
    this.sumMs += ms;
    if (ms > this.maxMs) this.maxMs = ms;
  }

  toJSON(): HistogramJson {
    return [...this.counts.entries()];
  }

  merge(buckets: HistogramJson, sumMs: number, maxMs: number): void {
    for (const [bucket, n] of buckets) {
      this.counts.set(bucket, (this.counts.get(bucket) ?? 0) + n);
      this.count += n;
    }
    this.sumMs += sumMs;
    this.maxMs = Math.max(this.maxMs, maxMs);
  }

  /** The value at quantile q (0..1), to within 2 %: the upper edge of its bucket, in ms. */
  quantileMs(q: number): number {
    if (this.count === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (const bucket of [...this.counts.keys()].sort((a, b) => a - b)) {
      seen += this.counts.get(bucket)!;
      if (seen >= rank) return Math.min(GROWTH ** bucket / 1000, this.maxMs);
    }
    return this.maxMs;
  }

  get meanMs(): number {
    return this.count === 0 ? Number.NaN : this.sumMs / this.count;
  }
}
