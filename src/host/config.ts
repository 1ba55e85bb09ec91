/**
 * The configuration file `edgetun up edge0.conf` reads. It is wg-quick's format, so an operator
 * can move a node between wg-quick and edgetun without rewriting it:
 *
 *   [Interface]            exactly one, first
 *   PrivateKey = …         or PrivateKeyFile = path
 *   Address = 10.0.0.1/24, fd00::1/64
 *   [Peer]                 any number
 *   PublicKey = …
 *   AllowedIPs = 10.0.0.0/24
 *
 * Section names and keys are case-insensitive, `#` starts a comment anywhere on a line, as in
 * wg-quick. Everything wrong is reported as a ConfigError naming the file and line, so an
 * operator can go straight to it; nothing here touches the network or the tunnel.
 */

import { lookup } from "node:dns/promises";
import { isIPv4, isIPv6 } from "node:net";
import {
  closeSync,
  constants as fsConstants,
  fstatSync,
  openSync,
  readSync,
  statSync,
} from "node:fs";
import type { Stats } from "node:fs";

import { basename, dirname, resolve } from "node:path";

import { PrivateKey } from "../core/crypto.js";
import {
  endpointOf,
  EndpointFormatError,
  parseEndpoint,
  type Endpoint,
  type EndpointSpec,
} from "../core/endpoint.js";
import type { RouteTable } from "./netif.js";
import { formatCidr, InvalidCidrError, parseCidr } from "../core/ipaddr.js";
import { decodeKey, encodeKey, KeyFormatError } from "../core/keys.js";
import {
  ConfigError,
  describeCause,
  EndpointResolutionError,
  locationPrefix,
  type ConfigErrorCode,
} from "./errors.js";

/** An interface address: unlike AllowedIPs, the host bits are the interface's own address. */
export interface AddressConfig {
  address: Uint8Array;
  cidr: number;
  /** "10.0.0.1/24", "fd00::1/64": as `ip address add` takes it. */
  text: string;
}

export interface PeerFileConfig {
  publicKey: Buffer;
  presharedKey: Buffer | null;
  endpoint: EndpointSpec | null;
  /** Host bits masked off, as `wg` stores them. */
  allowedIps: Array<{ address: Uint8Array; cidr: number }>;
  /** Seconds; 0 is off. */
  persistentKeepalive: number;
  /** The line of the `[Peer]` header, for messages about this peer later on. */
  line: number;
}

/** wg-quick's `DNS`: addresses become nameservers, anything else a search domain. */
export interface DnsConfig {
  servers: string[];
  search: string[];
}

/** wg-quick's hooks, each a bash snippet in file order; `%i` is the interface name. */
export interface HooksConfig {
  preUp: string[];
  postUp: string[];
  preDown: string[];
  postDown: string[];
}

export interface InterfaceFileConfig {
  /**
   * null: none in the file. wg-quick accepts that too (a hook such as `PostUp = wg set %i
   * private-key …` often sets it); until one is set the interface makes no handshakes.
   */
  privateKey: Buffer | null;
  /** The PrivateKeyFile as written, so that SaveConfig can write the reference back. */
  privateKeyFile: string | null;
  /** null: none given, so the socket takes a random port (as 0 does). */
  listenPort: number | null;
  addresses: AddressConfig[];
  mtu: number;
  /** 0 is off. */
  fwmark: number;
  /** wg-quick's `Table`: where routes for the peers' allowed IPs go (src/host/netif.ts). */
  table: RouteTable;
  peers: PeerFileConfig[];
  dns: DnsConfig;
  hooks: HooksConfig;
  /** wg-quick's SaveConfig: write the running state back to the file when the tunnel stops. */
  saveConfig: boolean;
  /** `file:line: …` for keys that are accepted but do nothing, and for likely mistakes. */
  warnings: string[];
  file: string;
  /** Whether the file itself holds the private key (PrivateKey rather than PrivateKeyFile). */
  holdsPrivateKey?: boolean;
}

export interface ParseConfigOptions {
  /** Reads PrivateKeyFile (its path already resolved against the config file's directory). */
  readFile?: (path: string) => string;
}

