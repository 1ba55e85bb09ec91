// `edgetun syncconf`: turns a running interface's peers into those of a file, the way `wg
// syncconf` does, with one control-socket `set` that carries only the difference: peers missing
// from the file are removed, new peers added, and a peer that stays appears only if something
// of it changed (its sessions and counters survive either way). The daemon applies that set
// as one change through its reconfiguration queue (src/host/reconfigure.ts), all or nothing,
// so a file touching one peer among thousands costs one peer's work and routes.
import type { InterfaceFileConfig } from "../host/config.js";
import { formatEndpoint, type Endpoint } from "../core/endpoint.js";
import { formatCidr } from "../core/ipaddr.js";
import { ZERO_KEY_HEX, type UapiDeviceState } from "../host/uapi-client.js";

const hex = (key: Uint8Array) => Buffer.from(key).toString("hex");

/**
 * The `set=1` request that makes `current` what `config` says; `endpoints[i]` is peer i's
 * endpoint, resolved to an address (the socket takes no names). FwMark is sent only when the
 * file sets one, as `wg` does: a mark chosen for a default route is not taken away.
 */
export function syncRequest(
  config: InterfaceFileConfig,
  current: UapiDeviceState,
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
  const running = new Map(current.peers.map((peer) => [peer.publicKeyHex, peer]));
  for (const publicKeyHex of running.keys()) {
    if (!wanted.has(publicKeyHex)) lines.push(`public_key=${publicKeyHex}`, "remove=true");
  }
  config.peers.forEach((peer, i) => {
    const publicKeyHex = hex(peer.publicKey);
    const before = running.get(publicKeyHex);
    const presharedKeyHex = peer.presharedKey ? hex(peer.presharedKey) : ZERO_KEY_HEX;
    const endpoint = endpoints[i] ? formatEndpoint(endpoints[i]) : null;
    const allowedIps = peer.allowedIps.map((prefix) => formatCidr(prefix.address, prefix.cidr));
    const sameIps = before !== undefined && sameSet(before.allowedIps, allowedIps);
    const section: string[] = [];
    if (before?.presharedKeyHex !== presharedKeyHex) {
      section.push(`preshared_key=${presharedKeyHex}`);
    }
    if (endpoint !== null && before?.endpoint !== endpoint) section.push(`endpoint=${endpoint}`);
    if (before?.persistentKeepalive !== peer.persistentKeepalive) {
      section.push(`persistent_keepalive_interval=${peer.persistentKeepalive}`);
    }
    if (!sameIps) {
      section.push("replace_allowed_ips=true", ...allowedIps.map((ip) => `allowed_ip=${ip}`));
    }
    if (before === undefined || section.length > 0) {
      lines.push(`public_key=${publicKeyHex}`, ...section);
    }
  });
  return `${lines.join("\n")}\n\n`;
}

/** Whether two lists hold the same strings, whatever their order and repeats. */
function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const inA = new Set(a);
  const inB = new Set(b);
  return inA.size === inB.size && [...inB].every((item) => inA.has(item));
}
