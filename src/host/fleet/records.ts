// The fleet's layout in etcd, and strict validation of every record read from it. A record
// that does not pass is never applied: the caller skips it, logs why and counts it.
//
//   PREFIX/edges/NAME     one edge: {"publicKey", "tunnelAddress", "podCidrs", "endpoint"?,
//                         "persistentKeepalive"?, "presharedKey"? (only if the operator opted in)}
//   PREFIX/hubs/NAME      one hub: {"publicKey", "endpoints", "subnet", "address", "allowedIps"?}
//   PREFIX/leases/ADDRESS the edge NAME holding a tunnel address (written in the same
//                         transaction as the edge, so no two edges ever hold one address)
//   PREFIX/status/HUB     what one hub last saw of its edges, rewritten every 30 s under an
//                         etcd lease of 90 s (gone when the hub is): {"publicKey", "updated",
//                         "handshakes": {EDGE NAME: unix seconds of its last handshake}}
import { decodeKey, encodeKey } from "../../core/keys.js";
import { formatAddress, formatCidr, parseCidr } from "../../core/ipaddr.js";
import { EdgetunError } from "../../core/errors.js";
import { formatEndpoint, type EndpointSpec } from "../../core/endpoint.js";
import { parseEndpointSetting } from "../config.js";

export const EDGES = "edges";
export const HUBS = "hubs";
export const LEASES = "leases";
export const STATUS = "status";
/** Larger records are refused unread: a record is a few hundred bytes. */
export const MAX_RECORD_BYTES = 8192;
const MAX_POD_CIDRS = 64;
const NAME_PATTERN = /^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$/;

export class FleetRecordError extends EdgetunError {
  constructor(message: string) {
    super("ERR_FLEET_RECORD", message);
  }
}

export interface Prefix {
  address: Uint8Array;
  cidr: number;
}

export interface EdgeRecord {
  name: string;
  publicKey: Buffer;
  tunnelAddress: Uint8Array;
  podCidrs: Prefix[];
  endpoint: EndpointSpec | null;
  /** Seconds the hub keeps the edge's NAT mapping open with; 0: off. */
  persistentKeepalive: number;
  /** Only when the operator chose to keep it in the store (`fleet add --store-preshared-key`). */
  presharedKey: Buffer | null;
}

export interface HubRecord {
  name: string;
  publicKey: Buffer;
  /** Where edges reach it, "host:port" each. */
  endpoints: EndpointSpec[];
  /** The fleet's tunnel subnet: edges get their addresses from it. */
  subnet: Prefix;
  /** The hub's own tunnel address (never given to an edge). */
  address: Uint8Array;
  /** What edges route to the hub: the subnet plus, say, the cluster's pod and service CIDRs. */
  allowedIps: Prefix[];
}

export function checkName(name: string): string {
  if (!NAME_PATTERN.test(name)) {
    throw new FleetRecordError(
      `invalid name ${JSON.stringify(name)}: 1 to 63 of a-z 0-9 . _ -, starting and ending with a letter or digit`,
    );
  }
  return name;
}

export const edgeKey = (prefix: string, name: string) => `${prefix}/${EDGES}/${checkName(name)}`;
export const hubKey = (prefix: string, name: string) => `${prefix}/${HUBS}/${checkName(name)}`;
export const statusKey = (prefix: string, hub: string) => `${prefix}/${STATUS}/${checkName(hub)}`;
export const leaseKey = (prefix: string, address: Uint8Array) =>
  `${prefix}/${LEASES}/${formatAddress(address)}`;

/** The NAME of `PREFIX/SUBTREE/NAME`, or a FleetRecordError. */
export function nameOfKey(prefix: string, subtree: string, key: string): string {
  const head = `${prefix}/${subtree}/`;
  if (!key.startsWith(head)) throw new FleetRecordError(`key outside ${head}`);
  return checkName(key.slice(head.length));
}

type Json = Record<string, unknown>;

