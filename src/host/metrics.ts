// Metrics and health over HTTP: Prometheus text at /metrics, liveness at /healthz, readiness
// at /readyz. Nothing here runs per packet: every value is read from the core's own counters
// when Prometheus asks. The data path pays only for the batch-size histograms, one
// typed-array increment per batch, which this module turns into text at scrape time.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import {
  Counter,
  Gauge,
  Histogram,
  Registry,
  collectDefaultMetrics,
  type MetricType,
} from "prom-client";
import type { Device } from "../core/device.js";
import { DROP_REASONS, HANDSHAKE_FAILURE_REASONS } from "../core/drops.js";
import { shortKey } from "./log.js";
import { NONCONFORMING_DEFAULT_METRICS, addWireguardExporterMetrics } from "./metrics-wireguard.js";
import { MetricsListenError } from "./errors.js";
import { REJECT_AFTER_TIME_MS } from "../core/messages.js";
import { formatEndpoint, type Endpoint } from "../core/endpoint.js";
import type { Peer } from "../core/peer.js";
import {
  DEFAULT_PEER_SERIES,
  formatListen,
  type MetricsListen,
  type PeerSeries,
} from "./metrics-listen.js";

// What the command line needs before it knows whether a server will run, kept light.
export {
  DEFAULT_METRICS_PORT,
  DEFAULT_PEER_SERIES,
  formatListen,
  parseMetricsListen,
  parsePeerSeries,
  type MetricsListen,
  type PeerSeries,
} from "./metrics-listen.js";

export {
  BATCH_SIZE_BUCKETS,
  BucketHistogram,
  DataPathObservations,
  HANDSHAKE_RTT_BUCKETS,
  HandshakeRtt,
} from "./observations.js";
import {
  BATCH_SIZE_BUCKETS,
  HANDSHAKE_RTT_BUCKETS,
  type BucketHistogram,
  type DataPathObservations,
} from "./observations.js";

/** What the metrics read: a Daemon is one; tests make one around a bare Device. */
export interface MetricsSource {
  /** The interface name, the `interface` label. */
  readonly name: string;
  readonly device: Device;
  /** True while the interface is up. */
  readonly isUp: boolean;
  readonly counters?: {
    readonly socketSendErrors: number;
    readonly tunWriteErrors: number;
    /** Transport messages the native receive thread opened (absent: no such thread). */
    readonly nativeReceived?: number;
    /** Inner packets the native thread sealed and sent (absent: no such thread). */
    readonly nativeSealed?: number;
    /** The UDP messages it sent them in (a UDP GSO run counts once). */
    readonly nativeSendMessages?: number;
  };
  readonly observations?: DataPathObservations;
  /** Parts started beside the daemon (the fleet watcher): their notes and metrics. */
  readonly extensions?: readonly MetricsExtension[];
  /** Brings the counters up to date before a scrape reads them (the native receive path). */
  beforeRead?(): void;
}

/** What a part beside the daemon adds to the probes and the metrics. */
export interface MetricsExtension {
  /** A line for /readyz's reason (it does not change the verdict); null when all is well. */
  readinessNote?(): string | null;
  registerMetrics?(add: ScrapedMetricAdder): void;
}

/** Adds a metric read at each scrape; `read` emits (labels, value) pairs. */
export type ScrapedMetricAdder = (
  type: "counter" | "gauge",
  name: string,
  help: string,
  labelNames: string[],
  read: (emit: (labels: Readonly<Record<string, string>>, value: number) => void) => void,
) => void;

/** A session that may still carry data: current keypair younger than Reject-After-Time. */
export function hasLiveSession(peer: Peer, nowMs: number): boolean {
  const current = peer.keypairs.current;
  return (
    current !== null && current.sendingValid && nowMs - current.createdAt < REJECT_AFTER_TIME_MS
  );
}

export interface Readiness {
  ready: boolean;
  reason: string;
}

/**
 * Ready: the interface is up and at least one peer has a live session, or, given
 * `readyPeers` (base64 public keys), every one of those has.
 */
