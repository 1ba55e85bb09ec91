// A hub daemon for fleet tests and the fleet bench without root: the real daemon (its
// reconfiguration queue and the rule between sources of change included) over in-memory TUN
// and UDP devices, with the fleet's sink attached as `edgetun up --peers-from` attaches it.
import { encodeKey, generatePrivateKey } from "../../src/core/keys.js";
import { formatCidr } from "../../src/core/ipaddr.js";
import { parseConfig } from "../../src/host/config.js";
import { Daemon } from "../../src/host/daemon.js";
import { DaemonFleetSink } from "../../src/host/fleet/sink.js";
import type { Prefix } from "../../src/host/fleet/records.js";
import { createLogger, type Logger } from "../../src/host/log.js";
import { FakeNetwork, FakeTun } from "./fake-io.js";

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
