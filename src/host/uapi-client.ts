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

/**
 * Reads the lines of a `get=1` reply (the errno line left out): one pass, each line looked at
 * once, so the time is the reply's length. Keys the reply may carry that nobody here needs
 * (`protocol_version`, `last_handshake_time_nsec`) and unknown keys are passed over.
 */
export function parseGetReply(lines: readonly string[]): UapiDeviceState {
  const state: UapiDeviceState = { privateKeyHex: null, listenPort: 0, fwmark: 0, peers: [] };
  let peer: UapiPeerState | null = null;
  for (const line of lines) {
    const equals = line.indexOf("=");
    const key = line.slice(0, equals);
    const value = line.slice(equals + 1);
    if (key === "public_key") {
      peer = {
        publicKeyHex: value,
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
      if (key === "private_key") state.privateKeyHex = value === ZERO_KEY_HEX ? null : value;
      else if (key === "listen_port") state.listenPort = Number(value);
      else if (key === "fwmark") state.fwmark = Number(value);
    } else if (key === "allowed_ip") peer.allowedIps.push(value);
    else if (key === "preshared_key") peer.presharedKeyHex = value;
    else if (key === "endpoint") peer.endpoint = value;
    else if (key === "last_handshake_time_sec") peer.lastHandshakeSec = Number(value);
    else if (key === "rx_bytes") peer.rxBytes = Number(value);
    else if (key === "tx_bytes") peer.txBytes = Number(value);
    else if (key === "persistent_keepalive_interval") peer.persistentKeepalive = Number(value);
  }
  return state;
}

/** Sends one request to an interface's control socket and returns the reply's lines. */
export function uapiRequest(
  name: string,
  request: string,
  directory = DEFAULT_UAPI_DIRECTORY,
): Promise<string[]> {
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
      const lines = Buffer.concat(chunks)
        .toString("latin1")
        .split("\n")
        .filter((line) => line !== "");
      const errno = lines.at(-1)?.startsWith("errno=") ? lines.pop()! : undefined;
      if (errno && errno !== "errno=0") {
        reject(
          new UapiClientError(
            `${name}: request refused (${errno}${errnoName(errno)}); the interface is unchanged, the daemon's log says why`,
            "ERR_UAPI_REQUEST",
          ),
        );
      } else resolve(lines);
    });
    socket.write(request);
  });
}

/** Whether the reply so far ends with its empty line (which may straddle two chunks). */
function endsWithBlankLine(chunks: readonly Buffer[]): boolean {
  const NEWLINE = 0x0a;
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