export function readiness(source: MetricsSource, readyPeers: readonly string[] = []): Readiness {
  const verdict = peerReadiness(source, readyPeers);
  const notes = (source.extensions ?? []).map((e) => e.readinessNote?.()).filter((n) => !!n);
  return notes.length > 0 ? { ...verdict, reason: [verdict.reason, ...notes].join("; ") } : verdict;
}

function peerReadiness(source: MetricsSource, readyPeers: readonly string[]): Readiness {
  if (!source.isUp) return { ready: false, reason: `interface ${source.name} is not up` };
  const device = source.device;
  const now = device.clock.now();
  const seconds = REJECT_AFTER_TIME_MS / 1000;
  if (readyPeers.length > 0) {
    const missing: string[] = [];
    for (const key of readyPeers) {
      const peer = device.peers.get(key);
      if (!peer) missing.push(`${shortKey(key)} (not configured)`);
      else if (!hasLiveSession(peer, now)) missing.push(shortKey(key));
    }
    if (missing.length > 0) {
      return {
        ready: false,
        reason: `no session younger than ${seconds} s with ${missing.join(", ")}`,
      };
    }
    return { ready: true, reason: `sessions with all ${readyPeers.length} required peers` };
  }
  let live = 0;
  for (const peer of device.peers.values()) if (hasLiveSession(peer, now)) live++;
  if (live === 0) {
    return {
      ready: false,
      reason: `no peer of ${device.peers.size} has a session younger than ${seconds} s`,
    };
  }
  return { ready: true, reason: `${live} of ${device.peers.size} peers have a session` };
}

// --- the registry ------------------------------------------------------------------------
//
// prom-client's Counter and Gauge keep a hash map of label sets that `collect()` would refill
// at every scrape (a hash and a label check per series: 3 µs each, 15 ms a metric at 5,000
// peers), and its Histogram can only be observed into. The metrics below are prom-client
// metrics that produce their samples straight from the core's counters instead. Each sample
// carries its labels as one object per peer, made once and kept: prom-client's registry
// formats such "shared labels" once per object and caches the text, which makes writing the
// text several times cheaper too.

type Labels = Readonly<Record<string, string>>;
type Emit = (labels: Labels, value: number) => void;
type Read = (emit: Emit) => void;

/** A sample as prom-client's registry writes it (`sharedLabels` is not in its typings). */
interface Sample {
  metricName?: string;
  labels: Labels;
  sharedLabels: Labels;
  value: number;
}

type MetricObject = Awaited<ReturnType<Histogram["get"]>>;
const NO_LABELS: Labels = Object.freeze({});

/** The samples of one metric, as text wants them (`forText`) and as JSON wants them. */
class Samples {
  constructor(
    private readonly name: string,
    private readonly help: string,
    // prom-client's typings declare MetricType as a numeric enum; at run time it is a string.
    private readonly type: "counter" | "gauge" | "histogram",
    private readonly fill: (out: Sample[]) => void,
  ) {}

  forText(): Omit<MetricObject, "values"> & { values: Sample[] } {
    const values: Sample[] = [];
    this.fill(values);
    return this.object(values);
  }

  /** For prom-client's JSON: the labels of each sample in one object. */
  forJson(): MetricObject {
    const values: Sample[] = [];
    this.fill(values);
    return this.object(
      values.map(({ metricName, labels, sharedLabels, value }) => ({
        ...(metricName ? { metricName } : {}),
        labels: { ...labels, ...sharedLabels },
        value,
      })),
    );
  }

  private object<T>(values: T[]): Omit<MetricObject, "values"> & { values: T[] } {
    const type = this.type as unknown as MetricType;
    return { name: this.name, help: this.help, type, aggregator: "sum", collect: () => {}, values };
  }
}

function plainSamples(read: Read): (out: Sample[]) => void {
  return (out) =>
    read((labels, value) => out.push({ labels: NO_LABELS, sharedLabels: labels, value }));
}

