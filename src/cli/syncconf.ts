// `edgetun syncconf`: the control-socket request that turns a running interface's peers into
// those of a file, the way `wg syncconf` does. Peers that stay are updated in place (their
// sessions and counters survive); peers missing from the file are removed.
import type { InterfaceFileConfig } from "../host/config.js";
import { formatEndpoint, type Endpoint } from "../core/endpoint.js";
import { formatCidr } from "../core/ipaddr.js";
import type { InterfaceState } from "./show.js";

const hex = (key: Uint8Array) => Buffer.from(key).toString("hex");

/** `endpoints[i]` is peer i's endpoint, resolved to an address (the socket takes no names). */
export function syncRequest(
  config: InterfaceFileConfig,
  current: InterfaceState,
  endpoints: ReadonlyArray<Endpoint | null>,
): string {
  const lines = ["set=1", `private_key=${hex(config.privateKey)}`];
  if (config.listenPort !== null) lines.push(`listen_port=${config.listenPort}`);
  lines.push(`fwmark=${config.fwmark}`);
  const wanted = new Set(config.peers.map((peer) => peer.publicKey.toString("base64")));
  for (const peer of current.peers) {
    if (!wanted.has(peer.publicKey)) {
      lines.push(`public_key=${hex(Buffer.from(peer.publicKey, "base64"))}`, "remove=true");
    }
  }
  config.peers.forEach((peer, i) => {
    lines.push(`public_key=${hex(peer.publicKey)}`);
    lines.push(`preshared_key=${hex(peer.presharedKey ?? new Uint8Array(32))}`);
    const endpoint = endpoints[i];
    if (endpoint) {
      lines.push(`endpoint=${formatEndpoint(endpoint)}`);
    }
    lines.push(`persistent_keepalive_interval=${peer.persistentKeepalive}`);
    lines.push("replace_allowed_ips=true");
    for (const prefix of peer.allowedIps) {
      lines.push(`allowed_ip=${formatCidr(prefix.address, prefix.cidr)}`);
    }
  });
  return `${lines.join("\n")}\n\n`;
}
