// rtnetlink requests for interface set-up: addresses, routes and policy rules, encoded here and
// sent by the addon (native/netlink.c) many to a datagram, each acknowledged on its own. This
// replaces spawning `ip` once per prefix: a batch of ten thousand routes is one call.
import { loadAddon } from "./addon.js";

// From <linux/rtnetlink.h>, <linux/netlink.h>, <linux/fib_rules.h>, <linux/if_addr.h>.
const RTM_NEWADDR = 20;
const RTM_NEWROUTE = 24;
const RTM_DELROUTE = 25;
const RTM_NEWRULE = 32;
const RTM_DELRULE = 33;
const NLM_F_EXCL = 0x200;
const NLM_F_CREATE = 0x400;
const NLMSG_HDRLEN = 16;
const AF_INET = 2;
const AF_INET6 = 10;
const RT_TABLE_UNSPEC = 0;
/** The table `ip route` means when it names none. */
export const RT_TABLE_MAIN = 254;
/** iproute2's default protocol for `ip route add`: shown as nothing by `ip route show`. */
const RTPROT_BOOT = 3;
const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_LINK = 253;
const RTN_UNICAST = 1;
const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_TABLE = 15;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_F_NODAD = 0x02;
const FR_ACT_TO_TBL = 1;
const FIB_RULE_INVERT = 0x2;
const FRA_FWMARK = 10;
const FRA_SUPPRESS_PREFIXLEN = 14;
const FRA_TABLE = 15;

export interface NetlinkPrefix {
  /** 4 or 16 bytes. */
  address: Uint8Array;
  cidr: number;
}

/**
 * A policy rule as wg-quick adds them for a default route through the tunnel: either
 * `not fwmark T table T` (everything the tunnel's own socket did not mark looks in table T) or
 * `table main suppress_prefixlength 0` (the main table, but never its default route).
 */
export type PolicyRule =
  | { kind: "not-fwmark"; family: 4 | 6; mark: number }
  | { kind: "main-suppress-default"; family: 4 | 6 };

export function describeRule(rule: PolicyRule): string {
  const family = `-${rule.family}`;
  return rule.kind === "not-fwmark"
    ? `ip ${family} rule not fwmark ${rule.mark} table ${rule.mark}`
    : `ip ${family} rule table main suppress_prefixlength 0`;
}

/**
 * What to call a request in an error message; a function when making the text costs more than
 * the request (ten thousand routes, of which normally none fails).
 */
export type RequestName = string | (() => string);

/** One request of a batch, with what to call it in an error message. */
interface Pending {
  what: RequestName;
}

/** The outcome of one request: 0 or a negative errno, as the kernel answered it. */
export interface NetlinkResult {
  what: string;
  errno: number;
}

/**
 * Requests collected, then sent together by {@link send}. Results come back in the order the
 * requests were added.
 */
export class NetlinkBatch {
  #buffer = Buffer.alloc(4096);
  #length = 0;
  readonly #requests: Pending[] = [];

  get size(): number {
    return this.#requests.length;
  }

  /** `ip address add PREFIX dev INDEX` (IPv6 with nodad: usable at once on a tunnel). */
  addAddress(ifindex: number, prefix: NetlinkPrefix, what: RequestName): this {
    const family = familyOf(prefix);
    const message = this.#begin(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, what);
    // struct ifaddrmsg: family, prefixlen, flags, scope, index
    const body = this.#reserve(8);
    this.#buffer.writeUInt8(family, body);
    this.#buffer.writeUInt8(prefix.cidr, body + 1);
    this.#buffer.writeUInt8(family === AF_INET6 ? IFA_F_NODAD : 0, body + 2);
    this.#buffer.writeUInt8(RT_SCOPE_UNIVERSE, body + 3);
    this.#buffer.writeUInt32LE(ifindex, body + 4);
    this.#attribute(IFA_LOCAL, prefix.address);
    this.#attribute(IFA_ADDRESS, prefix.address);
    this.#end(message);
    return this;
  }

  /** `ip route add PREFIX dev INDEX table TABLE`; fails with EEXIST if the route exists. */
  addRoute(ifindex: number, prefix: NetlinkPrefix, table: number, what: RequestName): this {
    this.#route(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, ifindex, prefix, table, what);
    return this;
  }

  /** `ip route del PREFIX dev INDEX table TABLE`: only the route through this interface. */
  deleteRoute(ifindex: number, prefix: NetlinkPrefix, table: number, what: RequestName): this {
    this.#route(RTM_DELROUTE, 0, ifindex, prefix, table, what);
    return this;
  }

  addRule(rule: PolicyRule, what: RequestName): this {
    // Rules may repeat (wg-quick adds a second copy for a second interface), so no EXCL.
    this.#rule(RTM_NEWRULE, NLM_F_CREATE, rule, what);
    return this;
  }

  deleteRule(rule: PolicyRule, what: RequestName): this {
    this.#rule(RTM_DELRULE, 0, rule, what);
    return this;
  }

