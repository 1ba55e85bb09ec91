/**
 * The control socket: the line protocol that Debian's `wg` (and every other client of
 * userspace WireGuard implementations) speaks over `/var/run/wireguard/<interface>.sock`.
 *
 * A request is `get=1\n\n`, or `set=1\n`, `key=value\n` lines and `\n`. The reply to a get
 * lists the device and then each peer as `key=value` lines; every reply ends `errno=N\n\n`,
 * N being 0 or a negative Linux errno.
 *
 * Errno policy:
 * - a set is parsed and validated whole before anything changes, so a rejected request leaves
 *   the device exactly as it was (wireguard-go instead applies line by line up to the error);
 * - -EPROTO: a line without "=", a key that is not part of the protocol, an unknown operation;
 * - -EINVAL: a value that does not parse, or a protocol key where it cannot be set (a peer
 *   key before any `public_key`, a device key inside a peer section, a read-only key);
 * - -EADDRINUSE (or the code the host's error carries): the listen port could not be bound;
 * - -EEXIST: a route for a new allowed IP is already there through something else (the
 *   daemon routes allowed IPs, see src/host/netif.ts);
 * - -EMSGSIZE: a line or request over the size limits; the connection is then closed, as it
 *   is after an unknown operation, since the framing can no longer be trusted;
 * - -ENOBUFS: every client together holds more unanswered bytes than the server keeps; the
 *   connection that would go over is answered so and closed, the others carry on.
 * A rejected set only costs its own reply: the connection stays usable.
 *
 * Hostile or broken clients are bounded: at most {@link DEFAULT_MAX_CONNECTIONS} connections
 * (more are closed at once), a connection silent for {@link DEFAULT_IDLE_TIMEOUT_MS} or with a
 * request unfinished after {@link DEFAULT_REQUEST_TIMEOUT_MS} is closed, and the bytes held
 * for unanswered requests are capped per request and in total, so memory returns to where it
 * was once the clients are gone.
 */
import { channel } from "node:diagnostics_channel";
import { chmod, link, lstat, mkdir, unlink } from "node:fs/promises";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { constants } from "node:os";
import { basename, join } from "node:path";
import type { Device } from "../core/device.js";
import { formatCidr, parseCidr } from "../core/ipaddr.js";
import {
  formatEndpoint,
  parseEndpoint,
  EndpointFormatError,
  type Endpoint,
} from "../core/endpoint.js";
import { asAreaError, UapiRequestError, UapiSocketError } from "./errors.js";
import {
  ReconfigurationError,
  type ChangeSource,
  type ConfigChange,
  type PeerChange,
  type Prefix,
} from "./reconfigure.js";
import { redactKeyShaped } from "../core/redact.js";
import { DEFAULT_UAPI_DIRECTORY, ZERO_KEY_HEX } from "./uapi-client.js";

/** What the control socket needs from the daemon: the state to answer `get`, and the queue. */
export interface UapiHost {
  device: Device;
  listenPort(): number;
  fwmark(): number;
  /**
   * Applies a parsed `set` through the interface's one reconfiguration queue
   * (src/host/reconfigure.ts); rejects with a ReconfigurationError, the device unchanged.
   */
  reconfigure(change: ConfigChange, source: ChangeSource): Promise<unknown>;
  /** Brings the counters up to date before a `get` reads them (the native receive path). */
  beforeRead?(): void;
}

export { DEFAULT_UAPI_DIRECTORY };
/**
 * A request larger than this is refused: room for `wg syncconf` of about 150,000 peers with
 * an endpoint and a few allowed IPs each (some 200 bytes a peer).
 */