function parseObject(value: Buffer, allowed: readonly string[], maxBytes = MAX_RECORD_BYTES): Json {
  if (value.length > maxBytes) {
    throw new FleetRecordError(`record of ${value.length} bytes (at most ${maxBytes})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString("utf8"));
  } catch {
    throw new FleetRecordError("not JSON");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new FleetRecordError("not a JSON object");
  }
  for (const field of Object.keys(parsed)) {
    if (!allowed.includes(field))
      throw new FleetRecordError(`unknown field ${JSON.stringify(field)}`);
  }
  return parsed as Json;
}

function text(record: Json, field: string): string {
  const value = record[field];
  if (typeof value !== "string") throw new FleetRecordError(`"${field}" must be a string`);
  return value;
}

function key(record: Json, field: string): Buffer {
  try {
    return decodeKey(text(record, field), field);
  } catch (error) {
    // The message of decodeKey never repeats the key text, so nothing secret leaks here.
    throw new FleetRecordError(`"${field}": ${(error as Error).message}`);
  }
}

/** A prefix with no host bits set: "10.244.3.0/24", not "10.244.3.7/24". */
function prefix(textValue: string, field: string): Prefix {
  let parsed: Prefix;
  try {
    parsed = parseCidr(textValue);
  } catch (error) {
    throw new FleetRecordError(`"${field}": ${(error as Error).message}`);
  }
  if (!sameBytes(maskAddress(parsed.address, parsed.cidr), parsed.address)) {
    throw new FleetRecordError(
      `"${field}": ${textValue} has host bits set (${formatCidr(maskAddress(parsed.address, parsed.cidr), parsed.cidr)}?)`,
    );
  }
  return parsed;
}

function prefixes(record: Json, field: string, required: boolean): Prefix[] {
  const value = record[field];
  if (value === undefined && !required) return [];
  if (!Array.isArray(value) || value.length > MAX_POD_CIDRS) {
    throw new FleetRecordError(`"${field}" must be a list of at most ${MAX_POD_CIDRS} prefixes`);
  }
  return value.map((item) => {
    if (typeof item !== "string") throw new FleetRecordError(`"${field}" holds a non-string`);
    return prefix(item, field);
  });
}

function hostAddress(record: Json, field: string): Uint8Array {
  const value = text(record, field);
  if (value.includes("/")) throw new FleetRecordError(`"${field}" is an address, without /length`);
  return prefix(value, field).address;
}

function endpoint(value: unknown, field: string): EndpointSpec {
  if (typeof value !== "string") throw new FleetRecordError(`"${field}" must be "host:port"`);
  try {
    return parseEndpointSetting(value);
  } catch (error) {
    throw new FleetRecordError(`"${field}": ${(error as Error).message}`);
  }
}

const EDGE_FIELDS = [
  "publicKey",
  "tunnelAddress",
  "podCidrs",
  "endpoint",
  "persistentKeepalive",
  "presharedKey",
] as const;

export function parseEdgeRecord(name: string, value: Buffer): EdgeRecord {
  checkName(name);
  const record = parseObject(value, EDGE_FIELDS);
  const keepalive = record.persistentKeepalive ?? 0;
  if (!Number.isInteger(keepalive) || (keepalive as number) < 0 || (keepalive as number) > 65535) {
    throw new FleetRecordError('"persistentKeepalive" must be 0 to 65535 seconds');
  }
  return {
    name,
    publicKey: key(record, "publicKey"),
    tunnelAddress: hostAddress(record, "tunnelAddress"),
    podCidrs: prefixes(record, "podCidrs", false),
    endpoint: record.endpoint === undefined ? null : endpoint(record.endpoint, "endpoint"),
    persistentKeepalive: keepalive as number,
    presharedKey: record.presharedKey === undefined ? null : key(record, "presharedKey"),
  };
}

export function formatEdgeRecord(edge: EdgeRecord): string {
  const record: Json = {
    publicKey: encodeKey(edge.publicKey),
    tunnelAddress: formatAddress(edge.tunnelAddress),
    podCidrs: edge.podCidrs.map((p) => formatCidr(p.address, p.cidr)),
  };
  if (edge.endpoint) record.endpoint = formatEndpointSpec(edge.endpoint);
  if (edge.persistentKeepalive) record.persistentKeepalive = edge.persistentKeepalive;
  if (edge.presharedKey) record.presharedKey = encodeKey(edge.presharedKey);
  return JSON.stringify(record);
}

const HUB_FIELDS = ["publicKey", "endpoints", "subnet", "address", "allowedIps"] as const;

export function parseHubRecord(name: string, value: Buffer): HubRecord {
  checkName(name);
  const record = parseObject(value, HUB_FIELDS);
  if (!Array.isArray(record.endpoints) || record.endpoints.length > 16) {
    throw new FleetRecordError('"endpoints" must be a list of at most 16 "host:port"');
  }
  const subnet = prefix(text(record, "subnet"), "subnet");
  const address = hostAddress(record, "address");
  if (!contains(subnet, address)) {
    throw new FleetRecordError('"address" is outside "subnet"');
  }
  const allowedIps = prefixes(record, "allowedIps", false);
  return {
    name,
    publicKey: key(record, "publicKey"),
    endpoints: record.endpoints.map((e) => endpoint(e, "endpoints")),
    subnet,
    address,
    allowedIps: allowedIps.length > 0 ? allowedIps : [subnet],
  };
}

export function formatHubRecord(hub: Omit<HubRecord, "name">): string {
  return JSON.stringify({
    publicKey: encodeKey(hub.publicKey),
    endpoints: hub.endpoints.map(formatEndpointSpec),
    subnet: formatCidr(hub.subnet.address, hub.subnet.cidr),
    address: formatAddress(hub.address),
    allowedIps: hub.allowedIps.map((p) => formatCidr(p.address, p.cidr)),
  });
}

export function formatEndpointSpec(endpoint: EndpointSpec): string {
  return endpoint.kind === "address"
    ? formatEndpoint(endpoint.endpoint)
    : `${endpoint.name}:${endpoint.port}`;
}

/** What one hub last saw of its edges: `fleet list` shows the newest handshake of any hub. */
export interface HubStatus {
  hub: string;
  publicKey: Buffer;
  /** Unix seconds when the hub wrote it. */
  updated: number;
  /** Edge name → unix seconds of its last handshake with this hub; edges without one are left out. */
  handshakes: Map<string, number>;
}

/**
 * A status names at most this many edges (the ones with the newest handshakes): 20,000
 * entries of the longest names stay under 1.5 MB, etcd's default largest request.
 */
export const MAX_STATUS_EDGES = 20_000;
const MAX_STATUS_BYTES = 1_500_000;
const STATUS_FIELDS = ["publicKey", "updated", "handshakes"] as const;

const seconds = (value: unknown): value is number =>
  typeof value === "number" && Number.isInteger(value) && value >= 0 && value < 2 ** 40;

export function parseHubStatus(hub: string, value: Buffer): HubStatus {
  checkName(hub);
  const record = parseObject(value, STATUS_FIELDS, MAX_STATUS_BYTES);
  if (!seconds(record.updated)) throw new FleetRecordError('"updated" must be unix seconds');
  const given = record.handshakes;
  if (given === null || typeof given !== "object" || Array.isArray(given)) {
    throw new FleetRecordError('"handshakes" must be an object of edge name to unix seconds');
  }
  const handshakes = new Map<string, number>();
  for (const [name, at] of Object.entries(given as Json)) {
    if (!NAME_PATTERN.test(name) || !seconds(at) || handshakes.size >= MAX_STATUS_EDGES) {
      throw new FleetRecordError(
        `"handshakes" must map at most ${MAX_STATUS_EDGES} edge names to unix seconds`,
      );
    }
    handshakes.set(name, at);
  }
  return { hub, publicKey: key(record, "publicKey"), updated: record.updated, handshakes };
}

export function formatHubStatus(status: Omit<HubStatus, "hub">): string {
  const newest = [...status.handshakes]
    .sort((a, b) => b[1] - a[1])
    .slice(0, MAX_STATUS_EDGES)
    .sort((a, b) => (a[0] < b[0] ? -1 : 1));
  return JSON.stringify({
    publicKey: encodeKey(status.publicKey),
    updated: status.updated,
    handshakes: Object.fromEntries(newest),
  });
}

/** The hub's allowed IPs for an edge: its tunnel address as a host prefix, then its pods. */
export function edgeAllowedIps(edge: EdgeRecord): Prefix[] {
  return [{ address: edge.tunnelAddress, cidr: edge.tunnelAddress.length * 8 }, ...edge.podCidrs];
}

/** Same key, address, pods, endpoint, keepalive and pre-shared key. */
export function sameEdge(a: EdgeRecord, b: EdgeRecord): boolean {
  return formatEdgeRecord(a) === formatEdgeRecord(b);
}

export function maskAddress(address: Uint8Array, cidr: number): Uint8Array {
  const masked = new Uint8Array(address.length);
  for (let i = 0; i < address.length; i++) {
    const bits = Math.max(0, Math.min(8, cidr - 8 * i));
    masked[i] = address[i]! & ((0xff << (8 - bits)) & 0xff);
  }
  return masked;
}

export function contains(outer: Prefix, address: Uint8Array): boolean {
  return (
    outer.address.length === address.length &&
    sameBytes(maskAddress(address, outer.cidr), maskAddress(outer.address, outer.cidr))
  );
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
