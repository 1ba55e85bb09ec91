/**
 * UDP endpoints: the one type, parser, printer and comparison for "where a peer is". Text
 * comes from configuration files ("hub.example.net:51820"), the control socket
 * ("[fe80::1%eth0]:51820") and the socket layer (an address and a numeric scope id); all of
 * it is printed by one rule, the one `wg show` follows. Host names are told apart from
 * numeric addresses here, but resolving them is I/O and stays in the host layer.
 */
import { EdgetunError } from "./errors.js";
import { formatAddress, isIPv4Text, isIPv6Text, parseCidr } from "./ipaddr.js";

/** A numeric UDP endpoint. */
export interface Endpoint {
  /** "192.0.2.1" or "fd00::1": numeric, no brackets, no zone; IPv6 as `wg show` prints it. */
  readonly address: string;
  readonly port: number;
  /**
   * The IPv6 scope id (zone) of a link-local address: an interface index ("3", as the socket
   * reports it) or name ("eth0", as an operator writes it); absent when there is none.
   */
  readonly zone?: string;
}

/** What an endpoint's text says: a numeric endpoint, or a host name still to be resolved. */
export type EndpointSpec =
  | { readonly kind: "address"; readonly endpoint: Endpoint }
  | { readonly kind: "name"; readonly name: string; readonly port: number };

export const MAX_PORT = 65535;

/** Endpoint text that cannot be read; `message` is the problem alone, for callers to frame. */
export class EndpointFormatError extends EdgetunError {
  constructor(problem: string) {
    super("ERR_ENDPOINT_FORMAT", problem);
  }
}

export interface ParseEndpointOptions {
  /** Whether "name:port" is accepted (configuration files) or refused (the control socket). */
  names: boolean;
  /** Whether port 0 is accepted (the control socket takes it, as `wg` does). */
  portZero?: boolean;
}

/**
 * Parses "203.0.113.1:51820", "[fd00::1]:51820", "[fe80::1%eth0]:51820" and, when names are
 * allowed, "hub.example.net:51820". IPv6 needs its brackets: `wg` splits "fd00::1:51820" at
 * the last colon, but that text is also a whole IPv6 address.
 */
export function parseEndpoint(text: string, options: ParseEndpointOptions): EndpointSpec {
  let host: string;
  let portText: string;
  let bracketed = false;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close === -1) throw new EndpointFormatError('no "]" after the IPv6 address');
    host = text.slice(1, close);
    if (text[close + 1] !== ":") throw new EndpointFormatError('expected ":port" after "]"');
    portText = text.slice(close + 2);
    bracketed = true;
  } else {
    const colon = text.lastIndexOf(":");
    if (colon === -1) {
      throw new EndpointFormatError("no port; write host:port, e.g. 203.0.113.1:51820");
    }
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host === "") throw new EndpointFormatError("no host before the port");
  }
  const minPort = options.portZero ? 0 : 1;
  const port = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= minPort && port <= MAX_PORT)) {
    throw new EndpointFormatError(
      `the port must be a number from ${minPort} to ${MAX_PORT}, not ${JSON.stringify(portText)}`,
    );
  }

  if (bracketed) {
    // A zone ("[fe80::1%eth0]") is allowed: a link-local endpoint needs one.
    const percent = host.indexOf("%");
    const address = percent === -1 ? host : host.slice(0, percent);
    const zone = percent === -1 ? undefined : host.slice(percent + 1);
    if (!isIPv6Text(address) || (zone !== undefined && !ZONE.test(zone))) {
      throw new EndpointFormatError(`${JSON.stringify(host)} is not an IPv6 address`);
    }
    return { kind: "address", endpoint: endpointOf(address, port, zone) };
  }
  if (host.includes(":")) {
    throw new EndpointFormatError("an IPv6 address needs brackets, e.g. [fd00::1]:51820");
  }
  if (isIPv4Text(host)) return { kind: "address", endpoint: { address: host, port } };
  if (!options.names) throw new EndpointFormatError(`${JSON.stringify(host)} is not an IP address`);
  if (!isHostName(host)) {
    throw new EndpointFormatError(
      `${JSON.stringify(host)} is neither an IPv4 address nor a host name`,
    );
  }
  return { kind: "name", name: host, port };
}

/** An interface name or index, as a zone: what `ip link` allows in a name. */
const ZONE = /^[A-Za-z0-9_.=+-]{1,15}$/;

/**
 * The endpoint of a numeric address text (as a resolver or the socket layer gives it), in the
 * form `wg show` prints; a zone given inside the text ("fe80::1%eth0") is split off.
 */
export function endpointOf(addressText: string, port: number, zone?: string): Endpoint {
  const percent = addressText.indexOf("%");
  if (percent !== -1) {
    return endpointOf(addressText.slice(0, percent), port, addressText.slice(percent + 1));
  }
  const address = formatAddress(parseCidr(addressText).address);
  return zone && address.includes(":") ? { address, port, zone } : { address, port };
}

/** "192.0.2.1:51820", "[fd00::1]:51820", "[fe80::1%eth0]:51820": as `wg show` prints. */
export function formatEndpoint(endpoint: Endpoint): string {
  if (!endpoint.address.includes(":")) return `${endpoint.address}:${endpoint.port}`;
  const zone = endpoint.zone ? `%${endpoint.zone}` : "";
  return `[${endpoint.address}${zone}]:${endpoint.port}`;
}

/** The same address, port and zone. */
export function sameEndpoint(a: Endpoint | null, b: Endpoint): boolean {
  return (
    a !== null && a.port === b.port && a.address === b.address && (a.zone ?? "") === (b.zone ?? "")
  );
}

/**
 * RFC 1123 labels (underscores allowed, as resolvers accept them). A name whose last label is all
 * digits is refused: "10.0.0" or "10.0.0.256" is a mistyped address, which getaddrinfo would
 * otherwise read in inet_aton's surprising ways.
 */
function isHostName(text: string): boolean {
  const name = text.endsWith(".") ? text.slice(0, -1) : text;
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split(".");
  const label = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;
  return labels.every((part) => label.test(part)) && !/^[0-9]+$/.test(labels.at(-1)!);
}