/** A counter whose values are read from the core's counters at each scrape. */
class ScrapedCounter extends Counter<string> {
  private readonly samples: Samples;

  constructor(registry: Registry, name: string, help: string, labelNames: string[], read: Read) {
    super({ name, help, labelNames, registers: [registry] });
    this.samples = new Samples(name, help, "counter", plainSamples(read));
  }

  override async get(): Promise<MetricObject> {
    return this.samples.forJson();
  }

  /** What the registry asks for when it writes text (not in prom-client's typings). */
  async getForPromString(): Promise<ReturnType<Samples["forText"]>> {
    return this.samples.forText();
  }
}

/** A gauge whose values are read at each scrape. */
class ScrapedGauge extends Gauge<string> {
  private readonly samples: Samples;

  constructor(registry: Registry, name: string, help: string, labelNames: string[], read: Read) {
    super({ name, help, labelNames, registers: [registry] });
    this.samples = new Samples(name, help, "gauge", plainSamples(read));
  }

  override async get(): Promise<MetricObject> {
    return this.samples.forJson();
  }

  async getForPromString(): Promise<ReturnType<Samples["forText"]>> {
    return this.samples.forText();
  }
}

/** A histogram whose buckets live in {@link BucketHistogram}s, filled by the data path. */
class ScrapedHistogram extends Histogram<string> {
  private readonly samples: Samples;

  constructor(
    registry: Registry,
    name: string,
    help: string,
    labelNames: string[],
    bounds: readonly number[],
    series: (emit: (labels: Labels, histogram: BucketHistogram) => void) => void,
  ) {
    super({ name, help, labelNames, buckets: [...bounds], registers: [registry] });
    const le = [...bounds.map(String), "+Inf"];
    // Each series' bucket labels, `le` included, made once: their text is cached by object.
    const bucketLabels = new WeakMap<Labels, Labels[]>();
    const bucketLabelsOf = (labels: Labels): Labels[] => {
      let each = bucketLabels.get(labels);
      if (!each) {
        each = le.map((bound) => ({ ...labels, le: bound }));
        bucketLabels.set(labels, each);
      }
      return each;
    };
    const bucket = `${name}_bucket`;
    const sum = `${name}_sum`;
    const count = `${name}_count`;
    this.samples = new Samples(name, help, "histogram", (out) =>
      series((labels, histogram) => {
        const each = bucketLabelsOf(labels);
        let cumulative = 0;
        for (let i = 0; i < le.length; i++) {
          cumulative += histogram.counts[i]!;
          out.push({
            metricName: bucket,
            labels: NO_LABELS,
            sharedLabels: each[i]!,
            value: cumulative,
          });
        }
        out.push({
          metricName: sum,
          labels: NO_LABELS,
          sharedLabels: labels,
          value: histogram.sum,
        });
        out.push({ metricName: count, labels: NO_LABELS, sharedLabels: labels, value: cumulative });
      }),
    );
  }

  override async get(): Promise<MetricObject> {
    return this.samples.forJson();
  }

  async getForPromString(): Promise<ReturnType<Samples["forText"]>> {
    return this.samples.forText();
  }
}

/**
 * How often prom-client samples event-loop delay for `nodejs_eventloop_lag_*`. Its default,
 * 10 ms, is a timer that wakes an idle daemon 100 times a second: ~7 ms of CPU per second,
 * measured, thirty times what the daemon itself spends idle. A sample a second still shows a
 * loop that lags; the watchdog behind /healthz keeps its own timer.
 */
const EVENT_LOOP_SAMPLE_MS = 1000;

export interface RegistryOptions {
  /** Per-peer series: see {@link PeerSeries}; default {@link DEFAULT_PEER_SERIES}. */
  peerSeries?: PeerSeries;
  /** prom-client's process and Node.js metrics (CPU, memory, event-loop lag, GC); default on. */
  defaultMetrics?: boolean;
  /** Adds `edgetun_event_loop_lag_seconds`, the figure /healthz decides on. */
  watchdog?: EventLoopWatchdog;
}