// wg-quick's default is the route's MTU minus 80; 1420 is that for the usual 1500-byte path.
export const DEFAULT_MTU = 1420;
const MIN_MTU_IPV4 = 576; // RFC 791: every IPv4 host must accept 576-byte datagrams
const MIN_MTU_IPV6 = 1280; // RFC 8200; Linux takes IPv6 off a link with a smaller MTU
/** Jumbo frames; beyond that no path carries the encapsulated packet. The daemon's slots hold it. */
export const MAX_MTU = 9000;
const MAX_PORT = 65535;
const MAX_FWMARK = 0xffffffff;
/** Routing table ids are 32-bit; 0 means "unspecified" to the kernel. */
const MAX_TABLE = 0xffffffff;
const MAIN_TABLE = 254;
const MAX_INTERFACE_NAME_LENGTH = 15; // IFNAMSIZ - 1

const INTERFACE_KEYS = [
  "PrivateKey",
  "PrivateKeyFile",
  "ListenPort",
  "Address",
  "MTU",
  "FwMark",
  "Table",
  "DNS",
  "PreUp",
  "PostUp",
  "PreDown",
  "PostDown",
  "SaveConfig",
] as const;
const PEER_KEYS = [
  "PublicKey",
  "PresharedKey",
  "Endpoint",
  "AllowedIPs",
  "PersistentKeepalive",
] as const;
/** wg-quick's own [Interface] keys that edgetun accepts and leaves alone: none left. */
const IGNORED_INTERFACE_KEYS: readonly string[] = [];
/** Keys that may appear on several lines, their lists adding up, as in wg-quick. */
const REPEATABLE_KEYS: ReadonlySet<string> = new Set([
  "Address",
  "AllowedIPs",
  "DNS",
  "PreUp",
  "PostUp",
  "PreDown",
  "PostDown",
]);

type InterfaceKey = (typeof INTERFACE_KEYS)[number];
type PeerKey = (typeof PEER_KEYS)[number];

interface PeerDraft {
  line: number;
  publicKey: Buffer | null;
  presharedKey: Buffer | null;
  endpoint: EndpointSpec | null;
  allowedIps: Array<{ address: Uint8Array; cidr: number }>;
  persistentKeepalive: number;
}

/**
 * Parses the text of a configuration file. `file` is used in messages as given, and its directory
 * is where a relative PrivateKeyFile is looked for. Throws ConfigError, and nothing else, for any
 * text.
 */
export function parseConfig(
  text: string,
  file: string,
  options: ParseConfigOptions = {},
): InterfaceFileConfig {
  const readFile =
    options.readFile ?? ((path: string) => readBoundedFile(path, MAX_KEY_FILE_BYTES).text);
  return new ConfigFileParser(file, readFile, options.readFile === undefined).parse(text);
}

/** A hub's file with a hundred thousand peers is some 15 MB; more is not a configuration. */
export const MAX_CONFIG_FILE_BYTES = 64 << 20;
/** A key file holds 44 characters and a newline; a little room for comments and CRLF. */
export const MAX_KEY_FILE_BYTES = 4096;

/**
 * Reads a file an operator named, as text, refusing what is not a regular file (a device such
 * as /dev/zero, a FIFO, a directory) and what is larger than `maxBytes`, with the reason in
 * the error's message. Opened without blocking, so a FIFO with no writer cannot hang us.
 */
export function readBoundedFile(path: string, maxBytes: number): { text: string; stats: Stats } {
  const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) throw new Error(`it is ${fileKind(stats)}, not a regular file`);
    if (stats.size > maxBytes) throw tooLarge(stats.size, maxBytes);
    // Read one byte past the limit, in case the file grew since fstat.
    const buffer = Buffer.alloc(Math.min(maxBytes + 1, Math.max(stats.size + 1, 1024)));
    let length = 0;
    for (;;) {
      if (length === buffer.length) break;
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
    }
    if (length > maxBytes) throw tooLarge(length, maxBytes);
    return { text: buffer.toString("utf8", 0, length), stats };
  } finally {
    closeSync(fd);
  }
}

function tooLarge(size: number, maxBytes: number): Error {
  return new Error(`it is ${size} bytes or more; the limit is ${maxBytes} bytes`);
}

