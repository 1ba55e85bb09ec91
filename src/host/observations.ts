// What the data path observes for the metrics (batch sizes, handshake round trips): typed-array
// increments the daemon makes per batch. Apart from metrics.ts so that the daemon loads without
// prom-client, which metrics.ts loads only when a metrics server starts (issue 14).
import type { Keypair } from "../core/noise.js";
import type { Peer } from "../core/peer.js";

/** Packets per batch: powers of two up to the daemon's batch of 128. */
export const BATCH_SIZE_BUCKETS: readonly number[] = [1, 2, 4, 8, 16, 32, 64, 128];
/** Seconds from sending an initiation to consuming its response. */
export const HANDSHAKE_RTT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
/**
 * Counts of observations in fixed buckets: `counts[i]` holds values in (bounds[i-1],
 * bounds[i]], the last slot those above every bound. Not cumulative; that is done at scrape.
 */
export class BucketHistogram {
  readonly counts: Float64Array;
  sum = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    this.observeMany(value, 1);
  }

  /** `times` observations of `value` (what another thread counted, carried over at once). */
  observeMany(value: number, times: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i]! += times;
    this.sum += value * times;
  }
}

/**
 * Handshake round-trip times of the sessions we initiated, per peer. A new initiator session
 * is noticed once (by its keypair): its age at creation minus the time its initiation left.
 * The daemon calls `notice` as a response completes a handshake; a scrape calls it for every
 * peer too, which catches sessions made outside the daemon (tests) and costs nothing twice.
 */
export class HandshakeRtt {
  private readonly seen = new WeakMap<Peer, Keypair>();
  private readonly histograms = new WeakMap<Peer, BucketHistogram>();

  notice(peer: Peer): void {
    const keypair = peer.keypairs.current;
    if (!keypair || !keypair.isInitiator || this.seen.get(peer) === keypair) return;
    this.seen.set(peer, keypair);
    // The initiation is the last handshake message we sent before an initiator session:
    // answering the peer's own initiation would have replaced our handshake state.
    const rttMs = keypair.createdAt - peer.lastSentHandshakeAt;
    if (!(rttMs >= 0) || !Number.isFinite(rttMs)) return;
    let histogram = this.histograms.get(peer);
    if (!histogram) {
      histogram = new BucketHistogram(HANDSHAKE_RTT_BUCKETS);
      this.histograms.set(peer, histogram);
    }
    histogram.observe(rttMs / 1000);
  }

  of(peer: Peer): BucketHistogram | undefined {
    return this.histograms.get(peer);
  }
}

/** What the daemon observes on its batches, for the metrics to read. */
export class DataPathObservations {
  readonly tunRead = new BucketHistogram(BATCH_SIZE_BUCKETS);
  readonly udpReceive = new BucketHistogram(BATCH_SIZE_BUCKETS);
  readonly udpSend = new BucketHistogram(BATCH_SIZE_BUCKETS);
  readonly tunWrite = new BucketHistogram(BATCH_SIZE_BUCKETS);
  readonly handshakeRtt = new HandshakeRtt();

  /** The device's handshake-completed hook: the RTT of a session this side initiated. */
  handshakeCompleted(peer: Peer): void {
    this.handshakeRtt.notice(peer);
  }
}