/** Every metric, each read from `source` when scraped. */
export function createMetricsRegistry(
  source: MetricsSource,
  options: RegistryOptions = {},
): Registry {
  const registry = new Registry();
  if (options.defaultMetrics ?? true) {
    collectDefaultMetrics({
      register: registry,
      eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS,
    });
    for (const name of NONCONFORMING_DEFAULT_METRICS) registry.removeSingleMetric(name);
  }
  const device = source.device;
  // Label objects are made once and reused (see above): per interface, reason, peer.
  const interfaceLabels: Labels = { interface: source.name };
  const iface = (): Labels => interfaceLabels;
  const byInterface = ["interface"];
  const byPeer = ["interface", "public_key"];
  const labelsOfPeer = new WeakMap<Peer, Labels>();
  const peerLabels = (peer: Peer): Labels => {
    let labels = labelsOfPeer.get(peer);
    if (!labels) {
      labels = { interface: source.name, public_key: peer.publicKeyBase64 };
      labelsOfPeer.set(peer, labels);
    }
    return labels;
  };
  const endpointLabelsOfPeer = new WeakMap<Peer, { endpoint: Endpoint; labels: Labels }>();
  const endpointLabels = (peer: Peer, endpoint: Endpoint): Labels => {
    const known = endpointLabelsOfPeer.get(peer);
    if (known?.endpoint === endpoint) return known.labels;
    const labels = { ...peerLabels(peer), endpoint: formatEndpoint(endpoint) };
    endpointLabelsOfPeer.set(peer, { endpoint, labels });
    return labels;
  };
  const reasonLabels = new Map(
    DROP_REASONS.map((reason) => [reason, { interface: source.name, reason }]),
  );
  const sumOverPeers = (field: PeerCounter): number => {
    let total = 0;
    for (const peer of device.peers.values()) total += peer[field];
    return total;
  };
  const interfaceTotal = (name: string, help: string, field: PeerCounter): void => {
    new ScrapedCounter(registry, name, help, byInterface, (emit) =>
      emit(iface(), sumOverPeers(field)),
    );
  };
  const limit = options.peerSeries ?? DEFAULT_PEER_SERIES;
  let chosen: Peer[] = [];
  let chosenAt = -Infinity;
  /** The peers with series of their own at this scrape. */
  const seriesPeers = (): Iterable<Peer> => {
    if (limit === "all" || (limit !== "none" && device.peers.size <= limit)) {
      return device.peers.values();
    }
    if (limit === "none" || limit === 0) return [];
    const now = performance.now();
    if (now - chosenAt > 1000) {
      chosen = [...device.peers.values()]
        .sort((a, b) => b.rxBytes + b.txBytes - (a.rxBytes + a.txBytes))
        .slice(0, limit);
      chosenAt = now;
    }
    return chosen;
  };
  const perPeer = (name: string, help: string, field: PeerCounter): void => {
    new ScrapedCounter(registry, name, help, byPeer, (emit) => {
      for (const peer of seriesPeers()) emit(peerLabels(peer), peer[field]);
    });
  };
  new ScrapedGauge(
    registry,
    "edgetun_peer_series_omitted",
    "Peers left out of the per-peer series (--metrics-peers); interface totals count them.",
    byInterface,
    (emit) => {
      const shown =
        limit === "all"
          ? device.peers.size
          : limit === "none"
            ? 0
            : Math.min(limit, device.peers.size);
      emit(iface(), device.peers.size - shown);
    },
  );
  const stat = (name: string, help: string, field: DeviceCounter): void => {
    new ScrapedCounter(registry, name, help, byInterface, (emit) =>
      emit(iface(), device.stats[field]),
    );
  };

  // --- the interface
  new ScrapedGauge(
    registry,
    "edgetun_interface_up",
    "1 while the interface is up, else 0.",
    byInterface,
    (emit) => emit(iface(), source.isUp ? 1 : 0),
  );
  new ScrapedGauge(
    registry,
    "edgetun_peers",
    "Peers configured on the interface.",
    byInterface,
    (emit) => emit(iface(), device.peers.size),
  );
  new ScrapedGauge(
    registry,
    "edgetun_peers_with_session",
    "Peers whose current session is younger than Reject-After-Time (180 s).",
    byInterface,
    (emit) => {
      const now = device.clock.now();
      let live = 0;
      for (const peer of device.peers.values()) if (hasLiveSession(peer, now)) live++;
      emit(iface(), live);
    },
  );
  interfaceTotal(
    "edgetun_rx_packets_total",
    "Inner packets received from peers and passed to the tunnel interface.",
    "rxPackets",
  );
  interfaceTotal(
    "edgetun_tx_packets_total",
    "Inner packets from the tunnel interface sent to peers.",
    "txPackets",
  );
  interfaceTotal(
    "edgetun_rx_payload_bytes_total",
    "Bytes of the inner packets received from peers (IP header included).",
    "rxPayloadBytes",
  );
  interfaceTotal(
    "edgetun_tx_payload_bytes_total",
    "Bytes of the inner packets sent to peers (IP header included).",
    "txPayloadBytes",
  );
  interfaceTotal(
    "edgetun_rx_wire_bytes_total",
    "UDP payload bytes of authenticated messages received (handshakes, data, keepalives), as wg show counts them.",
    "rxBytes",
  );
  interfaceTotal(
    "edgetun_tx_wire_bytes_total",
    "UDP payload bytes sent to peers (handshakes, data, keepalives), as wg show counts them.",
    "txBytes",
  );
  new ScrapedCounter(
    registry,
    "edgetun_dropped_packets_total",
    "Packets and datagrams dropped, by reason (see src/core/drops.ts).",
    ["interface", "reason"],
    (emit) => {
      for (const reason of DROP_REASONS) {
        emit(reasonLabels.get(reason)!, device.stats.drops[reason]);
      }
    },
  );
  stat(
    "edgetun_handshake_initiations_sent_total",
    "Handshake initiations sent (first attempts and retries).",
    "handshakeInitiationsSent",
  );
  stat(
    "edgetun_handshake_initiations_received_total",
    "Handshake initiations received that passed mac1 (and the cookie check under load).",
    "handshakeInitiationsReceived",
  );
  stat(
    "edgetun_handshake_responses_sent_total",
    "Handshake responses sent.",
    "handshakeResponsesSent",
  );
  stat(
    "edgetun_handshake_responses_received_total",
    "Handshake responses received that passed mac1 (and the cookie check under load).",
    "handshakeResponsesReceived",
  );
  stat(
    "edgetun_handshakes_completed_total",
    "Handshakes completed: as initiator on the response, as responder on the first data.",
    "handshakesCompleted",
  );
  new ScrapedCounter(
    registry,
    "edgetun_handshakes_failed_total",
    `Handshake messages refused: the sum of the drop reasons ${HANDSHAKE_FAILURE_REASONS.join(", ")}.`,
    byInterface,
    (emit) => {
      let failed = 0;
      for (const reason of HANDSHAKE_FAILURE_REASONS) failed += device.stats.drops[reason];
      emit(iface(), failed);
    },
  );
  stat(
    "edgetun_cookie_replies_sent_total",
    "Cookie replies sent (under load, instead of doing Diffie-Hellman).",
    "cookieRepliesSent",
  );
  stat(
    "edgetun_cookie_replies_received_total",
    "Cookie replies received and accepted.",
    "cookieRepliesReceived",
  );
  new ScrapedGauge(
    registry,
    "edgetun_under_load",
    "1 while the interface asks handshake senders for cookies (too many handshakes), else 0.",
    byInterface,
    (emit) => emit(iface(), device.underLoad ? 1 : 0),
  );
  const counters = source.counters;
  if (counters) {
    new ScrapedCounter(
      registry,
      "edgetun_socket_send_errors_total",
      "Datagrams the UDP socket would not take (send buffer full, network unreachable).",
      byInterface,
      (emit) => emit(iface(), counters.socketSendErrors),
    );
    new ScrapedCounter(
      registry,
      "edgetun_tun_write_errors_total",
      "Packets the tunnel interface would not take.",
      byInterface,
      (emit) => emit(iface(), counters.tunWriteErrors),
    );
    new ScrapedCounter(
      registry,
      "edgetun_native_received_messages_total",
      "Transport messages opened on the native receive thread, not the JS thread.",
      byInterface,
      (emit) => emit(iface(), counters.nativeReceived ?? 0),
    );
    new ScrapedCounter(
      registry,
      "edgetun_native_sealed_messages_total",
      "Inner packets sealed and sent on the native data-path thread, not the JS thread.",
      byInterface,
      (emit) => emit(iface(), counters.nativeSealed ?? 0),
    );
    new ScrapedCounter(
      registry,
      "edgetun_native_udp_sends_total",
      "UDP messages the native thread sent its sealed packets in; a run sent as one UDP GSO message counts once.",
      byInterface,
      (emit) => emit(iface(), counters.nativeSendMessages ?? 0),
    );
  }
  const observations = source.observations;
  if (observations) {
    const operations: Array<[Labels, BucketHistogram]> = [
      [{ interface: source.name, operation: "tun_read" }, observations.tunRead],
      [{ interface: source.name, operation: "udp_receive" }, observations.udpReceive],
      [{ interface: source.name, operation: "udp_send" }, observations.udpSend],
      [{ interface: source.name, operation: "tun_write" }, observations.tunWrite],
    ];
    new ScrapedHistogram(
      registry,
      "edgetun_batch_packets",
      "Packets moved per call, by operation: TUN read, UDP receive (recvmmsg), UDP send (sendmmsg), TUN write.",
      ["interface", "operation"],
      BATCH_SIZE_BUCKETS,
      (emit) => {
        for (const [labels, histogram] of operations) emit(labels, histogram);
      },
    );
  }
  const watchdog = options.watchdog;
  if (watchdog) {
    new ScrapedGauge(
      registry,
      "edgetun_event_loop_lag_seconds",
      "How late the health timer last ran: /healthz fails above its threshold.",
      [],
      (emit) => emit(NO_LABELS, watchdog.lagMs() / 1000),
    );
  }

  // --- per peer
  perPeer("edgetun_peer_rx_packets_total", "Inner packets received from the peer.", "rxPackets");
  perPeer("edgetun_peer_tx_packets_total", "Inner packets sent to the peer.", "txPackets");
  perPeer(
    "edgetun_peer_rx_payload_bytes_total",
    "Bytes of inner packets received from the peer.",
    "rxPayloadBytes",
  );
  perPeer(
    "edgetun_peer_tx_payload_bytes_total",
    "Bytes of inner packets sent to the peer.",
    "txPayloadBytes",
  );
  perPeer(
    "edgetun_peer_rx_wire_bytes_total",
    "UDP payload bytes of authenticated messages received from the peer (wg show's received).",
    "rxBytes",
  );
  perPeer(
    "edgetun_peer_tx_wire_bytes_total",
    "UDP payload bytes sent to the peer (wg show's sent).",
    "txBytes",
  );
  perPeer(
    "edgetun_peer_keepalives_sent_total",
    "Keepalives (empty data messages) sent to the peer.",
    "keepalivesSent",
  );
  perPeer(
    "edgetun_peer_keepalives_received_total",
    "Keepalives received from the peer.",
    "keepalivesReceived",
  );
  perPeer(
    "edgetun_peer_endpoint_changes_total",
    "Times the peer's endpoint moved to a new address (roaming).",
    "endpointChanges",
  );
  new ScrapedGauge(
    registry,
    "edgetun_peer_latest_handshake_seconds",
    "Unix time of the peer's latest completed handshake, in seconds; 0 when none.",
    byPeer,
    (emit) => {
      for (const peer of seriesPeers()) {
        emit(peerLabels(peer), Math.floor(peer.lastHandshakeWallMs / 1000));
      }
    },
  );
  new ScrapedGauge(
    registry,
    "edgetun_peer_endpoint_info",
    "The peer's current endpoint, as a label; always 1. Peers without an endpoint are absent.",
    ["interface", "public_key", "endpoint"],
    (emit) => {
      for (const peer of seriesPeers()) {
        if (peer.endpoint) {
          emit(endpointLabels(peer, peer.endpoint), 1);
        }
      }
    },
  );
  const rtt = observations?.handshakeRtt;
  if (rtt) {
    new ScrapedHistogram(
      registry,
      "edgetun_peer_handshake_rtt_seconds",
      "Time from sending a handshake initiation to consuming its response, for sessions this side initiated.",
      byPeer,
      HANDSHAKE_RTT_BUCKETS,
      (emit) => {
        for (const peer of seriesPeers()) {
          rtt.notice(peer);
          const histogram = rtt.of(peer);
          if (histogram) emit(peerLabels(peer), histogram);
        }
      },
    );
  }
  const addScraped: ScrapedMetricAdder = (type, name, help, labelNames, read) => {
    if (type === "counter") new ScrapedCounter(registry, name, help, labelNames, read);
    else new ScrapedGauge(registry, name, help, labelNames, read);
  };
  for (const extension of source.extensions ?? []) extension.registerMetrics?.(addScraped);
  addWireguardExporterMetrics(registry, source.name, device, {
    counter: (...args) => new ScrapedCounter(...args),
    gauge: (...args) => new ScrapedGauge(...args),
  });
  return registry;
}

