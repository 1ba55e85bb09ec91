// What the operator's `edgetun fleet …` commands do to the store: add an edge (its tunnel
// address taken atomically), remove one, read the fleet, and write configs from it.
import {
  decodeKey,
  encodeKey,
  generatePresharedKey,
  generatePrivateKey,
  publicKeyOf,
} from "../../core/keys.js";
import { formatAddress, formatCidr } from "../../core/ipaddr.js";
import type { EndpointSpec } from "../../core/endpoint.js";
import { EdgetunError } from "../../core/errors.js";
import type { EtcdClient } from "./etcd.js";
import {
  EDGES,
  FleetRecordError,
  HUBS,
  LEASES,
  STATUS,
  edgeAllowedIps,
  edgeKey,
  formatEdgeRecord,
  formatEndpointSpec,
  leaseKey,
  nameOfKey,
  parseEdgeRecord,
  parseHubRecord,
  parseHubStatus,
  type EdgeRecord,
  type HubRecord,
  type HubStatus,
  type Prefix,
} from "./records.js";

export type FleetAdminErrorCode =
  | "ERR_FLEET_NO_HUB"
  | "ERR_FLEET_EXISTS"
  | "ERR_FLEET_UNKNOWN"
  | "ERR_FLEET_FULL"
  | "ERR_FLEET_BUSY";

export class FleetAdminError extends EdgetunError {
  constructor(code: FleetAdminErrorCode, message: string) {
    super(code, message);
  }
}

export interface FleetContents {
  revision: number;
  edges: EdgeRecord[];
  hubs: HubRecord[];
  /** Keys that did not pass validation, with why (never their values). */
  malformed: Array<{ key: string; error: string }>;
  /** The hubs' status records (those whose lease has not ended). */
  statuses: HubStatus[];
}

/** An edge's newest handshake (unix seconds) with any hub, from the hubs' status records. */
export function lastHandshakes(statuses: readonly HubStatus[]): Map<string, number> {
  const newest = new Map<string, number>();
  for (const status of statuses) {
    for (const [edge, at] of status.handshakes) {
      if (at > (newest.get(edge) ?? 0)) newest.set(edge, at);
    }
  }
  return newest;
}

export async function readFleet(client: EtcdClient, prefix: string): Promise<FleetContents> {
  const { revision, kvs } = await client.rangePrefix(`${prefix}/`);
  const contents: FleetContents = { revision, edges: [], hubs: [], malformed: [], statuses: [] };
  for (const kv of kvs) {
    try {
      if (kv.key.startsWith(`${prefix}/${EDGES}/`)) {
        contents.edges.push(parseEdgeRecord(nameOfKey(prefix, EDGES, kv.key), kv.value));
      } else if (kv.key.startsWith(`${prefix}/${HUBS}/`)) {
        contents.hubs.push(parseHubRecord(nameOfKey(prefix, HUBS, kv.key), kv.value));
      } else if (kv.key.startsWith(`${prefix}/${STATUS}/`)) {
        contents.statuses.push(parseHubStatus(nameOfKey(prefix, STATUS, kv.key), kv.value));
      }
    } catch (error) {
      if (!(error instanceof FleetRecordError)) throw error;
      contents.malformed.push({ key: kv.key, error: error.message });
    }
  }
  return contents;
}

/** Only the hubs: `fleet add` must not read thousands of edges to issue one config. */
async function readHubs(client: EtcdClient, prefix: string): Promise<HubRecord[]> {
  const { kvs } = await client.rangePrefix(`${prefix}/${HUBS}/`);
  const hubs: HubRecord[] = [];
  for (const kv of kvs) {
    try {
      hubs.push(parseHubRecord(nameOfKey(prefix, HUBS, kv.key), kv.value));
    } catch (error) {
      if (!(error instanceof FleetRecordError)) throw error;
    }
  }
  return hubs;
}

export interface AddEdgeRequest {
  name: string;
  podCidrs: Prefix[];
  /** The edge's own key; absent: a key pair is made and the private half printed once. */
  publicKey?: string;
  endpoint?: EndpointSpec | null;
  persistentKeepalive?: number;
  /** Keep a new pre-shared key in the store, in clear (the operator's explicit choice). */
  storePresharedKey?: boolean;
}

export interface AddedEdge {
  edge: EdgeRecord;
  hub: HubRecord;
  /** Only when made here. */
  privateKey: string | null;
  /** The edge's wg-quick file. */
  config: string;
  /** Transactions lost to concurrent adds before this one won an address. */
  retries: number;
}

const MAX_ATTEMPTS = 200;