function fileKind(stats: Stats): string {
  if (stats.isDirectory()) return "a directory";
  if (stats.isCharacterDevice()) return "a character device";
  if (stats.isBlockDevice()) return "a block device";
  if (stats.isFIFO()) return "a FIFO";
  if (stats.isSocket()) return "a socket";
  return "not a file";
}

/**
 * A warning when a file holding a key may be read by anyone but its owner, naming the fix.
 * wg-quick warns about world-accessible files; a group is as much a leak for a private key.
 */
export function keyFilePermissionWarning(path: string, stats: Stats, what: string): string | null {
  const mode = stats.mode & 0o777;
  if ((mode & 0o077) === 0) return null;
  return (
    `${path} holds ${what} and is accessible by ${mode & 0o007 ? "others" : "its group"} ` +
    `(mode ${mode.toString(8).padStart(4, "0")}); fix with: chmod 600 ${path}`
  );
}

/**
 * An interface with nothing configured: no key, no peers, no addresses, a random port. What
 * wireguard-go starts with before `wg setconf` fills it in.
 */
export function emptyInterfaceConfig(): InterfaceFileConfig {
  return {
    privateKey: null,
    privateKeyFile: null,
    listenPort: null,
    addresses: [],
    mtu: DEFAULT_MTU,
    fwmark: 0,
    // wg-quick adds the routes itself around a userspace implementation.
    table: { kind: "off" },
    peers: [],
    dns: { servers: [], search: [] },
    hooks: { preUp: [], postUp: [], preDown: [], postDown: [] },
    saveConfig: false,
    warnings: [],
    file: "",
  };
}

/** Reads and parses a configuration file; a relative PrivateKeyFile is found beside it. */
export function readConfigFile(path: string): InterfaceFileConfig {
  let file: { text: string; stats: Stats };
  try {
    file = readBoundedFile(path, MAX_CONFIG_FILE_BYTES);
  } catch (error) {
    throw new ConfigError(
      "ERR_CONFIG_FILE",
      path,
      0,
      `cannot read the file: ${describeCause(error)}`,
    );
  }
  const config = parseConfig(file.text, path);
  if (config.holdsPrivateKey || config.peers.some((peer) => peer.presharedKey !== null)) {
    const warning = keyFilePermissionWarning(path, file.stats, "keys");
    if (warning) config.warnings.unshift(warning);
  }
  return config;
}

/**
 * The line-by-line state of one parse. Sections are finished when the next one starts (or at the
 * end of the text), so checks that need a whole section, such as the MTU against the addresses,
 * run before any later line is looked at.
 */
class ConfigFileParser {
  readonly #file: string;
  readonly #readFile: (path: string) => string;
  /** Whether files are read from this host's file system, so their modes mean something. */
  readonly #onFileSystem: boolean;
  readonly #warnings: string[] = [];
  /** Whether the private key is written in the file itself (not PrivateKeyFile). */
  #privateKeyInline = false;

  #section: "Interface" | "Peer" | null = null;
  /** Single-valued keys seen in the current section, with their lines, to refuse repeats. */
  #keyLines = new Map<string, number>();

  #interfaceLine = 0;
  #privateKey: Buffer | null = null;
  #privateKeyFile: string | null = null;
  readonly #dns: DnsConfig = { servers: [], search: [] };
  readonly #hooks: HooksConfig = { preUp: [], postUp: [], preDown: [], postDown: [] };
  #saveConfig = false;
  #ownPublicKey: Buffer | null = null;
  #listenPort: number | null = null;
  readonly #addresses: AddressConfig[] = [];
  #mtu = DEFAULT_MTU;
  #mtuLine = 0;
  #fwmark = 0;
  #table: RouteTable = { kind: "auto" };

  #peer: PeerDraft | null = null;
  readonly #peers: PeerFileConfig[] = [];
  /** Base64 public key → line of the PublicKey that first named it. */
  readonly #peerKeyLines = new Map<string, number>();
  /** Masked prefix text → [Peer] line of the peer that first claimed it. */
  readonly #allowedIpPeerLines = new Map<string, number>();

  constructor(file: string, readFile: (path: string) => string, onFileSystem: boolean) {
    this.#file = file;
    this.#readFile = readFile;
    this.#onFileSystem = onFileSystem;
  }

