// `edgetun syncconf`: turns a running interface's peers into those of a file, the way `wg
// syncconf` does, with one control-socket `set` that carries only the difference: peers missing
// from the file are removed, new peers added, and a peer that stays appears only if something
// of it changed (its sessions and counters survive either way). The daemon applies that set
// as one change through its reconfiguration queue (src/host/reconfigure.ts), all or nothing,
// so a file touching one peer among thousands costs one peer's work and routes.
import type { InterfaceFileConfig } from "../host/config.js";
import { formatEndpoint, type Endpoint } from "../core/endpoint.js";
import { formatCidr } from "../core/ipaddr.js";

const hex = (key: Uint8Array) => Buffer.from(key).toString("hex");
const ZERO_KEY_HEX = "0".repeat(64);

/** A peer as the control socket's `get` reports it, in the protocol's own spelling. */
interface RunningPeer {
  presharedKeyHex: string;
  endpoint: string | null;
  persistentKeepalive: number;
  allowedIps: Set<string>;
}

export interface RunningState {
  privateKeyHex: string | null;
  listenPort: number;
  fwmark: number;
  /** By public key, hex. */
  peers: Map<string, RunningPeer>;
}

/** Reads the lines of a `get=1` reply (without the errno line). */
export function parseRunningState(lines: readonly string[]): RunningState {
  const state: RunningState = { privateKeyHex: null, listenPort: 0, fwmark: 0, peers: new Map() };
  let peer: RunningPeer | null = null;
  for (const line of lines) {
    const equals = line.indexOf("=");
    const key = line.slice(0, equals);
    const value = line.slice(equals + 1);
    if (key === "public_key") {
      peer = {
        presharedKeyHex: ZERO_KEY_HEX,
        endpoint: null,
        persistentKeepalive: 0,
        allowedIps: new Set(),
      };
      state.peers.set(value, peer);
    } else if (peer === null) {
      if (key === "private_key") state.privateKeyHex = value;
      else if (key === "listen_port") state.listenPort = Number(value);
      else if (key === "fwmark") state.fwmark = Number(value);
    } else if (key === "preshared_key") peer.presharedKeyHex = value;
    else if (key === "endpoint") peer.endpoint = value;
    else if (key === "persistent_keepalive_interval") peer.persistentKeepalive = Number(value);
    else if (key === "allowed_ip") peer.allowedIps.add(value);
  }
  return state;
}

/**
 * The `set=1` request that makes `current` what `config` says; `endpoints[i]` is peer i's
 * endpoint, resolved to an address (the socket takes no names). FwMark is sent only when the
 * file sets one, as `wg` does: a mark chosen for a default route is not taken away.
 */
export function syncRequest(
  config: InterfaceFileConfig,
  current: RunningState,
  endpoints: ReadonlyArray<Endpoint | null>,
): string {
  const lines = ["set=1"];
  // No PrivateKey in the file: the running key stays, as with `wg syncconf`.
  if (config.privateKey !== null && current.privateKeyHex !== hex(config.privateKey)) {
    lines.push(`private_key=${hex(config.privateKey)}`);
  }
  if (config.listenPort !== null && config.listenPort !== current.listenPort) {
    lines.push(`listen_port=${config.listenPort}`);
  }
  if (config.fwmark !== 0 && config.fwmark !== current.fwmark) {
    lines.push(`fwmark=${config.fwmark}`);
  }
  const wanted = new Set(config.peers.map((peer) => hex(peer.publicKey)));
  for (const publicKeyHex of current.peers.keys()) {
    if (!wanted.has(publicKeyHex)) lines.push(`public_key=${publicKeyHex}`, "remove=true");
  }
  config.peers.forEach((peer, i) => {
    const publicKeyHex = hex(peer.publicKey);
    const running = current.peers.get(publicKeyHex);
    const presharedKeyHex = peer.presharedKey ? hex(peer.presharedKey) : ZERO_KEY_HEX;
    const endpoint = endpoints[i] ? formatEndpoint(endpoints[i]) : null;
    const allowedIps = peer.allowedIps.map((prefix) => formatCidr(prefix.address, prefix.cidr));
    const sameIps =
      running !== undefined &&
      running.allowedIps.size === new Set(allowedIps).size &&
      allowedIps.every((prefix) => running.allowedIps.has(prefix));
    const section: string[] = [];
    if (running?.presharedKeyHex !== presharedKeyHex) {
      section.push(`preshared_key=${presharedKeyHex}`);
    }
    if (endpoint !== null && running?.endpoint !== endpoint) section.push(`endpoint=${endpoint}`);
    if (running?.persistentKeepalive !== peer.persistentKeepalive) {
      section.push(`persistent_keepalive_interval=${peer.persistentKeepalive}`);
    }
    if (!sameIps) {
      section.push("replace_allowed_ips=true", ...allowedIps.map((ip) => `allowed_ip=${ip}`));
    }
    if (running === undefined || section.length > 0) {
      lines.push(`public_key=${publicKeyHex}`, ...section);
    }
  });
  return `${lines.join("\n")}\n\n`;
}
