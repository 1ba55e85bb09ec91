/**
 * IP addresses and prefixes as raw bytes: parsing the text an operator writes in
 * `AllowedIPs = …` / `allowed_ip=…`, and printing them back the way `wg show` does.
 *
 * Addresses are network-order byte arrays (4 bytes for IPv4, 16 for IPv6) because that is
 * what the trie, the packet headers and the control socket all work with.
 */

import { EdgetunError } from "./errors.js";

export const IPV4_ADDRESS_BYTES = 4;
export const IPV6_ADDRESS_BYTES = 16;

/** Thrown by {@link parseCidr}; `code` is stable so the config layer can map it. */
export class InvalidCidrError extends EdgetunError {
  constructor(message: string) {
    super("ERR_INVALID_CIDR", message);
  }
}

/**
 * Parses "10.0.0.0/8", "fd00::/64", "::/0" or a bare address (a host prefix: /32 or /128).
 * Host bits beyond the prefix are kept as written: the kernel accepts "10.0.0.1/8" and masks
 * it when storing, and so does `AllowedIps.insert`.
 */
export function parseCidr(text: string): { address: Uint8Array; cidr: number } {
  if (/\s/.test(text)) {
    throw invalidCidr(text, "contains whitespace");
  }
  const slash = text.indexOf("/");
  const addressText = slash === -1 ? text : text.slice(0, slash);
  const cidrText = slash === -1 ? undefined : text.slice(slash + 1);

  // A zone ("fe80::1%eth0") names a link, which a route cannot carry.
  if (addressText.includes("%")) {
    throw invalidCidr(text, 'a zone index ("%…") is not allowed in a prefix');
  }
  let address: Uint8Array;
  if (isIPv4Text(addressText)) {
    address = parseIPv4(addressText);
  } else if (isIPv6Text(addressText)) {
    address = parseIPv6(addressText);
  } else {
    throw invalidCidr(text, `${JSON.stringify(addressText)} is not an IPv4 or IPv6 address`);
  }
  const maxCidr = address.length * 8;
  if (cidrText === undefined) {
    return { address, cidr: maxCidr };
  }
  // Digits only and no leading zeros: "+8", "0x8", "8.0" or "08" are typos, not prefixes.
  if (!/^(0|[1-9][0-9]*)$/.test(cidrText)) {
    throw invalidCidr(text, `prefix length ${JSON.stringify(cidrText)} is not a decimal number`);
  }
  const cidr = Number(cidrText);
  if (cidr > maxCidr) {
    const family = maxCidr === 32 ? "IPv4" : "IPv6";
    throw invalidCidr(
      text,
      `prefix length ${cidrText} is more than ${maxCidr} for an ${family} address`,
    );
  }
  return { address, cidr };
}

function invalidCidr(text: string, problem: string): InvalidCidrError {
  return new InvalidCidrError(`invalid CIDR ${JSON.stringify(text)}: ${problem}`);
}

/** "10.0.0.1", or IPv6 in the compressed form glibc's inet_ntop (hence `wg show`) prints. */
export function formatAddress(bytes: Uint8Array): string {
  if (bytes.length === IPV4_ADDRESS_BYTES) {
    return formatIPv4(bytes, 0);
  }
  if (bytes.length === IPV6_ADDRESS_BYTES) {
    return formatIPv6(bytes);
  }
  throw new RangeError(`an IP address is 4 or 16 bytes, not ${bytes.length}`);
}

/** "10.0.0.0/8", "fd00::/64". Formats the address as given; it does not mask host bits. */
export function formatCidr(address: Uint8Array, cidr: number): string {
  const text = formatAddress(address);
  const maxCidr = address.length * 8;
  if (!Number.isInteger(cidr) || cidr < 0 || cidr > maxCidr) {
    throw new RangeError(`prefix length ${cidr} is outside 0..${maxCidr}`);
  }
  return `${text}/${cidr}`;
}

const IPV4_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
/** Dotted quad, no leading zeros (some libcs read "010" as octal, so it is refused). */
const IPV4_TEXT = new RegExp(`^${IPV4_OCTET}(?:\\.${IPV4_OCTET}){3}$`);
const IPV6_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** True for the dotted-quad text of an IPv4 address. */
export function isIPv4Text(text: string): boolean {
  return IPV4_TEXT.test(text);
}