type PeerCounter =
  | "rxPackets"
  | "txPackets"
  | "rxPayloadBytes"
  | "txPayloadBytes"
  | "rxBytes"
  | "txBytes"
  | "keepalivesSent"
  | "keepalivesReceived"
  | "endpointChanges";

type DeviceCounter =
  | "handshakeInitiationsSent"
  | "handshakeInitiationsReceived"
  | "handshakeResponsesSent"
  | "handshakeResponsesReceived"
  | "handshakesCompleted"
  | "cookieRepliesSent"
  | "cookieRepliesReceived";

/**
 * The registry as Prometheus text, one metric at a time with a turn of the event loop in
 * between: with thousands of peers, packets keep moving while a scrape is written.
 */
export async function renderMetrics(registry: Registry): Promise<string> {
  const parts: string[] = [];
  for (const metric of registry.getMetricsAsArray()) {
    parts.push(await registry.getSingleMetricAsString(metric.name));
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return `${parts.join("\n\n")}\n`;
}

// --- health ------------------------------------------------------------------------------

/**
 * Measures event-loop lag with a timer: how late it fires. A loop that is blocked right now
 * shows as the time since the timer last ran, so a probe answered after a stall sees it.
 */
export class EventLoopWatchdog {
  private lastTickAt: number;
  private lastLagMs = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly intervalMs = 500,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.lastTickAt = now();
    this.timer = setInterval(() => this.tick(), intervalMs);
    this.timer.unref();
  }

  private tick(): void {
    const now = this.now();
    this.lastLagMs = Math.max(0, now - this.lastTickAt - this.intervalMs);
    this.lastTickAt = now;
  }

  lagMs(): number {
    return Math.max(this.lastLagMs, this.now() - this.lastTickAt - this.intervalMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

// --- the HTTP server ---------------------------------------------------------------------

export interface MetricsServerOptions extends MetricsListen {
  /** Base64 public keys that must all have a session for /readyz; empty: any one peer. */
  readyPeers?: readonly string[];
  /** /healthz fails when the event loop lags more than this (default 5 s). */
  maxEventLoopLagMs?: number;
  /** prom-client's process and Node.js metrics; default on. */
  defaultMetrics?: boolean;
  /** Which peers get series of their own; default {@link DEFAULT_PEER_SERIES}. */
  peerSeries?: PeerSeries;
}

/** `host:port` for messages and URLs, IPv6 in brackets. */

export class MetricsServer {
  private constructor(
    private readonly server: Server,
    private readonly watchdog: EventLoopWatchdog,
    readonly registry: Registry,
    /** Where it listens (the port the system chose when 0 was asked for). */
    readonly address: MetricsListen,
  ) {}

  /**
   * Listens on host:port. An address that cannot be had (in use, not local, not allowed)
   * rejects with a MetricsListenError that names it and the way out.
   */
  static async listen(
    source: MetricsSource,
    options: MetricsServerOptions,
  ): Promise<MetricsServer> {
    const watchdog = new EventLoopWatchdog();
    const registry = createMetricsRegistry(source, {
      watchdog,
      defaultMetrics: options.defaultMetrics ?? true,
      ...(options.peerSeries !== undefined ? { peerSeries: options.peerSeries } : {}),
    });
    const maxLagMs = options.maxEventLoopLagMs ?? 5_000;
    const readyPeers = options.readyPeers ?? [];
    const server = createServer((request, response) => {
      handle(request, response, { source, registry, watchdog, maxLagMs, readyPeers });
    });
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ host: options.host, port: options.port }, () => {
          server.off("error", reject);
          resolve();
        });
      });
    } catch (error) {
      watchdog.stop();
      const code = (error as NodeJS.ErrnoException).code ?? "ERR_METRICS_LISTEN";
      const why =
        code === "EADDRINUSE"
          ? "the address is in use"
          : code === "EADDRNOTAVAIL"
            ? "the address is not on this host"
            : code === "EACCES"
              ? "permission denied"
              : (error as Error).message;
      throw new MetricsListenError(
        code,
        `cannot serve metrics on ${formatListen(options)}: ${why} (${code}); choose another ` +
          "address with --metrics-listen HOST:PORT, or turn metrics off with --metrics-listen off",
      );
    }
    const bound = server.address();
    const port = typeof bound === "object" && bound ? bound.port : options.port;
    return new MetricsServer(server, watchdog, registry, { host: options.host, port });
  }

  get url(): string {
    return `http://${formatListen(this.address)}`;
  }

  async close(): Promise<void> {
    this.watchdog.stop();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

function handle(
  request: IncomingMessage,
  response: ServerResponse,
  context: {
    source: MetricsSource;
    registry: Registry;
    watchdog: EventLoopWatchdog;
    maxLagMs: number;
    readyPeers: readonly string[];
  },
): void {
  const path = (request.url ?? "/").split("?", 1)[0];
  const known = path === "/metrics" || path === "/healthz" || path === "/readyz";
  if (!known) {
    reply(response, request, 404, "not found: try /metrics, /healthz or /readyz\n");
    return;
  }
  if (request.method !== "GET" && request.method !== "HEAD") {
    response.setHeader("Allow", "GET, HEAD");
    reply(response, request, 405, "method not allowed\n");
    return;
  }
  if (path === "/healthz") {
    const lagMs = context.watchdog.lagMs();
    if (lagMs > context.maxLagMs) {
      reply(response, request, 503, `event loop blocked for ${Math.round(lagMs)} ms\n`);
    } else {
      reply(response, request, 200, "ok\n");
    }
    return;
  }
  if (path === "/readyz") {
    const { ready, reason } = readiness(context.source, context.readyPeers);
    reply(response, request, ready ? 200 : 503, `${reason}\n`);
    return;
  }
  context.source.beforeRead?.();
  renderMetrics(context.registry).then(
    (text) => reply(response, request, 200, text, context.registry.contentType),
    (error: Error) =>
      reply(response, request, 500, `collecting metrics failed: ${error.message}\n`),
  );
}

function reply(
  response: ServerResponse,
  request: IncomingMessage,
  status: number,
  body: string,
  contentType = "text/plain; charset=utf-8",
): void {
  response.statusCode = status;
  response.setHeader("Content-Type", contentType);
  response.setHeader("Content-Length", Buffer.byteLength(body));
  response.setHeader("Cache-Control", "no-store");
  response.end(request.method === "HEAD" ? undefined : body);
}
