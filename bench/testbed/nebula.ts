// Nebula as a testbed tunnel: not one of the seed study's five, but the edge-mesh overlay that
// operators of edge fleets weigh beside them. Debian's `nebula` (1.6), one foreground process
// per node, so that its CPU time and memory are the tunnel's cost.
//
// A CA of the run's own (`nebula-cert`) signs each node's certificate with its tunnel address
// and the pod CIDR it may speak for (`subnets`): the hub 10.244.0.0/16, an edge its own /24.
// Nebula would let edges find each other through the lighthouse and talk directly; here they
// do not, so that it is measured in the topology of the other tunnels: the hub is the
// lighthouse, every edge routes 10.244.0.0/16 to the hub (`unsafe_routes`), the hub routes each
// edge's pod CIDR to that edge, and pod → pod leaves Nebula at the hub and re-enters it through
// the hub's kernel, as with the WireGuard tunnels. Punching is off (there is no NAT).
//
// The data is UDP to the hub's port, so the delay relay carries it: an edge's static host map
// points at its relay socket under delay. Cipher: Nebula's default, AES-256-GCM (`cipher: aes`),
// left unwritten, as an operator who writes none gets it; the firewall lets everything through
// in both directions, as the other tunnels have none.
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { hubEndpointFor, type Level } from "./impair.js";
import { NodeTunnels, START_TIMEOUT_MS } from "./node-tunnels.js";
import { StepError } from "../../src/host/errors.js";
import { commandExists, nsSpawn, runSync, type Proc } from "../../src/host/toolkit/process.js";
import { linkBytes } from "./tinc.js";
import { HUB_PORT, TUNNEL_MTU, type Node, type Topology } from "./topology.js";
import type { Keys } from "./tunnels.js";

/** The subnet the hub speaks for: every pod, its own included. */
export const NEBULA_HUB_PODS = "10.244.0.0/16";
/** The prefix length of the tunnel subnet, as the other tunnels configure it. */
const TUNNEL_PREFIX = 24;
/** Nebula logs this once its tun is up with its address and routes (before any handshake). */
const READY = /Nebula interface is active/;
const LOG_LINES = 6;

/** Why Nebula cannot run here, or null. */
export function nebulaUnavailable(): string | null {
  for (const program of ["nebula", "nebula-cert"]) {
    if (!commandExists(program)) return `${program} is not installed (apt-get install nebula)`;
  }
  const version = spawnSync("nebula", ["-version"], { encoding: "utf8", timeout: 5000 });
  const match = /Version: (\d+)\.(\d+)/.exec(version.stdout ?? "");
  if (!match) return `cannot tell nebula's version (nebula -version: ${version.stdout})`;
  // unsafe_routes, the static host map and the "interface is active" line as 1.6 has them.
  if (Number(match[1]) < 1 || (Number(match[1]) === 1 && Number(match[2]) < 6)) {
    return `nebula ${match[1]}.${match[2]} is older than 1.6`;
  }
  return null;
}

/** Where a node's certificate and key are, and the CA's certificate. */
export interface NebulaPki {
  ca: string;
  cert: string;
  key: string;
}

/** The `nebula-cert sign` arguments of a node: its tunnel address and the pods it speaks for. */
export function nebulaSignArgs(node: Node, hub: Node): string[] {
  return [
    "-name",
    node.label,
    "-ip",
    `${node.tunnelAddress}/${TUNNEL_PREFIX}`,
    "-subnets",
    node === hub ? NEBULA_HUB_PODS : node.podCidr,
  ];
}

/**
 * A node's configuration, as JSON (which Nebula's YAML reader takes as it is): the hub listens
 * on its underlay address as the lighthouse and routes each edge's pods to that edge; an edge
 * knows the hub at `hubEndpoint` and routes every pod to it.
 */
