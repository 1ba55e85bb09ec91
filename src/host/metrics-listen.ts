// Where the metrics server listens, as the command line names it. Apart from metrics.ts (which
// loads prom-client and the HTTP server) so that parsing `--metrics-listen` costs nothing when
// the command is not `up`.

/** Where `edgetun up` serves metrics unless told otherwise. */
export const DEFAULT_METRICS_PORT = 9586;

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
      throw new RangeError("write an IPv6 address as [ADDRESS]:PORT, e.g. [::1]:9586");
    }
    host = trimmed.slice(1, close);
    portText = trimmed.slice(close + 2);
  } else {
    const colon = trimmed.lastIndexOf(":");
    if (colon === -1) throw new RangeError("expected HOST:PORT (e.g. 127.0.0.1:9586) or off");
    host = trimmed.slice(0, colon);
    portText = trimmed.slice(colon + 1);
    if (host.includes(":")) {
      throw new RangeError("an IPv6 address needs brackets, e.g. [::1]:9586");
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