  parse(text: string): InterfaceFileConfig {
    const lines = text.replace(/^\uFEFF/, "").split("\n");
    lines.forEach((rawLine, index) => this.#parseLine(rawLine, index + 1));
    this.#finishSection();
    if (this.#interfaceLine === 0) {
      throw this.#error("ERR_CONFIG_MISSING", 0, "no [Interface] section");
    }
    return {
      privateKey: this.#privateKey,
      privateKeyFile: this.#privateKeyFile,
      dns: this.#dns,
      hooks: this.#hooks,
      saveConfig: this.#saveConfig,
      listenPort: this.#listenPort,
      addresses: this.#addresses,
      mtu: this.#mtu,
      fwmark: this.#fwmark,
      table: this.#table,
      peers: this.#peers,
      warnings: this.#warnings,
      file: this.#file,
      holdsPrivateKey: this.#privateKeyInline,
    };
  }

  #parseLine(rawLine: string, line: number): void {
    const hash = rawLine.indexOf("#");
    const content = (hash === -1 ? rawLine : rawLine.slice(0, hash)).trim();
    if (content === "") return;

    if (content.startsWith("[")) {
      const header = /^\[\s*([^[\]]*?)\s*\]$/.exec(content);
      if (header === null) {
        throw this.#error(
          "ERR_CONFIG_SYNTAX",
          line,
          `malformed section header ${JSON.stringify(content)}`,
        );
      }
      this.#finishSection();
      this.#beginSection(header[1]!, line);
      return;
    }

