// `edgetun show`: reads an interface's state over its control socket (the same `get=1`
// request `wg` makes) and prints it in the shape of `wg show`, or as JSON for scripts.
import { readdirSync } from "node:fs";
import { privateKeyObject, rawPublicKey } from "../core/x25519-keys.js";
import {
  DEFAULT_UAPI_DIRECTORY,
  ZERO_KEY_HEX,
  parseGetReply,
  uapiRequest,
  type UapiDeviceState,
} from "../host/uapi-client.js";

export const DEFAULT_SOCKET_DIRECTORY = DEFAULT_UAPI_DIRECTORY;

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

/** The control socket's state in `wg show`'s terms: keys in base64, the public key derived. */
export function interfaceState(name: string, reply: UapiDeviceState): InterfaceState {
  return {
    name,
    // The reply carries the private key only; the public key is derived here, as `wg` does
    // (with Node's X25519 alone: the handshake's crypto would be a dozen modules to load).
    publicKey:
      reply.privateKeyHex === null
        ? null
        : rawPublicKey(privateKeyObject(Buffer.from(reply.privateKeyHex, "hex"))).toString(
            "base64",
          ),
    listenPort: reply.listenPort,
    fwmark: reply.fwmark,
    peers: reply.peers.map((peer) => ({
      publicKey: hexToBase64(peer.publicKeyHex),
      presharedKey: peer.presharedKeyHex !== ZERO_KEY_HEX,
      endpoint: peer.endpoint,
      allowedIps: peer.allowedIps,
      latestHandshake: peer.lastHandshakeSec,
      rxBytes: peer.rxBytes,
      txBytes: peer.txBytes,
      persistentKeepalive: peer.persistentKeepalive,
    })),
  };
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
  return interfaceState(name, parseGetReply(await uapiRequest(name, "get=1\n\n", directory)));
}