export const DEFAULT_MAX_REQUEST_BYTES = 32 << 20;
/** Unanswered bytes all connections together may hold: two requests of the largest size. */
export const DEFAULT_MAX_BUFFERED_BYTES = 2 * DEFAULT_MAX_REQUEST_BYTES;
/** `wg` opens one connection per command; dozens of tools at once is still plenty. */
export const DEFAULT_MAX_CONNECTIONS = 64;
/** A connection that sends nothing for this long (and is not being answered) is closed. */
export const DEFAULT_IDLE_TIMEOUT_MS = 10_000;
/** A request must be complete this long after its first byte: no slow drip holds a slot. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;
/** The longest legitimate line (a scoped IPv6 endpoint) is under 100 bytes. */
export const MAX_LINE_BYTES = 4096;

/**
 * Rejected sets and dropped connections are published here as {@link UapiDiagnostic}, since
 * the errno a client sees says little about which line was wrong.
 */
export const uapiDiagnostics = channel("edgetun:uapi");

export interface UapiDiagnostic {
  readonly operation: "set" | "connection" | "refused";
  /** Negative errno, as sent to the client. */
  readonly errno: number;
  readonly reason: string;
}

const { EINVAL, EIO, EMSGSIZE, ENOBUFS, EPROTO, ETIMEDOUT } = constants.errno;

// ---------------------------------------------------------------------------------------
// get

/** The whole reply to `get=1`, ending `errno=0\n\n`. */
export function handleGet(host: UapiHost): string {
  return Buffer.concat(getReply(host)).toString("latin1");
}

/**
 * The reply to `get=1` as the bytes the socket sends, in chunks. Written peer by peer (the
 * protocol's text is ASCII): a hub's reply is megabytes, and as strings kept until the whole
 * was joined it outlived V8's young generation, each `wg show` leaving the old generation
 * grown by several times the reply; chunks of a fixed size leave no larger garbage behind
 * than the reply itself.
 */
export function getReply(host: UapiHost): Buffer[] {
  host.beforeRead?.();
  const device = host.device;
  const reply = new ReplyBuffer();
  if (device.identity) reply.line(`private_key=${hex(device.identity.privateKey.raw)}`);
  reply.line(`listen_port=${host.listenPort()}`);
  const fwmark = host.fwmark();
  if (fwmark !== 0) reply.line(`fwmark=${fwmark}`);
  for (const peer of device.peers.values()) {
    const handshakeMs = peer.lastHandshakeWallMs;
    const seconds = Math.floor(handshakeMs / 1000);
    let text =
      `public_key=${hex(peer.publicKey)}\npreshared_key=${hex(peer.presharedKey)}\n` +
      `protocol_version=1\n` +
      (peer.endpoint ? `endpoint=${formatEndpoint(peer.endpoint)}\n` : "") +
      `last_handshake_time_sec=${seconds}\n` +
      `last_handshake_time_nsec=${Math.floor((handshakeMs - seconds * 1000) * 1e6)}\n` +
      `tx_bytes=${peer.txBytes}\nrx_bytes=${peer.rxBytes}\n` +
      `persistent_keepalive_interval=${peer.persistentKeepalive}`;
    for (const { address, cidr } of device.allowedIps.entriesFor(peer)) {
      text += `\nallowed_ip=${formatCidr(address, cidr)}`;
    }
    reply.line(text);
  }
  reply.line("errno=0\n");
  return reply.bytes();
}

const REPLY_CHUNK_BYTES = 64 * 1024;
/** Chunks kept for the next reply once sent: a 5,000-peer reply is about 28. */
const SPARE_REPLY_CHUNKS = 64;
/**
 * Chunks of replies already sent, reused by the next: fresh ones outlived the young
 * generation while a reply was built and stayed allocated until the next full collection,
 * megabytes for each `wg show` of a hub.
 */
const spareReplyChunks: Buffer[] = [];

/** Gives a reply's chunks back for reuse, once the socket no longer needs them. */
export function recycleReplyChunks(chunks: readonly Buffer[]): void {
  for (const chunk of chunks) {
    // Only the chunks of the standard size, each a whole ArrayBuffer of its own.
    const memory = chunk.buffer as ArrayBuffer;
    if (chunk.byteOffset !== 0 || memory.byteLength !== REPLY_CHUNK_BYTES) continue;
    if (spareReplyChunks.length < SPARE_REPLY_CHUNKS) spareReplyChunks.push(Buffer.from(memory));
  }
}