    const equals = content.indexOf("=");
    if (equals === -1) {
      throw this.#error(
        "ERR_CONFIG_SYNTAX",
        line,
        `expected "Key = Value" or a [Section] header, not ${JSON.stringify(content)}`,
      );
    }
    const key = content.slice(0, equals).trim();
    // Only the first "=" separates: base64 keys end in "=".
    const value = content.slice(equals + 1).trim();
    if (key === "") {
      throw this.#error("ERR_CONFIG_SYNTAX", line, 'a key is missing before "="');
    }
    if (this.#section === "Interface") {
      this.#interfaceKey(key, value, line);
    } else if (this.#section === "Peer") {
      this.#peerKey(key, value, line);
    } else {
      throw this.#error(
        "ERR_CONFIG_SYNTAX",
        line,
        `key ${JSON.stringify(key)} is outside any section; the file must begin with [Interface]`,
      );
    }
  }

  #beginSection(name: string, line: number): void {
    this.#keyLines = new Map();
    switch (name.toLowerCase()) {
      case "interface":
        if (this.#interfaceLine !== 0) {
          throw this.#error(
            "ERR_CONFIG_SYNTAX",
            line,
            `a second [Interface] section; the first is on line ${this.#interfaceLine}`,
          );
        }
        this.#section = "Interface";
        this.#interfaceLine = line;
        return;
      case "peer":
        if (this.#interfaceLine === 0) {
          throw this.#error(
            "ERR_CONFIG_SYNTAX",
            line,
            "[Peer] before [Interface]; the file must begin with [Interface]",
          );
        }
        this.#section = "Peer";
        this.#peer = {
          line,
          publicKey: null,
          presharedKey: null,
          endpoint: null,
          allowedIps: [],
          persistentKeepalive: 0,
        };
        return;
      default:
        throw this.#error(
          "ERR_CONFIG_SYNTAX",
          line,
          `unknown section [${name}]; expected [Interface] or [Peer]`,
        );
    }
  }

  #finishSection(): void {
    if (this.#section === "Interface") {
      this.#finishInterface();
    } else if (this.#section === "Peer") {
      this.#finishPeer();
    }
    this.#section = null;
  }

  #finishInterface(): void {
    const hasIpv6Address = this.#addresses.some((entry) => entry.address.length === 16);
    if (hasIpv6Address && this.#mtu < MIN_MTU_IPV6) {
      throw this.#error(
        "ERR_CONFIG_MTU",
        this.#mtuLine,
        `MTU ${this.#mtu} is below ${MIN_MTU_IPV6}, the minimum for an interface with an IPv6 address`,
      );
    }
    if (this.#privateKey !== null) {
      this.#ownPublicKey = new PrivateKey(this.#privateKey).publicKey;
    }
  }

  #finishPeer(): void {
    const peer = this.#peer!;
    if (peer.publicKey === null) {
      throw this.#error("ERR_CONFIG_MISSING", peer.line, "[Peer] has no PublicKey");
    }
    this.#peers.push({ ...peer, publicKey: peer.publicKey });
    this.#peer = null;
  }

  #interfaceKey(written: string, value: string, line: number): void {
    const key = canonicalKey(written, INTERFACE_KEYS);
    if (key === undefined) {
      const ignored = canonicalKey(written, IGNORED_INTERFACE_KEYS);
      if (ignored !== undefined) {
        this.#warn(
          line,
          `${ignored} is accepted for wg-quick compatibility but ignored by edgetun`,
        );
        return;
      }
      throw this.#unknownKey(written, line, "Interface", canonicalKey(written, PEER_KEYS));
    }
    this.#refuseRepeat(key, line);

    switch (key satisfies InterfaceKey) {
      case "PrivateKey":
        this.#refuseBothPrivateKeySources("PrivateKeyFile", line);
        this.#privateKey = this.#key(value, "PrivateKey", line);
        this.#privateKeyInline = true;
        return;
      case "PrivateKeyFile":
        this.#refuseBothPrivateKeySources("PrivateKey", line);
        this.#privateKey = this.#privateKeyFromFile(value, line);
        this.#privateKeyFile = value;
        return;
      case "DNS":
        // As wg-quick: a list split on commas and spaces; what looks like an address is a
        // nameserver, the rest search domains.
        for (const entry of value.split(/[\s,]+/).filter((part) => part !== "")) {
          if (/^[0-9.]+$/.test(entry) || entry.includes(":")) {
            if (!isIPv4(entry) && !isIPv6(entry)) {
              throw this.#error(
                "ERR_CONFIG_VALUE",
                line,
                `DNS: ${JSON.stringify(entry)} is neither an IP address nor a search domain`,
              );
            }
            this.#dns.servers.push(entry);
          } else {
            this.#dns.search.push(entry);
          }
        }
        return;
      case "PreUp":
      case "PostUp":
      case "PreDown":
      case "PostDown": {
        if (value === "") throw this.#error("ERR_CONFIG_VALUE", line, `${key} needs a command`);
        const phase = (key[0]!.toLowerCase() + key.slice(1)) as keyof HooksConfig;
        this.#hooks[phase].push(value);
        return;
      }
      case "SaveConfig": {
        // wg-quick's read_bool: exactly "true" or "false" (its key match ignores case, the value's not).
        if (value !== "true" && value !== "false") {
          throw this.#error(
            "ERR_CONFIG_VALUE",
            line,
            `SaveConfig must be true or false, not ${JSON.stringify(value)}`,
          );
        }
        this.#saveConfig = value === "true";
        return;
      }
      case "ListenPort": {
        const port = parseDecimal(value);
        if (port === null || port > MAX_PORT) {
          throw this.#error(
            "ERR_CONFIG_PORT",
            line,
            `ListenPort must be a port number from 0 to ${MAX_PORT}, not ${JSON.stringify(value)}`,
          );
        }
        this.#listenPort = port;
        return;
      }
      case "Address":
        // wg-quick splits Address on commas and whitespace alike, so both are lists here.
        for (const entry of value.split(/[\s,]+/).filter((part) => part !== "")) {
          const { address, cidr } = this.#cidr(entry, "Address", line);
          this.#addresses.push({ address, cidr, text: formatCidr(address, cidr) });
        }
        return;
      case "MTU": {
        const mtu = parseDecimal(value);
        if (mtu === null || mtu < MIN_MTU_IPV4 || mtu > MAX_MTU) {
          throw this.#error(
            "ERR_CONFIG_MTU",
            line,
            `MTU must be a number from ${MIN_MTU_IPV4} to ${MAX_MTU} (at least ${MIN_MTU_IPV6} with IPv6), not ${JSON.stringify(value)}`,
          );
        }
        this.#mtu = mtu;
        this.#mtuLine = line;
        return;
      }
      case "FwMark": {
        const fwmark = parseFwmark(value);
        if (fwmark === null) {
          throw this.#error(
            "ERR_CONFIG_VALUE",
            line,
            `FwMark must be "off", a decimal number or 0x hex up to 0xffffffff, not ${JSON.stringify(value)}`,
          );
        }
        this.#fwmark = fwmark;
        return;
      }
      case "Table": {
        const table = parseTable(value);
        if (table === null) {
          throw this.#error(
            "ERR_CONFIG_VALUE",
            line,
            `Table must be "off", "auto", "main" or a table number from 1 to ${MAX_TABLE}, not ${JSON.stringify(value)}`,
          );
        }
        this.#table = table;
        return;
      }
    }
  }

  #peerKey(written: string, value: string, line: number): void {
    const peer = this.#peer!;
    const key = canonicalKey(written, PEER_KEYS);
    if (key === undefined) {
      const belongsInInterface =
        canonicalKey(written, INTERFACE_KEYS) ?? canonicalKey(written, IGNORED_INTERFACE_KEYS);
      throw this.#unknownKey(written, line, "Peer", belongsInInterface);
    }
    this.#refuseRepeat(key, line);

    switch (key satisfies PeerKey) {
      case "PublicKey": {
        const publicKey = this.#key(value, "PublicKey", line);
        if (this.#ownPublicKey !== null && publicKey.equals(this.#ownPublicKey)) {
          throw this.#error(
            "ERR_CONFIG_VALUE",
            line,
            "PublicKey is this interface's own public key; a peer cannot be the interface itself",
          );
        }
        const firstLine = this.#peerKeyLines.get(encodeKey(publicKey));
        if (firstLine !== undefined) {
          throw this.#error(
            "ERR_CONFIG_DUPLICATE_PEER",
            line,
            `duplicate peer: this PublicKey is already given on line ${firstLine}`,
          );
        }
        this.#peerKeyLines.set(encodeKey(publicKey), line);
        peer.publicKey = publicKey;
        return;
      }
      case "PresharedKey":
        peer.presharedKey = this.#key(value, "PresharedKey", line);
        return;
      case "Endpoint":
        try {
          peer.endpoint = parseEndpointSetting(value);
        } catch (error) {
          if (!(error instanceof ConfigError)) throw error;
          throw this.#error(error.code, line, error.problem);
        }
        return;
      case "AllowedIPs":
        // As in `wg`: an empty value is an empty list, but an empty item is a mistake.
        if (value === "") return;
        for (const entry of value.split(",").map((part) => part.trim())) {
          const { address, cidr } = this.#cidr(entry, "AllowedIPs", line);
          const prefix = { address: maskHostBits(address, cidr), cidr };
          this.#noteAllowedIpOwner(formatCidr(prefix.address, prefix.cidr), peer.line, line);
          peer.allowedIps.push(prefix);
        }
        return;
      case "PersistentKeepalive": {
        const seconds = /^off$/i.test(value) ? 0 : parseDecimal(value);
        if (seconds === null || seconds > MAX_PORT) {
          throw this.#error(
            "ERR_CONFIG_VALUE",
            line,
            `PersistentKeepalive must be "off" or seconds from 0 to 65535, not ${JSON.stringify(value)}`,
          );
        }
        peer.persistentKeepalive = seconds;
        return;
      }
    }
  }

  /**
   * A prefix routes to one peer only; `wg` gives it to the last peer that lists it. Two peers
   * listing the same prefix is nearly always a copied [Peer] block, so it is worth a warning.
   */
  #noteAllowedIpOwner(prefix: string, peerLine: number, line: number): void {
    const ownerLine = this.#allowedIpPeerLines.get(prefix);
    if (ownerLine !== undefined && ownerLine !== peerLine) {
      this.#warn(
        line,
        `AllowedIPs ${prefix} is also given for the [Peer] on line ${ownerLine}; a prefix routes to one peer, the last one that lists it`,
      );
    }
    this.#allowedIpPeerLines.set(prefix, peerLine);
  }

  #refuseRepeat(key: string, line: number): void {
    if (REPEATABLE_KEYS.has(key)) return;
    const firstLine = this.#keyLines.get(key);
    if (firstLine !== undefined) {
      throw this.#error(
        "ERR_CONFIG_SYNTAX",
        line,
        `${key} is given twice in [${this.#section}] (first on line ${firstLine})`,
      );
    }
    this.#keyLines.set(key, line);
  }

  #refuseBothPrivateKeySources(other: "PrivateKey" | "PrivateKeyFile", line: number): void {
    const otherLine = this.#keyLines.get(other);
    if (otherLine !== undefined) {
      throw this.#error(
        "ERR_CONFIG_SYNTAX",
        line,
        `PrivateKey and PrivateKeyFile are both given (the other on line ${otherLine}); give one`,
      );
    }
  }

  #privateKeyFromFile(value: string, line: number): Buffer {
    if (value === "") {
      throw this.#error("ERR_CONFIG_VALUE", line, "PrivateKeyFile needs a path");
    }
    const path = resolve(dirname(this.#file), value);
    let text: string;
    try {
      text = this.#readFile(path);
    } catch (error) {
      throw this.#error(
        "ERR_CONFIG_FILE",
        line,
        `cannot read PrivateKeyFile ${JSON.stringify(path)}: ${describeCause(error)}`,
      );
    }
    if (this.#onFileSystem) {
      const warning = keyFilePermissionWarning(path, statSync(path), "a private key");
      if (warning) this.#warn(line, warning);
    }
    // `wg genkey > file` leaves a newline after the key.
    return this.#key(text.trim(), `the private key in ${path}`, line);
  }

  /** Key values are secrets (PrivateKey, PresharedKey), so messages never repeat them. */
  #key(value: string, what: string, line: number): Buffer {
    try {
      return decodeKey(value, what);
    } catch (error) {
      if (!(error instanceof KeyFormatError)) throw error;
      // Well-formed base64 of the wrong size (a truncated key, a hex key) is worth telling apart.
      const decodedLength = Buffer.from(value, "base64").length;
      const isBase64 =
        value.length > 0 && value.length % 4 === 0 && /^[A-Za-z0-9+/]+={0,2}$/.test(value);
      if (isBase64 && decodedLength !== 32) {
        throw this.#error(
          "ERR_CONFIG_KEY_LENGTH",
          line,
          `${what} decodes to ${decodedLength} bytes; a key is 32 bytes (44 base64 characters ending in "=")`,
        );
      }
      throw this.#error("ERR_CONFIG_KEY", line, error.message);
    }
  }

  #cidr(text: string, key: string, line: number): { address: Uint8Array; cidr: number } {
    if (text === "") {
      throw this.#error("ERR_CONFIG_CIDR", line, `${key} has an empty item in its list`);
    }
    try {
      return parseCidr(text);
    } catch (error) {
      if (!(error instanceof InvalidCidrError)) throw error;
      throw this.#error("ERR_CONFIG_CIDR", line, `${key}: ${error.message}`);
    }
  }

  #unknownKey(
    written: string,
    line: number,
    section: "Interface" | "Peer",
    belongsElsewhereAs: string | undefined,
  ): ConfigError {
    const elsewhere = section === "Interface" ? "Peer" : "Interface";
    const hint =
      belongsElsewhereAs === undefined ? "" : ` (${belongsElsewhereAs} belongs in [${elsewhere}])`;
    return this.#error(
      "ERR_CONFIG_UNKNOWN_KEY",
      line,
      `unknown key ${JSON.stringify(written)} in [${section}]${hint}`,
    );
  }

  #warn(line: number, problem: string): void {
    this.#warnings.push(`${locationPrefix(this.#file, line)}${problem}`);
  }

  #error(code: ConfigErrorCode, line: number, problem: string): ConfigError {
    return new ConfigError(code, this.#file, line, problem);
  }
}

