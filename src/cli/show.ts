// `edgetun show`: reads an interface's state over its control socket (the same `get=1`
// request `wg` makes) and prints it in the shape of `wg show`, or as JSON for scripts.
import { readdirSync } from "node:fs";
import { UapiClientError } from "../host/errors.js";
import { formatField, type ShowField } from "./show-fields.js";
import { privateKeyObject, rawPublicKey } from "../core/x25519-keys.js";
import {
  DEFAULT_UAPI_DIRECTORY,
  ZERO_KEY_HEX,
  uapiGet,
  type UapiDeviceState,
  type UapiPeerState,
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

const KEY_BYTES = 32;

/**
 * The peers' public keys in base64, in the reply's order. Decoded from hex all at once (one
 * Buffer for every key, each key's base64 read from its 32 bytes): a fresh process decoding
 * 5,000 keys one Buffer each spent some 20 ms on it. A key that is not 64 hex digits (no
 * daemon sends one) would shift the others, so then each is decoded alone.
 */
function publicKeysBase64(peers: readonly UapiPeerState[]): string[] {
  const all = Buffer.from(peers.map((peer) => peer.publicKeyHex).join(""), "hex");
  if (all.length !== peers.length * KEY_BYTES) {
    return peers.map((peer) => Buffer.from(peer.publicKeyHex, "hex").toString("base64"));
  }
  return peers.map((_, i) => all.toString("base64", i * KEY_BYTES, (i + 1) * KEY_BYTES));
}

/** The control socket's state in `wg show`'s terms: keys in base64, the public key derived. */
export function interfaceState(name: string, reply: UapiDeviceState): InterfaceState {
  const publicKeys = publicKeysBase64(reply.peers);
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
    peers: reply.peers.map((peer, i) => ({
      publicKey: publicKeys[i]!,
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

// The tables of the two formatters below, made once: `edgetun show` of a hub formats them for
// thousands of peers in a process that has just started (unoptimised code, a small heap).
const AGE_UNITS: ReadonlyArray<readonly [number, string]> = [
  [365 * 86400, "year"],
  [86400, "day"],
  [3600, "hour"],
  [60, "minute"],
  [1, "second"],
];
const TRANSFER_UNITS = ["KiB", "MiB", "GiB", "TiB"];

/** "1 minute, 5 seconds ago", as `wg show` words it. */
export function formatAge(secondsAgo: number): string {
  if (secondsAgo <= 0) return "Now";
  let text = "";
  let rest = Math.floor(secondsAgo);
  for (const [size, unit] of AGE_UNITS) {
    if (rest < size) continue;
    text += `${text === "" ? "" : ", "}${plural(Math.floor(rest / size), unit)}`;
    rest %= size;
  }
  return `${text} ago`;
}

/** "1.50 KiB", as `wg show` words transfer amounts. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < TRANSFER_UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(2)} ${TRANSFER_UNITS[unit]}`;
}

/**
 * `wg show`'s text. Built by appending to one string (V8 keeps it as a rope until it is
 * written), not as an array of lines joined at the end: at 5,000 peers that was 35,000 line
 * strings and most of the formatting time of a freshly started process.
 */
export function formatState(state: InterfaceState, nowSeconds = Date.now() / 1000): string {
  let text = `interface: ${state.name}\n`;
  if (state.publicKey) text += `  public key: ${state.publicKey}\n  private key: (hidden)\n`;
  if (state.listenPort) text += `  listening port: ${state.listenPort}\n`;
  if (state.fwmark) text += `  fwmark: 0x${state.fwmark.toString(16)}\n`;
  // wg lists the peers with the most recent handshake first.
  const peers = [...state.peers].sort((a, b) => b.latestHandshake - a.latestHandshake);
  for (const peer of peers) {
    text += `\npeer: ${peer.publicKey}\n`;
    if (peer.presharedKey) text += "  preshared key: (hidden)\n";
    if (peer.endpoint) text += `  endpoint: ${peer.endpoint}\n`;
    text += `  allowed ips: ${peer.allowedIps.length ? peer.allowedIps.join(", ") : "(none)"}\n`;
    if (peer.latestHandshake) {
      text += `  latest handshake: ${formatAge(nowSeconds - peer.latestHandshake)}\n`;
    }
    if (peer.rxBytes || peer.txBytes) {
      text += `  transfer: ${formatBytes(peer.rxBytes)} received, ${formatBytes(peer.txBytes)} sent\n`;
    }
    if (peer.persistentKeepalive) {
      text += `  persistent keepalive: every ${plural(peer.persistentKeepalive, "second")}\n`;
    }
  }
  return text;
}

export async function readInterfaceState(
  name: string,
  directory = DEFAULT_SOCKET_DIRECTORY,
): Promise<InterfaceState> {
  return interfaceState(name, await uapiGet(name, directory));
}

/**
 * `edgetun show [name] [field] [--json]`, its arguments checked: prints the interfaces' state
 * (every interface's for none or `all`, their names for `interfaces`).
 */
export async function runShow(
  target: string | undefined,
  field: ShowField | undefined,
  json: boolean,
): Promise<void> {
  if (target === "interfaces") {
    process.stdout.write(
      listInterfaces()
        .map((each) => `${each}\n`)
        .join(""),
    );
    return;
  }
  const all = target === undefined || target === "all";
  const names = all ? listInterfaces() : [target];
  const states: InterfaceState[] = [];
  let failures = 0;
  for (const each of names) {
    try {
      states.push(await readInterfaceState(each));
    } catch (error) {
      if (!all) throw error;
      // Listing all: a socket nobody listens on is a crashed daemon's, not an interface; `wg
      // show` passes over it too. Any other failure is reported and the rest still shown.
      if (error instanceof UapiClientError && error.code === "ERR_NO_INTERFACE") continue;
      const { reportOf } = await import("./exit-status.js");
      process.stderr.write(`edgetun: ${reportOf(error).text}\n`);
      failures++;
    }
  }
  if (failures > 0) process.exitCode = 1;
  if (json) {
    process.stdout.write(`${JSON.stringify(all ? states : states[0], null, 2)}\n`);
    return;
  }
  if (field !== undefined) {
    process.stdout.write(states.map((state) => formatField(state, field, all)).join(""));
    return;
  }
  process.stdout.write(states.map((state) => formatState(state)).join("\n"));
}