/** ASCII lines appended to chunks of REPLY_CHUNK_BYTES (or one line's length, if longer). */
class ReplyBuffer {
  readonly #chunks: Buffer[] = [];
  #chunk: Buffer = Buffer.allocUnsafe(0);
  #length = 0;

  line(text: string): void {
    if (this.#length + text.length + 1 > this.#chunk.length) {
      if (this.#length > 0) this.#chunks.push(this.#chunk.subarray(0, this.#length));
      this.#chunk =
        text.length + 1 > REPLY_CHUNK_BYTES
          ? Buffer.allocUnsafe(text.length + 1)
          : (spareReplyChunks.pop() ?? Buffer.allocUnsafeSlow(REPLY_CHUNK_BYTES));
      this.#length = 0;
    }
    this.#length += this.#chunk.write(text, this.#length, "latin1");
    this.#chunk[this.#length++] = 0x0a;
  }

  bytes(): Buffer[] {
    if (this.#length > 0) this.#chunks.push(this.#chunk.subarray(0, this.#length));
    this.#length = 0;
    return this.#chunks;
  }
}

const ZERO_KEY = Buffer.alloc(32);

/** Hex of a key without copying it; the all-zero key (no pre-shared key) as a constant. */
function hex(key: Buffer): string {
  return key.equals(ZERO_KEY) ? ZERO_KEY_HEX : key.toString("hex");
}

// ---------------------------------------------------------------------------------------
// set: parsing and validation, with no effect on the device

type PeerSection = { -readonly [K in keyof PeerChange]: PeerChange[K] } & {
  allowedIps: Prefix[];
  publicKey: Buffer;
};

type SetRequest = { -readonly [K in keyof ConfigChange]: ConfigChange[K] } & {
  peers: PeerSection[];
};

/** The keys a `set=1` request may give for the device, and for a peer. */
export const DEVICE_KEYS: ReadonlySet<string> = new Set([
  "private_key",
  "listen_port",
  "fwmark",
  "replace_peers",
]);
export const PEER_KEYS: ReadonlySet<string> = new Set([
  "public_key",
  "remove",
  "update_only",
  "preshared_key",
  "endpoint",
  "persistent_keepalive_interval",
  "replace_allowed_ips",
  "allowed_ip",
  "protocol_version",
]);
const READ_ONLY_KEYS = new Set([
  "last_handshake_time_sec",
  "last_handshake_time_nsec",
  "tx_bytes",
  "rx_bytes",
]);

function parseSetRequest(lines: readonly string[]): SetRequest {
  const request: SetRequest = { replacePeers: false, peers: [] };
  let section: PeerSection | null = null;
  for (const [index, line] of lines.entries()) {
    const equals = line.indexOf("=");
    if (equals <= 0) throw new UapiRequestError(EPROTO, `line ${index + 1}: not key=value`);
    const key = line.slice(0, equals);
    const value = line.slice(equals + 1);
    try {
      if (key === "public_key") {
        section = {
          publicKey: parseKey(value),
          remove: false,
          updateOnly: false,
          replaceAllowedIps: false,
          allowedIps: [],
        };
        request.peers.push(section);
      } else if (section === null) {
        parseDeviceLine(request, key, value);
      } else {
        parsePeerLine(section, key, value);
      }
    } catch (error) {
      if (error instanceof UapiRequestError) {
        error.message = `line ${index + 1} (${key}): ${error.message}`;
      }
      throw error;
    }
  }
  return request;
}

function parseDeviceLine(request: SetRequest, key: string, value: string): void {
  switch (key) {
    case "private_key": {
      const raw = parseKey(value);
      request.privateKey = raw.every((byte) => byte === 0) ? null : raw;
      return;
    }
    case "listen_port":
      request.listenPort = parseDecimal(value, 0xffff);
      return;
    case "fwmark":
      request.fwmark = parseDecimal(value, 0xffffffff);
      return;
    case "replace_peers":
      parseTrue(value);
      request.replacePeers = true;
      return;
  }
  if (PEER_KEYS.has(key)) throw new UapiRequestError(EINVAL, "a peer key before any public_key");
  throw unknownKey(key);
}

function parsePeerLine(section: PeerSection, key: string, value: string): void {
  switch (key) {
    case "remove":
      parseTrue(value);
      section.remove = true;
      return;
    case "update_only":
      parseTrue(value);
      section.updateOnly = true;
      return;
    case "preshared_key":
      section.presharedKey = parseKey(value);
      return;
    case "endpoint":
      section.endpoint = parseNumericEndpoint(value);
      return;
    case "persistent_keepalive_interval":
      section.persistentKeepalive = parseDecimal(value, 0xffff);
      return;
    case "replace_allowed_ips":
      parseTrue(value);
      section.replaceAllowedIps = true;
      // Prefixes listed earlier in this section would be removed again at this point.
      section.allowedIps = [];
      return;
    case "allowed_ip":
      section.allowedIps.push(parseAllowedIp(value));
      return;
    case "protocol_version":
      if (value !== "1") throw new UapiRequestError(EINVAL, "only protocol version 1 exists");
      return;
  }
  if (DEVICE_KEYS.has(key)) {
    throw new UapiRequestError(EINVAL, "a device key inside a peer section");
  }
  throw unknownKey(key);
}

function unknownKey(key: string): UapiRequestError {
  if (READ_ONLY_KEYS.has(key)) return new UapiRequestError(EINVAL, "read-only");
  return new UapiRequestError(EPROTO, "not a key of the protocol");
}

function parseKey(value: string): Buffer {
  if (!/^[0-9a-fA-F]{64}$/.test(value)) {
    throw new UapiRequestError(EINVAL, "a key is 64 hexadecimal digits");
  }
  return Buffer.from(value, "hex");
}

function parseDecimal(value: string, max: number): number {
  const number = /^[0-9]{1,10}$/.test(value) ? Number(value) : NaN;
  if (!(number <= max)) throw new UapiRequestError(EINVAL, `not a decimal number 0..${max}`);
  return number;
}

function parseTrue(value: string): void {
  if (value !== "true") throw new UapiRequestError(EINVAL, 'the only value is "true"');
}

function parseAllowedIp(value: string): { address: Uint8Array; cidr: number } {
  // parseCidr also takes a bare address; the protocol always writes the prefix length.
  if (!value.includes("/")) throw new UapiRequestError(EINVAL, "not a CIDR prefix");
  try {
    return parseCidr(value);
  } catch (error) {
    throw new UapiRequestError(EINVAL, (error as Error).message);
  }
}

/** "192.0.2.1:51820", "[2001:db8::1]:51820" or "[fe80::1%eth0]:51820"; numeric only. */
function parseNumericEndpoint(value: string): Endpoint {
  try {
    const spec = parseEndpoint(value, { names: false, portZero: true });
    if (spec.kind === "address") return spec.endpoint;
  } catch (error) {
    if (!(error instanceof EndpointFormatError)) throw error;
    throw new UapiRequestError(EINVAL, `invalid endpoint: ${error.message}`);
  }
  throw new UapiRequestError(EINVAL, "an endpoint is IPv4:port or [IPv6]:port");
}

// ---------------------------------------------------------------------------------------
// set: applying a validated request

/**
 * Applies a `set=1` request; `lines` are the `key=value` lines between `set=1` and the blank
 * line. Returns 0, or a negative errno with the device unchanged: the request is parsed and
 * validated whole, then applied through the daemon's reconfiguration queue, which runs one
 * change at a time and all or nothing.
 */
export async function handleSet(host: UapiHost, lines: readonly string[]): Promise<number> {
  let request: SetRequest;
  try {
    request = parseSetRequest(lines);
  } catch (error) {
    if (!(error instanceof UapiRequestError)) throw error;
    return rejectSet(-error.errno, error.message);
  }
  try {
    // wg set, wg setconf/syncconf and edgetun syncconf all arrive as this one request.
    await host.reconfigure(request, "control socket");
    return 0;
  } catch (error) {
    if (error instanceof ReconfigurationError) return rejectSet(error.errno, error.message);
    return rejectSet(-EIO, `set failed unexpectedly: ${messageOf(error)}`);
  }
}

function rejectSet(errno: number, reason: string): number {
  publish({ operation: "set", errno, reason });
  return errno;
}

/** Reasons may quote a request's line, and a line may hold a key: redacted before they go. */
function publish(diagnostic: UapiDiagnostic): void {
  if (!uapiDiagnostics.hasSubscribers) return;
  uapiDiagnostics.publish({ ...diagnostic, reason: redactKeyShaped(diagnostic.reason) });
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ---------------------------------------------------------------------------------------
// The socket

export interface UapiServerOptions {
  /** Where `<interface>.sock` goes; `wg` only looks in the default. */
  directory?: string;
  maxRequestBytes?: number;
  maxBufferedBytes?: number;
  maxConnections?: number;
  idleTimeoutMs?: number;
  requestTimeoutMs?: number;
}

type Limits = Required<Omit<UapiServerOptions, "directory">>;

/** Bytes held for unanswered requests, over all connections of one server. */
class BufferBudget {
  used = 0;
  constructor(readonly limit: number) {}

  take(bytes: number): boolean {
    if (this.used + bytes > this.limit) return false;
    this.used += bytes;
    return true;
  }

  release(bytes: number): void {
    this.used -= bytes;
  }
}

type Request = (
  | { readonly kind: "get" }
  | { readonly kind: "set"; readonly lines: string[] }
  | { readonly kind: "error"; readonly errno: number }
) & {
  /** Bytes of the budget it holds until answered. */
  readonly bytes: number;
};

/** One client: splits its bytes into requests and answers them in order. */
class UapiConnection {
  readonly #socket: Socket;
  readonly #host: UapiHost;
  readonly #limits: Limits;
  readonly #budget: BufferBudget;
  /** Budget bytes this connection holds: its partial request and its unanswered ones. */
  #heldBytes = 0;
  #requestTimer: NodeJS.Timeout | null = null;
  #state: "operation" | "get" | "set" = "operation";
  #partialLine: Buffer[] = [];
  #partialLineBytes = 0;
  #requestBytes = 0;
  #setLines: string[] = [];
  readonly #queue: Request[] = [];
  #answering = false;
  /** Framing lost (garbage, oversize): input is ignored and the connection closes. */
  #broken = false;
  #clientEnded = false;

  constructor(socket: Socket, host: UapiHost, limits: Limits, budget: BufferBudget) {
    this.#socket = socket;
    this.#host = host;
    this.#limits = limits;
    this.#budget = budget;
    socket.setTimeout(limits.idleTimeoutMs, () => {
      // Silence while a set is applied is ours, not the client's.
      if (!this.#answering) this.#timeOut("no bytes for the idle timeout");
    });
    socket.on("close", () => {
      if (this.#requestTimer) clearTimeout(this.#requestTimer);
      this.#partialLine = [];
      this.#setLines = [];
      this.#queue.length = 0;
      this.#budget.release(this.#heldBytes);
      this.#heldBytes = 0;
    });
    socket.on("data", (chunk: Buffer) => this.#receive(chunk));
    socket.on("end", () => {
      this.#clientEnded = true;
      if (!this.#answering) socket.end();
    });
    // EPIPE, ECONNRESET: the client went away; nothing to tell it.
    socket.on("error", () => socket.destroy());
  }

  #timeOut(reason: string): void {
    publish({ operation: "connection", errno: -ETIMEDOUT, reason });
    this.#socket.destroy();
  }

  #receive(chunk: Buffer): void {
    let start = 0;
    while (!this.#broken && start < chunk.length) {
      const newline = chunk.indexOf(0x0a, start);
      const end = newline === -1 ? chunk.length : newline;
      const bytes = end - start + (newline === -1 ? 0 : 1);
      if (this.#requestBytes === 0 && this.#requestTimer === null) {
        this.#requestTimer = setTimeout(
          () => this.#timeOut("a request unfinished at the request timeout"),
          this.#limits.requestTimeoutMs,
        );
      }
      this.#partialLineBytes += end - start;
      this.#requestBytes += bytes;
      if (this.#partialLineBytes > MAX_LINE_BYTES) {
        this.#fail(EMSGSIZE, `a line longer than ${MAX_LINE_BYTES} bytes`);
      } else if (this.#requestBytes > this.#limits.maxRequestBytes) {
        this.#fail(EMSGSIZE, `a request longer than ${this.#limits.maxRequestBytes} bytes`);
      } else if (!this.#budget.take(bytes)) {
        this.#fail(ENOBUFS, `clients hold more than ${this.#budget.limit} unanswered bytes`);
      } else if (newline === -1) {
        this.#heldBytes += bytes;
        this.#partialLine.push(Buffer.from(chunk.subarray(start)));
        start = chunk.length;
      } else {
        this.#heldBytes += bytes;
        this.#partialLine.push(chunk.subarray(start, newline));
        const line = Buffer.concat(this.#partialLine).toString("latin1");
        this.#partialLine = [];
        this.#partialLineBytes = 0;
        this.#line(line);
        start = newline + 1;
      }
    }
    // #answer handles every error it expects; anything else must not take the daemon down.
    this.#answer().catch(() => this.#socket.destroy());
  }

  #line(line: string): void {
    switch (this.#state) {
      case "operation":
        if (line === "get=1") this.#state = "get";
        else if (line === "set=1") this.#state = "set";
        else this.#fail(EPROTO, `unknown operation ${JSON.stringify(line.slice(0, 40))}`);
        return;
      case "get":
        if (line !== "") this.#fail(EINVAL, "get=1 takes no arguments");
        else this.#complete({ kind: "get", bytes: this.#requestBytes });
        return;
      case "set":
        if (line !== "") this.#setLines.push(line);
        else this.#complete({ kind: "set", lines: this.#setLines, bytes: this.#requestBytes });
        return;
    }
  }

  #complete(request: Request): void {
    this.#queue.push(request);
    this.#state = "operation";
    this.#setLines = [];
    this.#requestBytes = 0;
    if (this.#requestTimer) clearTimeout(this.#requestTimer);
    this.#requestTimer = null;
  }

  #fail(errno: number, reason: string): void {
    publish({ operation: "connection", errno: -errno, reason });
    if (this.#requestTimer) clearTimeout(this.#requestTimer);
    this.#requestTimer = null;
    // What the broken request held goes back now; its reply holds nothing.
    const partial = this.#heldBytes - this.#queue.reduce((sum, r) => sum + r.bytes, 0);
    this.#budget.release(partial);
    this.#heldBytes -= partial;
    this.#queue.push({ kind: "error", errno, bytes: 0 });
    this.#broken = true;
    this.#partialLine = [];
    this.#setLines = [];
  }

  async #answer(): Promise<void> {
    if (this.#answering) return;
    this.#answering = true;
    // Paused while answering, so a client cannot pile up requests faster than they are served.
    this.#socket.pause();
    const socket = this.#socket;
    try {
      for (let request = this.#queue.shift(); request; request = this.#queue.shift()) {
        const reply = await this.#reply(request);
        if (socket.destroyed) return;
        this.#budget.release(request.bytes);
        this.#heldBytes -= request.bytes;
        let flushed = true;
        if (typeof reply === "string") flushed = socket.write(reply);
        else {
          reply.forEach((chunk, i) => {
            // The last chunk's callback runs once it (so every one) has gone, or on failure.
            const last = i === reply.length - 1;
            flushed = socket.write(chunk, last ? () => recycleReplyChunks(reply) : undefined);
          });
        }
        if (request.kind === "error") {
          socket.destroySoon();
          return;
        }
        if (!flushed) await drained(socket);
      }
      if (this.#clientEnded) socket.end();
    } finally {
      this.#answering = false;
      if (!this.#broken && !socket.destroyed) socket.resume();
    }
  }

  async #reply(request: Request): Promise<string | Buffer[]> {
    switch (request.kind) {
      case "get":
        try {
          return getReply(this.#host);
        } catch (error) {
          publish({ operation: "connection", errno: -EIO, reason: messageOf(error) });
          return `errno=${-EIO}\n\n`;
        }
      case "set":
        return `errno=${await handleSet(this.#host, request.lines)}\n\n`;
      case "error":
        return `errno=${-request.errno}\n\n`;
    }
  }
}

function drained(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      socket.off("drain", done);
      socket.off("close", done);
      resolve();
    };
    socket.on("drain", done);
    socket.on("close", done);
  });
}

export class UapiServer {
  readonly path: string;
  readonly #server: Server;
  readonly #connections = new Set<Socket>();
  readonly #budget: BufferBudget;
  #closed = false;

  private constructor(path: string, server: Server, budget: BufferBudget) {
    this.path = path;
    this.#server = server;
    this.#budget = budget;
  }

  /** Open connections and the bytes they hold for unanswered requests. */
  get load(): { connections: number; bufferedBytes: number } {
    return { connections: this.#connections.size, bufferedBytes: this.#budget.used };
  }

  /**
   * Listens on `<directory>/<interfaceName>.sock`, replacing a stale socket left by a crashed
   * run. Fails with code "EADDRINUSE" if another daemon answers there.
   */
  static async listen(
    interfaceName: string,
    host: UapiHost,
    options: UapiServerOptions = {},
  ): Promise<UapiServer> {
    try {
      return await UapiServer.#listen(interfaceName, host, options);
    } catch (error) {
      throw asAreaError(error, (code, message, why) => new UapiSocketError(code, message, why));
    }
  }

  static async #listen(
    interfaceName: string,
    host: UapiHost,
    options: UapiServerOptions,
  ): Promise<UapiServer> {
    // wg-quick's rule for interface names; it also keeps the name a single path component.
    if (!/^[A-Za-z0-9_=+.-]{1,15}$/.test(interfaceName) || /^\.\.?$/.test(interfaceName)) {
      throw new UapiSocketError(
        "ERR_UAPI_INTERFACE_NAME",
        `${JSON.stringify(interfaceName)} is not an interface name (1 to 15 of A-Z a-z 0-9 _=+.-)`,
      );
    }
    const directory = options.directory ?? DEFAULT_UAPI_DIRECTORY;
    const limits: Limits = {
      maxRequestBytes: options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES,
      maxBufferedBytes: options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES,
      maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      idleTimeoutMs: options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
      requestTimeoutMs: options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
    };
    const budget = new BufferBudget(limits.maxBufferedBytes);
    const path = join(directory, `${interfaceName}.sock`);

    // Only a directory created here is made private; an existing one is the operator's.
    if (
      (await mkdir(directory, { recursive: true, mode: 0o700 }).catch(
        runtimeDirectoryError(directory),
      )) !== undefined
    ) {
      await chmod(directory, 0o700);
    }
    // The socket is bound and made private under a name `wg` does not list, and appears under
    // its own name only once it accepts (a hard link, which fails rather than replaces): `wg`
    // removes a `.sock` that refuses a connection, as it refuses between bind() and listen(),
    // and a `wg show` polling beside a starting daemon once took its socket away that way.
    const staging = join(directory, `.${interfaceName}.sock.new`);
    for (const stale of [path, staging]) {
      await removeStaleSocket(stale, interfaceName).catch(runtimeDirectoryError(directory));
    }

    const server = createServer({ allowHalfOpen: true });
    const uapi = new UapiServer(path, server, budget);
    // Past the cap the kernel's connection is closed at once, before any byte is read.
    server.maxConnections = limits.maxConnections;
    server.on("drop", () =>
      publish({
        operation: "refused",
        errno: -ENOBUFS,
        reason: `more than ${limits.maxConnections} connections at once`,
      }),
    );
    server.on("connection", (socket) => {
      uapi.#connections.add(socket);
      socket.on("close", () => uapi.#connections.delete(socket));
      new UapiConnection(socket, host, limits, budget);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(staging, () => {
        server.off("error", reject);
        resolve();
      });
    }).catch((error: unknown) => {
      // Another daemon won the race between the check above and our bind.
      if ((error as { code?: unknown }).code === "EADDRINUSE") throw anotherDaemon(interfaceName);
      runtimeDirectoryError(directory)(error);
    });
    try {
      await chmod(staging, 0o600);
      await link(staging, path).catch((error: unknown) => {
        if ((error as { code?: unknown }).code === "EEXIST") throw anotherDaemon(interfaceName);
        throw error;
      });
    } catch (error) {
      // Not close(): the name may be another daemon's socket; only the staging name is ours.
      uapi.#closed = true;
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await unlinkIfPresent(staging);
      throw error;
    }
    await unlinkIfPresent(staging);
    return uapi;
  }

  /** Stops listening, drops every connection and removes the socket file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const socket of this.#connections) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await unlinkIfPresent(this.path);
  }
}

/**
 * A non-root daemon (CAP_NET_ADMIN only) cannot create directories under /run: systemd makes
 * them with RuntimeDirectory=, owned by the service's user. Says so instead of a bare EACCES.
 */
export function runtimeDirectoryError(directory: string): (error: unknown) => never {
  return (error: unknown) => {
    const code = (error as { code?: unknown }).code;
    if (code !== "EACCES" && code !== "EPERM") throw error;
    throw new UapiSocketError(
      "ERR_RUNTIME_DIRECTORY",
      `cannot use ${directory} (${code}): without root, have it made and owned by this ` +
        `user first (systemd: RuntimeDirectory=${basename(directory)})`,
    );
  };
}

function anotherDaemon(interfaceName: string): UapiSocketError {
  return new UapiSocketError(
    "EADDRINUSE",
    `another daemon already serves interface ${interfaceName}: its control socket answers`,
  );
}

/** Removes `path` if it is a socket nobody accepts on; throws if somebody does. */
async function removeStaleSocket(path: string, interfaceName: string): Promise<void> {
  let stats;
  try {
    stats = await lstat(path);
  } catch (error) {
    if ((error as { code?: unknown }).code === "ENOENT") return;
    throw error;
  }
  if (!stats.isSocket()) {
    throw new UapiSocketError("EEXIST", `${path} exists and is not a socket; not replacing it`);
  }
  const live = await new Promise<boolean>((resolve, reject) => {
    const probe = createConnection(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ECONNREFUSED" || error.code === "ENOENT") resolve(false);
      // A full backlog still means somebody listens.
      else if (error.code === "EAGAIN") resolve(true);
      else reject(error);
    });
  });
  if (live) throw anotherDaemon(interfaceName);
  await unlinkIfPresent(path);
}

/** Removes a file; one already gone is fine. */
async function unlinkIfPresent(path: string): Promise<void> {
  await unlink(path).catch((error: unknown) => {
    if ((error as { code?: unknown }).code !== "ENOENT") throw error;
  });
}