function canonicalKey<Name extends string>(
  written: string,
  names: readonly Name[],
): Name | undefined {
  const lower = written.toLowerCase();
  return names.find((name) => name.toLowerCase() === lower);
}

/** Digits only: "+5", "5.0", "1e3" or " 5" are typos, not numbers. Ten digits covers 2^32. */
function parseDecimal(text: string): number | null {
  return /^[0-9]{1,10}$/.test(text) ? Number(text) : null;
}

/** As `wg` reads it: "off", decimal, or hexadecimal after "0x". */
function parseFwmark(text: string): number | null {
  if (/^off$/i.test(text)) return 0;
  const value = /^0x[0-9a-f]{1,8}$/i.test(text) ? parseInt(text.slice(2), 16) : parseDecimal(text);
  return value !== null && value <= MAX_FWMARK ? value : null;
}

function maskHostBits(address: Uint8Array, cidr: number): Uint8Array {
  const masked = new Uint8Array(address.length);
  for (let i = 0; i < address.length; i++) {
    const prefixBitsInByte = Math.min(Math.max(cidr - i * 8, 0), 8);
    masked[i] = address[i]! & (0xff << (8 - prefixBitsInByte));
  }
  return masked;
}

/**
 * Parses `203.0.113.1:51820`, `[fd00::1]:51820` or `hub.example.net:51820`. A host name is kept
 * as written, to be resolved when the tunnel comes up ({@link resolveEndpoint}). Throws a
 * ConfigError with code ERR_CONFIG_ENDPOINT and no file or line, which parseConfig fills in.
 */
