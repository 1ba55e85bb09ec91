// Endpoint records: the fixed-size address+port+scope form the addon reads and writes.
import type { Endpoint } from "../../core/endpoint.js";
import { formatAddress, parseCidr } from "../../core/ipaddr.js";
import { ENDPOINT_SIZE } from "./addon.js";
import { linkIndex } from "./tun.js";

// A record: the address as IPv6 (IPv4 mapped) at 0, the port big-endian at 16, the scope id
// (little-endian) at 20.
const PORT_OFFSET = 16;
const SCOPE_OFFSET = 20;
/** The leading bytes of a record that hold the address and port. */
export const ENDPOINT_ADDRESS_AND_PORT_BYTES = PORT_OFFSET + 2;

const V4_MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

function checkRecordIndex(table: Uint8Array, index: number): number {
  const at = index * ENDPOINT_SIZE;
  if (!Number.isInteger(index) || index < 0 || at + ENDPOINT_SIZE > table.length) {
    throw new RangeError(
      `endpoint index ${index} is outside a table of ${Math.floor(table.length / ENDPOINT_SIZE)} records`,
    );
  }
  return at;
}

/**
 * Writes `endpoint` as record `index` of `table`. A zone sets the scope id: an index as it is,
 * a name looked up as an interface (the addon's if_nametoindex). A zone written inside the
 * address ("fe80::1%eth0") is taken too.
 */
export function writeEndpoint(table: Uint8Array, index: number, endpoint: Endpoint): void {
  const at = checkRecordIndex(table, index);
  const { port } = endpoint;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`port must be an integer in [0, 65535], got ${port}`);
  }
  let text = endpoint.address;
  let zone = endpoint.zone ?? "";
  const percent = text.indexOf("%");
  if (percent !== -1) {
    zone = text.slice(percent + 1);
    text = text.slice(0, percent);
  }
  let scopeId = zone === "" ? 0 : /^[0-9]+$/.test(zone) ? Number(zone) : linkIndex(zone);
  if (text.includes("/")) {
    throw new TypeError(`not an IP address: ${JSON.stringify(endpoint.address)}`);
  }
  let bytes: Uint8Array;
  try {
    bytes = parseCidr(text).address;
  } catch {
    throw new TypeError(`not an IP address: ${JSON.stringify(endpoint.address)}`);
  }
  table.fill(0, at, at + ENDPOINT_SIZE);
  if (bytes.length === 4) {
    table.set(V4_MAPPED_PREFIX, at);
    table.set(bytes, at + 12);
    scopeId = 0;
  } else {
    table.set(bytes, at);
  }
  table[at + PORT_OFFSET] = port >>> 8;
  table[at + PORT_OFFSET + 1] = port & 0xff;
  new DataView(table.buffer, table.byteOffset + at + SCOPE_OFFSET, 4).setUint32(
    0,
    scopeId >>> 0,
    true,
  );
}

/** Reads record `index`; an IPv4-mapped address comes back as plain "a.b.c.d", a scope id as its zone. */
export function readEndpoint(table: Uint8Array, index: number): Endpoint {
  const at = checkRecordIndex(table, index);
  const isV4 = V4_MAPPED_PREFIX.every((byte, i) => table[at + i] === byte);
  const address = formatAddress(
    isV4 ? table.subarray(at + 12, at + 16) : table.subarray(at, at + 16),
  );
  const port = (table[at + PORT_OFFSET]! << 8) | table[at + PORT_OFFSET + 1]!;
  const view = new DataView(table.buffer, table.byteOffset + at + SCOPE_OFFSET, 4);
  const scopeId = view.getUint32(0, true);
  return scopeId === 0 ? { address, port } : { address, port, zone: String(scopeId) };
}