export async function addEdge(
  client: EtcdClient,
  prefix: string,
  request: AddEdgeRequest,
): Promise<AddedEdge> {
  const key = edgeKey(prefix, request.name);
  const hubs = await readHubs(client, prefix);
  const hub = hubs[0];
  if (!hub) {
    throw new FleetAdminError(
      "ERR_FLEET_NO_HUB",
      `no hub recorded under ${prefix}: start one with \`edgetun up HUB.conf --peers-from etcd://…${prefix} --advertise-endpoint HOST:PORT\``,
    );
  }
  const privateKey = request.publicKey ? null : generatePrivateKey();
  const publicKey = decodeKey(request.publicKey ?? publicKeyOf(privateKey!), "public key");
  const presharedKey = request.storePresharedKey ? decodeKey(generatePresharedKey()) : null;
  const reserved = new Set(hubs.map((h) => formatAddress(h.address)));
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const leases = await client.rangePrefix(`${prefix}/${LEASES}/`, { keysOnly: true });
    const taken = new Set(reserved);
    for (const kv of leases.kvs) taken.add(kv.key.slice(`${prefix}/${LEASES}/`.length));
    // The lowest free address first; after a lost race, one of the next few at random, so
    // fifty adds at once spread out instead of all trying the same next address again.
    const free = freeAddresses(hub.subnet, taken, attempt === 0 ? 1 : 32);
    if (free.length === 0) {
      throw new FleetAdminError(
        "ERR_FLEET_FULL",
        `no free address left in ${formatCidr(hub.subnet.address, hub.subnet.cidr)}`,
      );
    }
    const address = free[attempt === 0 ? 0 : Math.floor(Math.random() * free.length)]!;
    const edge: EdgeRecord = {
      name: request.name,
      publicKey,
      tunnelAddress: address,
      podCidrs: request.podCidrs,
      endpoint: request.endpoint ?? null,
      persistentKeepalive: request.persistentKeepalive ?? 0,
      presharedKey,
    };
    const lease = leaseKey(prefix, address);
    const result = await client.txn(
      [{ absent: key }, { absent: lease }],
      [
        { put: key, value: formatEdgeRecord(edge) },
        { put: lease, value: request.name },
      ],
    );
    if (result.succeeded) {
      return { edge, hub, privateKey, config: edgeConfig(edge, hub, privateKey), retries: attempt };
    }
    if (await client.get(key)) {
      throw new FleetAdminError(
        "ERR_FLEET_EXISTS",
        `edge ${request.name} is already in the fleet (fleet remove it first)`,
      );
    }
  }
  throw new FleetAdminError(
    "ERR_FLEET_BUSY",
    `no address won after ${MAX_ATTEMPTS} attempts; try again`,
  );
}

export async function removeEdge(
  client: EtcdClient,
  prefix: string,
  name: string,
): Promise<EdgeRecord> {
  const key = edgeKey(prefix, name);
  const kv = await client.get(key);
  if (!kv) throw new FleetAdminError("ERR_FLEET_UNKNOWN", `no edge ${name} in the fleet`);
  let edge: EdgeRecord | null = null;
  try {
    edge = parseEdgeRecord(name, kv.value);
  } catch {
    // A malformed record is removed all the same; its lease (if any) stays until found by hand.
  }
  await client.txn(
    [],
    [{ delete: key }, ...(edge ? [{ delete: leaseKey(prefix, edge.tunnelAddress) }] : [])],
  );
  if (!edge)
    throw new FleetAdminError(
      "ERR_FLEET_UNKNOWN",
      `edge ${name} was malformed; its record is removed`,
    );
  return edge;
}

/** Up to `count` free host addresses of `subnet`, lowest first (not network nor broadcast). */
export function freeAddresses(
  subnet: Prefix,
  taken: ReadonlySet<string>,
  count: number,
): Uint8Array[] {
  const bits = subnet.address.length * 8;
  const hostBits = bits - subnet.cidr;
  const base = toBigInt(subnet.address);
  const size = 1n << BigInt(hostBits);
  const free: Uint8Array[] = [];
  const last = subnet.address.length === 4 ? size - 2n : size - 1n;
  // Visits at most taken.size + count addresses, whatever the subnet's size.
  for (let offset = 1n; offset <= last && free.length < count; offset++) {
    const address = fromBigInt(base + offset, subnet.address.length);
    if (!taken.has(formatAddress(address))) free.push(address);
  }
  return free;
}

function toBigInt(bytes: Uint8Array): bigint {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  return value;
}

function fromBigInt(value: bigint, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = length - 1; i >= 0; i--) {
    bytes[i] = Number(value & 0xffn);
    value >>= 8n;
  }
  return bytes;
}

