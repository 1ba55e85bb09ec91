// A hub daemon for fleet tests and the fleet bench without root: the real daemon (its
// reconfiguration queue and the rule between sources of change included) over in-memory TUN
// and UDP devices, with the fleet's sink attached as `edgetun up --peers-from` attaches it.
import { decodeKey, encodeKey, generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { formatCidr, parseCidr } from "../../src/core/ipaddr.js";
import { parseConfig } from "../../src/host/config.js";
import { Daemon } from "../../src/host/daemon.js";
import { DaemonFleetSink } from "../../src/host/fleet/sink.js";
import type { EdgeRecord, Prefix } from "../../src/host/fleet/records.js";
import { createLogger, type Logger } from "../../src/host/log.js";
import { FakeNetwork, FakeTun } from "./fake-io.js";

/**
 * Edge `n` of a test fleet, with a new key: tunnel address 10.99.x.y, one pod /24 under
 * 10.100.0.0/14, no endpoint, keepalive or preshared key unless `extra` gives them.
 */
export function testEdge(name: string, n: number, extra: Partial<EdgeRecord> = {}): EdgeRecord {
  return {
    name,
    publicKey: decodeKey(publicKeyOf(generatePrivateKey())),
    tunnelAddress: parseCidr(`10.99.${Math.floor(n / 250)}.${(n % 250) + 2}`).address,
    podCidrs: [parseCidr(`10.${100 + Math.floor(n / 250)}.${n % 250}.0/24`)],
    endpoint: null,
    persistentKeepalive: 0,
    presharedKey: null,
    ...extra,
  };
}

/** A debug-level JSON logger and the records it wrote, parsed. */
export function captureJsonLog(): { lines: Array<Record<string, unknown>>; logger: Logger } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger({
    level: "debug",
    json: true,
    write: (line) => lines.push(JSON.parse(line) as Record<string, unknown>),
  });
  return { lines, logger };
}

export interface FileTestPeer {
  publicKey: Uint8Array;
  allowedIps: readonly Prefix[];
}

/** Started; stop it with `daemon.stop()`. */
export async function startFleetDaemon(
  options: { filePeers?: readonly FileTestPeer[]; logger?: Logger } = {},
): Promise<{ daemon: Daemon; sink: DaemonFleetSink; configText: string }> {
  const logger = options.logger ?? createLogger({ level: "error", write: () => {} });
  const configText = [
    "[Interface]",
    `PrivateKey = ${generatePrivateKey()}`,
    "ListenPort = 51820",
    ...(options.filePeers ?? []).flatMap((peer) => [
      "[Peer]",
      `PublicKey = ${encodeKey(peer.publicKey)}`,
      `AllowedIPs = ${peer.allowedIps.map((p) => formatCidr(p.address, p.cidr)).join(", ")}`,
    ]),
  ].join("\n");
  const daemon = await Daemon.startDataPath({
    tun: new FakeTun(),
    openSocket: new FakeNetwork().opener("192.0.2.1"),
    config: parseConfig(configText, "hub.conf"),
    logger,
  });
  const sink = new DaemonFleetSink(daemon);
  daemon.extensions.push({ stop: async () => {}, peerOwner: sink.peerOwner });
  return { daemon, sink, configText };
}
