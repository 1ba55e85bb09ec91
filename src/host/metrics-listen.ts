// Where the metrics server listens and which peers get series of their own, as the command line
// names them. Apart from metrics.ts (which loads prom-client and the HTTP server) so that
// parsing `--metrics-listen` and `--metrics-peers` costs nothing when the command is not `up`.
import {
  EndpointFormatError,
  formatEndpoint,
  parseEndpoint,
  type EndpointSpec,
} from "../core/endpoint.js";

/**
 * Where `edgetun up` serves metrics unless told otherwise. Not 9586, the port of
 * prometheus_wireguard_exporter, so that both can run on one host.
 */
export const DEFAULT_METRICS_PORT = 9825;

export interface MetricsListen {
  host: string;
  port: number;
}

/**
 * `--metrics-listen`: `HOST:PORT` (`[v6]:PORT`, a zone allowed), or `off`. Read by the core's
 * endpoint parser, so it takes what a peer's Endpoint takes. Throws RangeError with the why.
 */
export function parseMetricsListen(text: string): MetricsListen | null {
  const trimmed = text.trim();
  if (trimmed === "off") return null;
  let spec: EndpointSpec;
  try {
    spec = parseEndpoint(trimmed, { names: true });
  } catch (error) {
    if (!(error instanceof EndpointFormatError)) throw error;
    throw new RangeError(`${error.message}; expected HOST:PORT, [ADDRESS]:PORT or off`, {
      cause: error,
    });
  }
  if (spec.kind === "name") return { host: spec.name, port: spec.port };
  const { address, port, zone } = spec.endpoint;
  return { host: zone === undefined ? address : `${address}%${zone}`, port };
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

/** `host:port` (`[v6]:port`) as an error message or log line names a listen address. */
export function formatListen(listen: MetricsListen): string {
  return formatEndpoint({ address: listen.host, port: listen.port });
}