/** The edge's wg-quick file, with the hub as its one peer. */
export function edgeConfig(edge: EdgeRecord, hub: HubRecord, privateKey: string | null): string {
  const lines = [
    `# edge ${edge.name}, written by \`edgetun fleet add\``,
    "[Interface]",
    privateKey
      ? `PrivateKey = ${privateKey}`
      : `# PrivateKey = the private key whose public key is ${encodeKey(edge.publicKey)}`,
    `Address = ${formatAddress(edge.tunnelAddress)}/${hub.subnet.cidr}`,
    "",
    "[Peer]",
    `# hub ${hub.name}`,
    `PublicKey = ${encodeKey(hub.publicKey)}`,
  ];
  if (edge.presharedKey) lines.push(`PresharedKey = ${encodeKey(edge.presharedKey)}`);
  if (hub.endpoints[0]) lines.push(`Endpoint = ${formatEndpointSpec(hub.endpoints[0])}`);
  lines.push(
    `AllowedIPs = ${hub.allowedIps.map((p) => formatCidr(p.address, p.cidr)).join(", ")}`,
    // Behind NAT, the hub can reach the edge only while the mapping is kept open.
    "PersistentKeepalive = 25",
    "",
  );
  return lines.join("\n");
}

/** The fleet's edges as `[Peer]` sections, for `wg addconf` or under a hub's `[Interface]`. */
export function exportPeers(contents: FleetContents): string {
  const lines = [`# fleet at revision ${contents.revision}: ${contents.edges.length} edges`];
  for (const edge of [...contents.edges].sort((a, b) => a.name.localeCompare(b.name))) {
    lines.push("", "[Peer]", `# edge ${edge.name}`, `PublicKey = ${encodeKey(edge.publicKey)}`);
    if (edge.presharedKey) lines.push(`PresharedKey = ${encodeKey(edge.presharedKey)}`);
    lines.push(
      `AllowedIPs = ${edgeAllowedIps(edge)
        .map((p) => formatCidr(p.address, p.cidr))
        .join(", ")}`,
    );
    if (edge.endpoint) lines.push(`Endpoint = ${formatEndpointSpec(edge.endpoint)}`);
    if (edge.persistentKeepalive) lines.push(`PersistentKeepalive = ${edge.persistentKeepalive}`);
  }
  return `${lines.join("\n")}\n`;
}

/** "42 s ago", "3 min ago", "2 h ago", "5 d ago"; "-" for never. */
export function formatAgo(at: number | undefined, nowSeconds: number): string {
  if (!at) return "-";
  const ago = Math.max(0, nowSeconds - at);
  if (ago < 120) return `${ago} s ago`;
  if (ago < 7200) return `${Math.floor(ago / 60)} min ago`;
  if (ago < 172_800) return `${Math.floor(ago / 3600)} h ago`;
  return `${Math.floor(ago / 86_400)} d ago`;
}

/**
 * `fleet list`: one line per hub and per edge. LAST HANDSHAKE is the newest any hub reported
 * (hubs write it every 30 s by default, so it may be that much behind); "-": none reported.
 */
export function formatFleet(contents: FleetContents, nowSeconds: number): string {
  const rows: string[][] = [
    ["KIND", "NAME", "PUBLIC KEY", "ADDRESS", "LAST HANDSHAKE", "ALLOWED IPS / ENDPOINTS"],
  ];
  const reported = new Map(contents.statuses.map((status) => [status.hub, status.updated]));
  for (const hub of contents.hubs) {
    const updated = reported.get(hub.name);
    rows.push([
      "hub",
      hub.name,
      encodeKey(hub.publicKey),
      formatAddress(hub.address),
      updated ? `(reported ${formatAgo(updated, nowSeconds)})` : "(no report)",
      hub.endpoints.map(formatEndpointSpec).join(","),
    ]);
  }
  const handshakes = lastHandshakes(contents.statuses);
  for (const edge of [...contents.edges].sort((a, b) => a.name.localeCompare(b.name))) {
    rows.push([
      "edge",
      edge.name,
      encodeKey(edge.publicKey),
      formatAddress(edge.tunnelAddress),
      formatAgo(handshakes.get(edge.name), nowSeconds),
      edge.podCidrs.map((p) => formatCidr(p.address, p.cidr)).join(",") || "-",
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const text = rows.map((r) =>
    r
      .map((cell, i) => cell.padEnd(widths[i]!))
      .join("  ")
      .trimEnd(),
  );
  for (const bad of contents.malformed) text.push(`# malformed ${bad.key}: ${bad.error}`);
  return `${text.join("\n")}\n`;
}
