// The three per-peer series of prometheus_wireguard_exporter, under its names and labels, so
// that dashboards and alerts written for it (and for kernel WireGuard hosts it scrapes) show
// edgetun hosts unchanged: wireguard_sent_bytes_total, wireguard_received_bytes_total and
// wireguard_latest_handshake_seconds, labelled interface, public_key (the peer's) and
// allowed_ips (the peer's prefixes joined by commas, as `wg show` lists them). The values are
// the `transfer` and `latest handshake` of `wg show`, the same as edgetun_peer_*_wire_bytes_total
// and edgetun_peer_latest_handshake_seconds.
import type { Registry } from "prom-client";
import { formatCidr } from "../core/ipaddr.js";
import type { Device } from "../core/device.js";
import type { Peer } from "../core/peer.js";

type Labels = Record<string, string>;
type Emit = (labels: Labels, value: number) => void;

/** Makes a metric in `registry` whose values `read` emits at each scrape. */
type ScrapedMetricMaker = (
  registry: Registry,
  name: string,
  help: string,
  labelNames: string[],
  read: (emit: Emit) => void,
) => void;

export const WIREGUARD_EXPORTER_LABELS = ["interface", "public_key", "allowed_ips"];

/** The label set of each peer, remade only when its allowed IPs change. */
export function wireguardPeerLabels(interfaceName: string, device: Device): (peer: Peer) => Labels {
  const cache = new WeakMap<Peer, { allowedIps: string; labels: Labels }>();
  return (peer) => {
    const allowedIps = device.allowedIps
      .entriesFor(peer)
      .map(({ address, cidr }) => formatCidr(address, cidr))
      .join(",");
    const known = cache.get(peer);
    if (known?.allowedIps === allowedIps) return known.labels;
    const labels = {
      interface: interfaceName,
      public_key: peer.publicKeyBase64,
      allowed_ips: allowedIps,
    };
    cache.set(peer, { allowedIps, labels });
    return labels;
  };
}

/** The exporter's metrics, given the registry's own scraped-metric constructors. */
export function addWireguardExporterMetrics(
  registry: Registry,
  interfaceName: string,
  device: Device,
  metric: { counter: ScrapedMetricMaker; gauge: ScrapedMetricMaker },
): void {
  const labelsOf = wireguardPeerLabels(interfaceName, device);
  metric.counter(
    registry,
    "wireguard_sent_bytes_total",
    "Bytes sent to the peer (wg show transfer); prometheus_wireguard_exporter's name.",
    WIREGUARD_EXPORTER_LABELS,
    (emit) => {
      for (const peer of device.peers.values()) emit(labelsOf(peer), peer.txBytes);
    },
  );
  metric.counter(
    registry,
    "wireguard_received_bytes_total",
    "Bytes received from the peer (wg show transfer); prometheus_wireguard_exporter's name.",
    WIREGUARD_EXPORTER_LABELS,
    (emit) => {
      for (const peer of device.peers.values()) emit(labelsOf(peer), peer.rxBytes);
    },
  );
  metric.gauge(
    registry,
    "wireguard_latest_handshake_seconds",
    "Unix time of the latest handshake with the peer, 0 when none; prometheus_wireguard_exporter's name.",
    WIREGUARD_EXPORTER_LABELS,
    (emit) => {
      for (const peer of device.peers.values()) {
        emit(labelsOf(peer), Math.floor(peer.lastHandshakeWallMs / 1000));
      }
    },
  );
}

/**
 * prom-client's default metrics whose names end in `_total` although they are gauges;
 * `promtool check metrics` rejects them. Their values stay available under the names
 * without the suffix (nodejs_active_handles and so on).
 */
export const NONCONFORMING_DEFAULT_METRICS = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
];