export function parseEndpointSetting(text: string): EndpointSpec {
  const trimmed = text.trim();
  try {
    return parseEndpoint(trimmed, { names: true });
  } catch (error) {
    if (!(error instanceof EndpointFormatError)) throw error;
    throw new ConfigError(
      "ERR_CONFIG_ENDPOINT",
      "",
      0,
      `invalid endpoint ${JSON.stringify(trimmed)}: ${error.message}`,
    );
  }
}

export interface ResolveEndpointOptions {
  /** The resolver; tests pass their own so they need no DNS. */
  lookup?: (host: string) => Promise<{ address: string }>;
}

/**
 * Turns an endpoint into an address a UDP socket can send to: numeric hosts as they are, names
 * through the system resolver (dns.lookup, so /etc/hosts and nsswitch apply, as for `wg`).
 */
export async function resolveEndpoint(
  spec: EndpointSpec,
  options: ResolveEndpointOptions = {},
): Promise<Endpoint> {
  if (spec.kind === "address") return spec.endpoint;
  const lookupHost = options.lookup ?? ((name: string) => lookup(name));
  try {
    const { address } = await lookupHost(spec.name);
    return endpointOf(address, spec.port);
  } catch (error) {
    throw new EndpointResolutionError(spec.name, error);
  }
}

