// The client side of the control socket (the server is uapi.ts): one request, and the reply
// to `get=1` read into the protocol's own terms. `edgetun show` turns that into `wg show`'s
// words, `edgetun syncconf` compares a file with it; both read it here, once. Kept free of the
// server's imports, so a command that only asks loads little.
import { createConnection } from "node:net";
import { constants as osConstants } from "node:os";
import { join } from "node:path";
import { UapiClientError } from "./errors.js";

/** Where wireguard-go, `wg` and edgetun keep the control sockets. */
export const DEFAULT_UAPI_DIRECTORY = "/var/run/wireguard";

/** What `get` says of a peer, in the protocol's spelling (keys in hex, zeros for none). */
export interface UapiPeerState {
  publicKeyHex: string;
  presharedKeyHex: string;
  endpoint: string | null;
  /** In the order the reply gives them. */
  allowedIps: string[];
  /** Seconds since the epoch, 0: never. */
  lastHandshakeSec: number;
  rxBytes: number;
  txBytes: number;
  persistentKeepalive: number;
}

export interface UapiDeviceState {
  /** Null when the interface has no private key. */
  privateKeyHex: string | null;
  listenPort: number;
  fwmark: number;
  /** In the order the reply gives them. */
  peers: UapiPeerState[];
}

export const ZERO_KEY_HEX = "0".repeat(64);

const NEWLINE = 0x0a;

/** The keys of a `get` reply read here. */
const GET_KEYS = [
  "private_key",
  "listen_port",
  "fwmark",
  "public_key",
  "preshared_key",
  "endpoint",
  "allowed_ip",
  "last_handshake_time_sec",
  "rx_bytes",
  "tx_bytes",
  "persistent_keepalive_interval",
] as const;
type GetKey = (typeof GET_KEYS)[number];
/** Each key by its length and first letter: a line's key is found without a string of it. */
const shapeOf = (length: number, firstLetter: number) => (length << 8) | firstLetter;
const GET_KEY_BY_SHAPE = new Map<number, GetKey>(
  GET_KEYS.map((key) => [shapeOf(key.length, key.charCodeAt(0)), key]),
);
if (GET_KEY_BY_SHAPE.size !== GET_KEYS.length) throw new Error("two get keys of one shape");

/**
 * Reads a `get=1` reply (its bytes, the errno line left out: uapiRequestBytes) in one pass
 * over its lines. A hub's reply is some 50,000 lines, and a freshly started `edgetun show`
 * spent tens of milliseconds making a string of each line and two more of its key and value;
 * here the reply is decoded once, lines and keys are found by position (a key by its length
 * and first letter, then checked in place), and only the values kept become strings. Keys
 * nobody here needs (`protocol_version`, `last_handshake_time_nsec`) and unknown keys are
 * passed over.
 */
export function parseGetReply(reply: Buffer): UapiDeviceState {
  const state: UapiDeviceState = { privateKeyHex: null, listenPort: 0, fwmark: 0, peers: [] };
  const text = reply.toString("latin1");
  let peer: UapiPeerState | null = null;
  let lineEnd: number;
  for (let lineStart = 0; lineStart < text.length; lineStart = lineEnd + 1) {
    const newline = text.indexOf("\n", lineStart);
    lineEnd = newline === -1 ? text.length : newline;
    const equals = text.indexOf("=", lineStart);
    if (equals === -1 || equals > lineEnd) continue;
    const key = GET_KEY_BY_SHAPE.get(shapeOf(equals - lineStart, text.charCodeAt(lineStart)));
    if (key === undefined || !text.startsWith(key, lineStart)) continue;
    const valueStart = equals + 1;
    if (key === "public_key") {
      peer = {
        publicKeyHex: text.slice(valueStart, lineEnd),
        presharedKeyHex: ZERO_KEY_HEX,
        endpoint: null,
        allowedIps: [],
        lastHandshakeSec: 0,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepalive: 0,
      };
      state.peers.push(peer);
    } else if (peer === null) {
      if (key === "private_key") state.privateKeyHex = keyHexAt(text, valueStart, lineEnd);
      else if (key === "listen_port") state.listenPort = numberAt(text, valueStart, lineEnd);
      else if (key === "fwmark") state.fwmark = numberAt(text, valueStart, lineEnd);
    } else if (key === "allowed_ip") peer.allowedIps.push(text.slice(valueStart, lineEnd));
    else if (key === "preshared_key") {
      peer.presharedKeyHex = keyHexAt(text, valueStart, lineEnd) ?? ZERO_KEY_HEX;
    } else if (key === "endpoint") peer.endpoint = text.slice(valueStart, lineEnd);
    else if (key === "last_handshake_time_sec") {
      peer.lastHandshakeSec = numberAt(text, valueStart, lineEnd);
    } else if (key === "rx_bytes") peer.rxBytes = numberAt(text, valueStart, lineEnd);
    else if (key === "tx_bytes") peer.txBytes = numberAt(text, valueStart, lineEnd);
    else if (key === "persistent_keepalive_interval") {
      peer.persistentKeepalive = numberAt(text, valueStart, lineEnd);
    }
  }
  return state;
}