/**
 * True for the text of an IPv6 address (RFC 4291 section 2.2: eight groups, one "::" for a
 * run of zero groups, an optional dotted IPv4 tail); no zone index.
 */
export function isIPv6Text(text: string): boolean {
  const gap = text.indexOf("::");
  if (gap !== -1 && text.indexOf("::", gap + 1) !== -1) return false;
  const sides = gap === -1 ? [text] : [text.slice(0, gap), text.slice(gap + 2)];
  let groups = 0;
  for (let side = 0; side < sides.length; side++) {
    const part = sides[side]!;
    if (part === "") {
      if (gap === -1) return false;
      continue;
    }
    const fields = part.split(":");
    for (let i = 0; i < fields.length; i++) {
      const field = fields[i]!;
      const last = side === sides.length - 1 && i === fields.length - 1;
      if (last && field.includes(".")) {
        if (!isIPv4Text(field)) return false;
        groups += 2;
      } else if (IPV6_GROUP.test(field)) {
        groups += 1;
      } else {
        return false;
      }
    }
  }
  return gap === -1 ? groups === 8 : groups <= 7;
}

// The parsers below trust their input: isIPv4Text/isIPv6Text have already validated the
// syntax, and parseCidr has refused zone indexes.

function parseIPv4(text: string): Uint8Array {
  const bytes = new Uint8Array(IPV4_ADDRESS_BYTES);
  const octets = text.split(".");
  for (let i = 0; i < IPV4_ADDRESS_BYTES; i++) {
    bytes[i] = Number(octets[i]);
  }
  return bytes;
}

function parseIPv6(text: string): Uint8Array {
  const bytes = new Uint8Array(IPV6_ADDRESS_BYTES);
  const gap = text.indexOf("::");
  const headText = gap === -1 ? text : text.slice(0, gap);
  const tailText = gap === -1 ? "" : text.slice(gap + 2);
  const head = groupsOf(headText);
  const tail = groupsOf(tailText);
  // "::" stands for however many zero groups are missing; the bytes are already zero.
  const tailStart = 8 - tail.length;
  head.forEach((group, i) => writeGroup(bytes, i, group));
  tail.forEach((group, i) => writeGroup(bytes, tailStart + i, group));
  return bytes;
}

/** Splits one side of "::" into 16-bit groups, expanding a trailing dotted IPv4 into two. */
function groupsOf(text: string): number[] {
  if (text === "") {
    return [];
  }
  const groups: number[] = [];
  for (const part of text.split(":")) {
    if (part.includes(".")) {
      const v4 = parseIPv4(part);
      groups.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
    } else {
      groups.push(parseInt(part, 16));
    }
  }
  return groups;
}

function writeGroup(bytes: Uint8Array, groupIndex: number, value: number): void {
  bytes[groupIndex * 2] = value >>> 8;
  bytes[groupIndex * 2 + 1] = value & 0xff;
}

function formatIPv4(bytes: Uint8Array, offset: number): string {
  return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
}

/**
 * RFC 5952 compression (longest run of two or more zero groups becomes "::", the first run
 * on a tie; lowercase hex without leading zeros), plus the one quirk of glibc's and libuv's
 * inet_ntop that `wg show` inherits: an IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible
 * (::a.b.c.d) address ends in dotted IPv4.
 */
function formatIPv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) {
    groups.push((bytes[i * 2]! << 8) | bytes[i * 2 + 1]!);
  }
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let end = i;
    while (end < 8 && groups[end] === 0) {
      end++;
    }
    if (end - i > bestLength) {
      bestStart = i;
      bestLength = end - i;
    }
    i = end;
  }
  if (bestLength < 2) {
    bestStart = -1;
  }

  const embedsIPv4 =
    bestStart === 0 && (bestLength === 6 || (bestLength === 5 && groups[5] === 0xffff));
  const hexGroupCount = embedsIPv4 ? 6 : 8;
  let text = "";
  for (let i = 0; i < hexGroupCount; i++) {
    if (i === bestStart) {
      text += "::";
      i += bestLength - 1;
      continue;
    }
    if (text !== "" && !text.endsWith(":")) {
      text += ":";
    }
    text += groups[i]!.toString(16);
  }
  if (embedsIPv4) {
    text += (text.endsWith(":") ? "" : ":") + formatIPv4(bytes, 12);
  }
  return text;
}