/**
 * The interface name a configuration file stands for, as wg-quick derives it:
 * "/etc/edgetun/edge0.conf" → "edge0". The name must fit Linux's 15-character limit and
 * wg-quick's character set.
 */
export function interfaceNameFromPath(path: string): string {
  const fileName = basename(path);
  const name = fileName.endsWith(".conf") ? fileName.slice(0, -".conf".length) : null;
  const fail = (problem: string): ConfigError =>
    new ConfigError("ERR_CONFIG_VALUE", path, 0, problem);
  if (name === null) {
    throw fail(
      'the file name must be the interface name followed by ".conf", as for wg-quick (e.g. edge0.conf)',
    );
  }
  // "." and ".." match wg-quick's pattern, but the kernel refuses them as interface names.
  const isValid =
    name !== "." &&
    name !== ".." &&
    new RegExp(`^[a-zA-Z0-9_=+.-]{1,${MAX_INTERFACE_NAME_LENGTH}}$`).test(name);
  if (!isValid) {
    throw fail(
      `interface name ${JSON.stringify(name)} must be 1 to ${MAX_INTERFACE_NAME_LENGTH} characters of a-z A-Z 0-9 _ = + . -`,
    );
  }
  return name;
}
/** wg-quick's Table values: off, auto, main (254) or a number; names of rt_tables aside. */
function parseTable(text: string): RouteTable | null {
  const lower = text.trim().toLowerCase();
  if (lower === "off") return { kind: "off" };
  if (lower === "auto") return { kind: "auto" };
  if (lower === "main") return { kind: "table", id: MAIN_TABLE };
  const id = parseDecimal(text.trim());
  if (id === null || id < 1 || id > MAX_TABLE) return null;
  return { kind: "table", id };
}
