// Where the metrics server listens and which peers get series of their own, as the command line
// names them. Apart from metrics.ts (which loads prom-client and the HTTP server) so that
// parsing `--metrics-listen` and `--metrics-peers` costs nothing when the command is not `up`.

/**
 * Where `edgetun up` serves metrics unless told otherwise. Not 9586, the port of
 * prometheus_wireguard_exporter, so that both can run on one host.
 */
export const DEFAULT_METRICS_PORT = 9825;

export interface MetricsListen {
  host: string;
  port: number;
}

/** `--metrics-listen`: `HOST:PORT` (`[v6]:PORT`), or `off`. Throws RangeError with the why. */
export function parseMetricsListen(text: string): MetricsListen | null {
  const trimmed = text.trim();
  if (trimmed === "off") return null;
  let host: string;
  let portText: string;
  if (trimmed.startsWith("[")) {
    const close = trimmed.indexOf("]");
    if (close === -1 || trimmed[close + 1] !== ":") {
      throw new RangeError("write an IPv6 address as [ADDRESS]:PORT, e.g. [::1]:9825");
    }
    host = trimmed.slice(1, close);
    portText = trimmed.slice(close + 2);
  } else {
    const colon = trimmed.lastIndexOf(":");
    if (colon === -1) throw new RangeError("expected HOST:PORT (e.g. 127.0.0.1:9825) or off");
    host = trimmed.slice(0, colon);
    portText = trimmed.slice(colon + 1);
    if (host.includes(":")) {
      throw new RangeError("an IPv6 address needs brackets, e.g. [::1]:9825");
    }
  }
  if (host === "") throw new RangeError("no host before the port (0.0.0.0 for every address)");
  if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    throw new RangeError(
      `the port must be a number from 1 to 65535, not ${JSON.stringify(portText)}`,
    );
  }
  return { host, port: Number(portText) };
}

/**
 * Which peers get series of their own: every peer, none (interface totals only), or at most N,
 * the N with the most traffic (re-chosen at most once a second). Interface totals and
 * `edgetun_peer_series_omitted` are always there, so a limited scrape still adds up.
 */
export type PeerSeries = "all" | "none" | number;

/** The default keeps a hub of a thousand edges fully visible and 5,000 affordable. */
export const DEFAULT_PEER_SERIES = 1000;

/** "all", "none" or a whole number, as the command line takes it. */
export function parsePeerSeries(text: string): PeerSeries {
  if (text === "all" || text === "none") return text;
  if (/^[0-9]{1,7}$/.test(text)) return Number(text);
  throw new RangeError(`use all, none or a number of peers, not ${JSON.stringify(text)}`);
}