  /**
   * Sends every request and returns one result per request, in order. Throws only when the
   * exchange itself fails (no CAP_NET_ADMIN, no netlink); a refused request is a result.
   */
  send(): NetlinkResult[] {
    if (this.#requests.length === 0) return [];
    const errors = new Int32Array(this.#requests.length);
    // A copy at offset 0 of its own ArrayBuffer: the addon needs 4-byte alignment.
    const messages = new Uint8Array(this.#length);
    messages.set(this.#buffer.subarray(0, this.#length));
    loadAddon().netlinkTransact(messages, errors);
    return this.#requests.map((request, i) => {
      const name = request.what;
      return typeof name === "string"
        ? { what: name, errno: errors[i]! }
        : {
            get what() {
              return name();
            },
            errno: errors[i]!,
          };
    });
  }

  #route(
    type: number,
    flags: number,
    ifindex: number,
    prefix: NetlinkPrefix,
    table: number,
    what: RequestName,
  ): void {
    const family = familyOf(prefix);
    const message = this.#begin(type, flags, what);
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags(u32)
    const body = this.#reserve(12);
    const b = this.#buffer;
    b.writeUInt8(family, body);
    b.writeUInt8(prefix.cidr, body + 1);
    b.writeUInt8(0, body + 2);
    b.writeUInt8(0, body + 3);
    b.writeUInt8(table < 256 ? table : RT_TABLE_UNSPEC, body + 4);
    b.writeUInt8(RTPROT_BOOT, body + 5);
    // A route straight out of a device with no gateway has link scope, as `ip` gives it;
    // IPv6 routes are always universe.
    b.writeUInt8(family === AF_INET ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE, body + 6);
    b.writeUInt8(RTN_UNICAST, body + 7);
    b.writeUInt32LE(0, body + 8);
    if (prefix.cidr > 0) this.#attribute(RTA_DST, maskedAddress(prefix));
    this.#u32Attribute(RTA_OIF, ifindex);
    this.#u32Attribute(RTA_TABLE, table);
    this.#end(message);
  }

  #rule(type: number, flags: number, rule: PolicyRule, what: RequestName): void {
    const message = this.#begin(type, flags, what);
    const table = rule.kind === "not-fwmark" ? rule.mark : RT_TABLE_MAIN;
    // struct fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action, flags(u32)
    const body = this.#reserve(12);
    const b = this.#buffer;
    b.writeUInt8(rule.family === 4 ? AF_INET : AF_INET6, body);
    b.writeUInt8(0, body + 1);
    b.writeUInt8(0, body + 2);
    b.writeUInt8(0, body + 3);
    b.writeUInt8(table < 256 ? table : RT_TABLE_UNSPEC, body + 4);
    b.writeUInt8(0, body + 5);
    b.writeUInt8(0, body + 6);
    b.writeUInt8(FR_ACT_TO_TBL, body + 7);
    b.writeUInt32LE(rule.kind === "not-fwmark" ? FIB_RULE_INVERT : 0, body + 8);
    this.#u32Attribute(FRA_TABLE, table);
    if (rule.kind === "not-fwmark") this.#u32Attribute(FRA_FWMARK, rule.mark);
    else this.#u32Attribute(FRA_SUPPRESS_PREFIXLEN, 0);
    this.#end(message);
  }

  #begin(type: number, flags: number, what: RequestName): number {
    const start = this.#reserve(NLMSG_HDRLEN);
    // Length is filled in by #end; sequence number and NLM_F_REQUEST|ACK by the addon.
    this.#buffer.writeUInt16LE(type, start + 4);
    this.#buffer.writeUInt16LE(flags, start + 6);
    this.#buffer.writeUInt32LE(0, start + 8);
    this.#buffer.writeUInt32LE(0, start + 12);
    this.#requests.push({ what });
    return start;
  }

  #end(start: number): void {
    this.#buffer.writeUInt32LE(this.#length - start, start);
  }

  #attribute(type: number, data: Uint8Array): void {
    const at = this.#reserve(4 + align4(data.length));
    this.#buffer.writeUInt16LE(4 + data.length, at);
    this.#buffer.writeUInt16LE(type, at + 2);
    this.#buffer.set(data, at + 4);
    this.#buffer.fill(0, at + 4 + data.length, at + 4 + align4(data.length));
  }

  #u32Attribute(type: number, value: number): void {
    const at = this.#reserve(8);
    this.#buffer.writeUInt16LE(8, at);
    this.#buffer.writeUInt16LE(type, at + 2);
    this.#buffer.writeUInt32LE(value >>> 0, at + 4);
  }

  /** Room for `bytes` more (a multiple of 4), returning where it starts. */
  #reserve(bytes: number): number {
    if (this.#length + bytes > this.#buffer.length) {
      const grown = Buffer.alloc(Math.max(this.#buffer.length * 2, this.#length + bytes));
      this.#buffer.copy(grown, 0, 0, this.#length);
      this.#buffer = grown;
    }
    const at = this.#length;
    this.#length += bytes;
    return at;
  }
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

function familyOf(prefix: NetlinkPrefix): number {
  if (prefix.address.length === 4) return AF_INET;
  if (prefix.address.length === 16) return AF_INET6;
  throw new RangeError(`an IP address is 4 or 16 bytes, not ${prefix.address.length}`);
}

/** The kernel refuses a route whose destination has host bits set (EINVAL). */
function maskedAddress(prefix: NetlinkPrefix): Uint8Array {
  const bytes = Uint8Array.from(prefix.address);
  for (let bit = prefix.cidr; bit < bytes.length * 8; bit++) {
    bytes[bit >>> 3]! &= ~(0x80 >>> (bit & 7));
  }
  return bytes;
}
