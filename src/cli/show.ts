// `edgetun show`: reads an interface's state over its control socket (the same `get=1`
// request `wg` makes) and prints it in the shape of `wg show`, or as JSON for scripts.
import { createConnection } from "node:net";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { publicKeyOf } from "../core/keys.js";
import { UapiClientError } from "../host/errors.js";

export const DEFAULT_SOCKET_DIRECTORY = "/var/run/wireguard";

export interface PeerState {
  publicKey: string;
  presharedKey: boolean;
  endpoint: string | null;
  allowedIps: string[];
  latestHandshake: number; // seconds since the epoch, 0 = never
  rxBytes: number;
  txBytes: number;
  persistentKeepalive: number;
}

export interface InterfaceState {
  name: string;
  publicKey: string | null;
  listenPort: number;
  fwmark: number;
  peers: PeerState[];
}

/** Sends one request to an interface's control socket and returns the reply's lines. */
export function uapiRequest(
  name: string,
  request: string,
  directory = DEFAULT_SOCKET_DIRECTORY,
): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(join(directory, `${name}.sock`));
    let reply = "";
    socket.setEncoding("utf8");
    socket.setTimeout(5000, () =>
      socket.destroy(new UapiClientError(`${name}: control socket timed out`, "ERR_UAPI_TIMEOUT")),
    );
    socket.on("data", (chunk: string) => {
      reply += chunk;
      if (reply.endsWith("\n\n")) socket.end();
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
      const lines = reply.split("\n").filter((line) => line !== "");
      const errno = lines.find((line) => line.startsWith("errno="));
      if (errno && errno !== "errno=0") {
        reject(new UapiClientError(`${name}: request failed (${errno})`, "ERR_UAPI_REQUEST"));
      } else resolve(lines.filter((line) => !line.startsWith("errno=")));
    });
    socket.write(request);
  });
}

export function listInterfaces(directory = DEFAULT_SOCKET_DIRECTORY): string[] {
  try {
    return readdirSync(directory)
      .filter((file) => file.endsWith(".sock"))
      .map((file) => file.slice(0, -5))
      .sort();
  } catch {
    return [];
  }
}

function hexToBase64(hex: string): string {
  return Buffer.from(hex, "hex").toString("base64");
}

/** The reply carries the private key only; the public key is derived here, as `wg` does. */
function publicKeyFromPrivateHex(hex: string): string | null {
  if (/^0+$/.test(hex)) return null;
  return publicKeyOf(hexToBase64(hex));
}

export function parseGetReply(name: string, lines: string[]): InterfaceState {
  const state: InterfaceState = { name, publicKey: null, listenPort: 0, fwmark: 0, peers: [] };
  let peer: PeerState | null = null;
  for (const line of lines) {
    const eq = line.indexOf("=");
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    if (key === "public_key") {
      peer = {
        publicKey: hexToBase64(value),
        presharedKey: false,
        endpoint: null,
        allowedIps: [],
        latestHandshake: 0,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepalive: 0,
      };
      state.peers.push(peer);
    } else if (!peer) {
      if (key === "private_key") state.publicKey = publicKeyFromPrivateHex(value);
      else if (key === "listen_port") state.listenPort = Number(value);
      else if (key === "fwmark") state.fwmark = Number(value);
    } else if (key === "preshared_key") peer.presharedKey = !/^0+$/.test(value);
    else if (key === "endpoint") peer.endpoint = value;
    else if (key === "allowed_ip") peer.allowedIps.push(value);
    else if (key === "last_handshake_time_sec") peer.latestHandshake = Number(value);
    else if (key === "rx_bytes") peer.rxBytes = Number(value);
    else if (key === "tx_bytes") peer.txBytes = Number(value);
    else if (key === "persistent_keepalive_interval") peer.persistentKeepalive = Number(value);
  }
  return state;
}

function plural(n: number, unit: string): string {
  return `${n} ${unit}${n === 1 ? "" : "s"}`;
}

/** "1 minute, 5 seconds ago", as `wg show` words it. */
export function formatAge(secondsAgo: number): string {
  if (secondsAgo <= 0) return "Now";
  const parts: string[] = [];
  const units: Array<[number, string]> = [
    [365 * 86400, "year"],
    [86400, "day"],
    [3600, "hour"],
    [60, "minute"],
    [1, "second"],
  ];
  let rest = Math.floor(secondsAgo);
  for (const [size, unit] of units) {
    if (rest >= size) {
      parts.push(plural(Math.floor(rest / size), unit));
      rest %= size;
    }
  }
  return `${parts.join(", ")} ago`;
}

/** "1.50 KiB", as `wg show` words transfer amounts. */
export function formatBytes(bytes: number): string {
  const units = ["KiB", "MiB", "GiB", "TiB"];
  if (bytes < 1024) return `${bytes} B`;
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(2)} ${units[unit]}`;
}

export function formatState(state: InterfaceState, nowSeconds = Date.now() / 1000): string {
  const lines = [`interface: ${state.name}`];
  if (state.publicKey) lines.push(`  public key: ${state.publicKey}`, "  private key: (hidden)");
  if (state.listenPort) lines.push(`  listening port: ${state.listenPort}`);
  if (state.fwmark) lines.push(`  fwmark: 0x${state.fwmark.toString(16)}`);
  // wg lists the peers with the most recent handshake first.
  const peers = [...state.peers].sort((a, b) => b.latestHandshake - a.latestHandshake);
  for (const peer of peers) {
    lines.push("", `peer: ${peer.publicKey}`);
    if (peer.presharedKey) lines.push("  preshared key: (hidden)");
    if (peer.endpoint) lines.push(`  endpoint: ${peer.endpoint}`);
    lines.push(`  allowed ips: ${peer.allowedIps.length ? peer.allowedIps.join(", ") : "(none)"}`);
    if (peer.latestHandshake) {
      lines.push(`  latest handshake: ${formatAge(nowSeconds - peer.latestHandshake)}`);
    }
    if (peer.rxBytes || peer.txBytes) {
      lines.push(
        `  transfer: ${formatBytes(peer.rxBytes)} received, ${formatBytes(peer.txBytes)} sent`,
      );
    }
    if (peer.persistentKeepalive) {
      lines.push(`  persistent keepalive: every ${plural(peer.persistentKeepalive, "second")}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

export async function readInterfaceState(
  name: string,
  directory = DEFAULT_SOCKET_DIRECTORY,
): Promise<InterfaceState> {
  return parseGetReply(name, await uapiRequest(name, "get=1\n\n", directory));
}