/** A key's hex, or null for the all-zero key (none). */
function keyHexAt(text: string, start: number, end: number): string | null {
  const zero = end - start === ZERO_KEY_HEX.length && text.startsWith(ZERO_KEY_HEX, start);
  return zero ? null : text.slice(start, end);
}

const DIGIT_ZERO = 0x30;
function numberAt(text: string, start: number, end: number): number {
  // Most numbers in a hub's reply are one digit (no handshake yet, no keepalive, no bytes).
  if (end - start === 1) {
    const digit = text.charCodeAt(start) - DIGIT_ZERO;
    if (digit >= 0 && digit <= 9) return digit;
  }
  return Number(text.slice(start, end));
}

/** Sends one request to an interface's control socket and returns the reply's lines. */
export async function uapiRequest(
  name: string,
  request: string,
  directory = DEFAULT_UAPI_DIRECTORY,
): Promise<string[]> {
  return (await uapiRequestBytes(name, request, directory))
    .toString("latin1")
    .split("\n")
    .filter((line) => line !== "");
}

/** Asks an interface's control socket for its state (`get=1`) and reads the reply. */
export async function uapiGet(
  name: string,
  directory = DEFAULT_UAPI_DIRECTORY,
): Promise<UapiDeviceState> {
  return parseGetReply(await uapiRequestBytes(name, "get=1\n\n", directory));
}

/**
 * Sends one request to an interface's control socket and returns the reply's bytes without
 * its errno line; an errno other than 0 rejects.
 */
export function uapiRequestBytes(
  name: string,
  request: string,
  directory = DEFAULT_UAPI_DIRECTORY,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(join(directory, `${name}.sock`));
    // Chunks are kept as they come and decoded once: a reply of thousands of peers is
    // megabytes (the protocol's text is ASCII).
    const chunks: Buffer[] = [];
    let ended = false;
    socket.setTimeout(5000, () =>
      socket.destroy(new UapiClientError(`${name}: control socket timed out`, "ERR_UAPI_TIMEOUT")),
    );
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      if (!ended && endsWithBlankLine(chunks)) {
        ended = true;
        socket.end();
      }
    });
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT" || error.code === "ECONNREFUSED") {
        reject(
          new UapiClientError(
            `no edgetun or WireGuard interface named ${name} is running`,
            "ERR_NO_INTERFACE",
          ),
        );
      } else {
        reject(
          new UapiClientError(`${name}: control socket: ${error.message}`, "ERR_UAPI_REQUEST"),
        );
      }
    });
    socket.on("close", () => {
      const { body, errno } = splitErrnoLine(Buffer.concat(chunks));
      if (errno && errno !== "errno=0") {
        reject(
          new UapiClientError(
            `${name}: request refused (${errno}${errnoName(errno)}); the interface is unchanged, the daemon's log says why`,
            "ERR_UAPI_REQUEST",
          ),
        );
      } else resolve(body);
    });
    socket.write(request);
  });
}

/** A reply's last non-empty line when it is the errno line, and the bytes before it. */
function splitErrnoLine(reply: Buffer): { body: Buffer; errno: string | undefined } {
  let end = reply.length;
  while (end > 0 && reply[end - 1] === NEWLINE) end--;
  const lastLineStart = end === 0 ? 0 : reply.lastIndexOf(NEWLINE, end - 1) + 1;
  const lastLine = reply.toString("latin1", lastLineStart, end);
  return lastLine.startsWith("errno=")
    ? { body: reply.subarray(0, lastLineStart), errno: lastLine }
    : { body: reply.subarray(0, end), errno: undefined };
}

/** Whether the reply so far ends with its empty line (which may straddle two chunks). */
function endsWithBlankLine(chunks: readonly Buffer[]): boolean {
  const last = chunks.at(-1)!;
  if (last.length >= 2) return last.at(-1) === NEWLINE && last.at(-2) === NEWLINE;
  const before = chunks.at(-2);
  return last[0] === NEWLINE && before !== undefined && before.at(-1) === NEWLINE;
}

/** " EEXIST" for "errno=-17": what `wg` prints as text. */
function errnoName(line: string): string {
  const errno = -Number(line.slice("errno=".length));
  const names = osConstants.errno as Record<string, number>;
  const name = Object.keys(names).find((key) => names[key] === errno);
  return name ? ` ${name}` : "";
}