export function nebulaConfig(
  node: Node,
  topo: Pick<Topology, "hub" | "edges">,
  ifname: string,
  pki: NebulaPki,
  hubEndpoint: string,
): string {
  const isHub = node === topo.hub;
  const hubTunnel = topo.hub.tunnelAddress;
  const unsafeRoutes = isHub
    ? topo.edges.map((edge) => ({ route: edge.podCidr, via: edge.tunnelAddress }))
    : [{ route: NEBULA_HUB_PODS, via: hubTunnel }];
  const anything = [{ port: "any", proto: "any", host: "any" }];
  const config = {
    pki,
    static_host_map: isHub ? {} : { [hubTunnel]: [hubEndpoint] },
    lighthouse: isHub
      ? { am_lighthouse: true, interval: 60 }
      : { am_lighthouse: false, interval: 60, hosts: [hubTunnel] },
    listen: isHub
      ? { host: topo.hub.underlayAddress, port: HUB_PORT }
      : { host: "0.0.0.0", port: 0 },
    punchy: { punch: false },
    tun: {
      disabled: false,
      dev: ifname,
      mtu: TUNNEL_MTU,
      unsafe_routes: unsafeRoutes,
    },
    // Starts, handshakes and errors; nothing per packet.
    logging: { level: "info", format: "text" },
    firewall: { outbound: anything, inbound: anything },
  };
  return `${JSON.stringify(config, null, 2)}\n`;
}

export class NebulaTunnels extends NodeTunnels {
  readonly name = "nebula";
  private readonly dir: string;

  /** Makes the run's CA and every node's certificate once per run, before any case is timed. */
  constructor(topo: Topology, keys: Keys) {
    super(topo, keys, "n");
    this.dir = join(keys.dir, "nebula");
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const ca = this.pki(topo.hub);
    runSync("nebula-cert", [
      "ca",
      "-name",
      `etb-${topo.id}`,
      "-duration",
      "48h",
      "-out-crt",
      ca.ca,
      "-out-key",
      join(this.dir, "ca.key"),
    ]);
    for (const node of topo.nodes) {
      const { cert, key } = this.pki(node);
      runSync("nebula-cert", [
        "sign",
        "-ca-crt",
        ca.ca,
        "-ca-key",
        join(this.dir, "ca.key"),
        ...nebulaSignArgs(node, topo.hub),
        "-out-crt",
        cert,
        "-out-key",
        key,
      ]);
    }
  }

  pki(node: Node): NebulaPki {
    return {
      ca: join(this.dir, "ca.crt"),
      cert: join(this.dir, `${node.label}.crt`),
      key: join(this.dir, `${node.label}.key`),
    };
  }

  private async start(node: Node, level: Level): Promise<void> {
    const file = join(this.dir, `${node.label}.yml`);
    const endpoint = hubEndpointFor(level, node, this.topo);
    writeFileSync(
      file,
      nebulaConfig(node, this.topo, this.ifname(node), this.pki(node), endpoint),
      { mode: 0o600 },
    );
    const proc = nsSpawn(node.ns, `nebula on ${node.label}`, "nebula", ["-config", file]);
    this.procs.set(node, proc);
    this.started.add(node);
    await proc.waitForLine(READY, START_TIMEOUT_MS).catch(() => {
      throw new StepError(`${proc.label} did not start: ${this.lastWords(proc)}`);
    });
  }

  async upHub(level: Level): Promise<void> {
    await this.start(this.topo.hub, level);
  }

  async upEdge(edge: Node, level: Level): Promise<void> {
    await this.start(edge, level);
  }

  /** The hub's tun counters: pod → pod crosses them twice, in and out, as edge → hub once. */
  hubTransfer(): { rxBytes: number; txBytes: number } | null {
    return linkBytes(this.topo.hub.ns, this.ifname(this.topo.hub));
  }

  diagnose(edge: Node): string {
    const parts: string[] = [];
    for (const node of [edge, this.topo.hub]) {
      const proc = this.procs.get(node);
      parts.push(`${node.label}: ${proc ? this.lastWords(proc) : "not started"}`);
    }
    const dead = this.deadDaemon();
    return parts.join(" | ") + (dead ? ` | ${dead}` : "");
  }

  /** Nebula logs to stdout: its last lines. */
  protected override lastWords(proc: Proc): string {
    const said = `${proc.stdout.toString()}\n${proc.stderr.toString()}`.trim().split("\n");
    return said.slice(-LOG_LINES).join(" / ") || "nothing logged";
  }
}
