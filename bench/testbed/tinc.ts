// tinc as a testbed tunnel, one of the seed study's five VPNs: Debian's tinc 1.0, one
// foreground `tincd` per node, so that its CPU time and memory are the tunnel's cost.
//
// Router mode, not switch mode: the study routed each worker's pod CIDR to that worker, as a
// Kubernetes network does (layer 3, one CIDR per node), and tinc's router mode is exactly that:
// each edge announces its pod CIDR and its tunnel address as its `Subnet`s, and tinc forwards by
// them. Switch mode would make one Ethernet segment of all eight nodes, which is how the study
// used none of the routed tunnels.
//
// Hub and spoke as the other tunnels: every edge has `ConnectTo = hub`, and the hub is a
// `TunnelServer` (it tells no edge about another), so that an edge knows one node, the hub,
// which owns 10.244.0.0/16, and pod → pod crosses the hub, as with the WireGuard tunnels. At the
// hub tincd forwards it to the edge that owns the more specific pod CIDR itself (inside the
// daemon, not through the hub's kernel): the way tinc relays.
//
// tinc 1.0 carries its meta protocol (authentication, key exchange, routing) over TCP and the
// data over UDP to the same port; the delay relay carries UDP only, so tinc has no delay rows.
// Cipher, digest and compression are tinc 1.0.36's defaults (aes-256-cbc, HMAC-SHA256 cut to 4
// bytes, no compression): what an operator gets who writes none.
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Level } from "./impair.js";
import { NodeTunnels, START_TIMEOUT_MS } from "./node-tunnels.js";
import { StepError } from "../../src/host/errors.js";
import { commandExists, nsRun, nsSpawn, runSync, sleep } from "../../src/host/toolkit/process.js";
import { HUB_PORT, TUNNEL_MTU, type Node, type Topology } from "./topology.js";
import type { Keys } from "./tunnels.js";

/** The subnet the hub owns for the edges: every pod, its own included. */
export const TINC_HUB_PODS = "10.244.0.0/16";
/** RSA key size: tinc 1.0's own default for `-K`. */
const KEY_BITS = 2048;

export const TINC_DELAY_SKIP =
  "tinc 1.0 needs a TCP meta connection to the hub before any UDP; the delay relay carries UDP only";

/** Why tinc cannot run here, or null. */
export function tincUnavailable(): string | null {
  if (!commandExists("tincd")) return "tincd is not installed (apt-get install tinc)";
  const version = spawnSync("tincd", ["--version"], { encoding: "utf8", timeout: 5000 });
  const match = /tinc version (\d+)\.(\d+)/.exec(version.stdout ?? "");
  if (!match) return `cannot tell tincd's version (tincd --version: ${version.stdout})`;
  // 1.1 has another command line (the `tinc` tool, Ed25519 keys): not what this drives.
  if (match[1] !== "1" || match[2] !== "0") return `tinc ${match[1]}.${match[2]} is not 1.0`;
  return null;
}

/** A tinc node name: letters, digits and underscores only. */
export function tincName(node: Node): string {
  return node.label;
}

/** The daemon configuration of a node (`tinc.conf`). */
export function tincConf(node: Node, hub: Node, ifname: string): string {
  const lines = [
    `Name = ${tincName(node)}`,
    "Mode = router",
    "AddressFamily = ipv4",
    "DeviceType = tun",
    `Interface = ${ifname}`,
  ];
  if (node === hub) lines.push(`BindToAddress = ${hub.underlayAddress}`, "TunnelServer = yes");
  // An edge whose connection attempt was lost retries every 5 s, as WireGuard re-initiates,
  // rather than after tinc's growing back-off (5, 10, 15 s … up to 900 s by default), which
  // would time the back-off, not the tunnel, under loss.
  else lines.push(`ConnectTo = ${tincName(hub)}`, "MaxTimeout = 5");
  return `${lines.join("\n")}\n`;
}

/** What a node's host file says besides its public key: where it is and what it owns. */
export function tincHostEntries(node: Node, hub: Node): string {
  const lines =
    node === hub
      ? [
          `Address = ${hub.underlayAddress}`,
          `Port = ${HUB_PORT}`,
          `Subnet = ${hub.tunnelAddress}/32`,
          `Subnet = ${TINC_HUB_PODS}`,
        ]
      : [`Subnet = ${node.tunnelAddress}/32`, `Subnet = ${node.podCidr}`];
  return `${lines.join("\n")}\n`;
}

export class TincTunnels extends NodeTunnels {
  readonly name = "tinc";
  private readonly dir: string;
  /** Each node's host file (its entries and its public key), shared with the nodes that meet it. */
  private readonly hostFiles = new Map<Node, string>();

  /** Makes every node's configuration and RSA key pair once per run, before any case is timed. */
  constructor(topo: Topology, keys: Keys) {
    super(topo, keys, "c");
    this.dir = join(keys.dir, "tinc");
    for (const node of topo.nodes) {
      const conf = this.confDir(node);
      mkdirSync(join(conf, "hosts"), { recursive: true, mode: 0o700 });
      writeFileSync(join(conf, "tinc.conf"), tincConf(node, topo.hub, this.ifname(node)));
      const hostFile = join(conf, "hosts", tincName(node));
      writeFileSync(hostFile, tincHostEntries(node, topo.hub), { mode: 0o600 });
      // Writes rsa_key.priv and appends the public key to hosts/NAME; asks nothing without a tty.
      runSync("tincd", ["-c", conf, `-K${KEY_BITS}`], { timeoutMs: 60_000 });
      this.hostFiles.set(node, readFileSync(hostFile, "utf8"));
    }
    // The hub knows every edge (TunnelServer accepts only those); an edge knows the hub.
    for (const edge of topo.edges) {
      writeFileSync(
        join(this.confDir(topo.hub), "hosts", tincName(edge)),
        this.hostFiles.get(edge)!,
      );
      writeFileSync(
        join(this.confDir(edge), "hosts", tincName(topo.hub)),
        this.hostFiles.get(topo.hub)!,
      );
    }
  }

  confDir(node: Node): string {
    return join(this.dir, node.label);
  }

  override supports(level: Level): string | null {
    return level.kind === "delay" ? TINC_DELAY_SKIP : null;
  }

  /** Starts tincd in the foreground, waits for its interface, then addresses and routes it. */
  private async start(node: Node, routes: string[]): Promise<void> {
    const conf = this.confDir(node);
    const name = this.ifname(node);
    // Its own pid file: the default one is global (/run/tinc.pid) and shared by all eight.
    const proc = nsSpawn(node.ns, `tincd on ${node.label}`, "tincd", [
      "-c",
      conf,
      "-D",
      // Connections and their protocol requests (nothing per packet): what diagnose() shows.
      "-d2",
      `--pidfile=${join(conf, "tincd.pid")}`,
    ]);
    this.procs.set(node, proc);
    this.started.add(node);
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (!proc.running) throw new StepError(`${proc.label} exited during start: ${proc.stderr}`);
      try {
        nsRun(node.ns, "ip", ["link", "show", "dev", name]);
        break;
      } catch {
        if (Date.now() > deadline) {
          throw new StepError(
            `${proc.label}: no ${name} after ${START_TIMEOUT_MS} ms: ${proc.stderr}`,
          );
        }
        await sleep(20);
      }
    }
    nsRun(node.ns, "ip", ["addr", "add", `${node.tunnelAddress}/24`, "dev", name]);
    nsRun(node.ns, "ip", ["link", "set", name, "mtu", `${TUNNEL_MTU}`, "up"]);
    for (const route of routes) nsRun(node.ns, "ip", ["route", "add", route, "dev", name]);
  }

  async upHub(): Promise<void> {
    await this.start(
      this.topo.hub,
      this.topo.edges.map((edge) => edge.podCidr),
    );
  }

  async upEdge(edge: Node): Promise<void> {
    await this.start(edge, ["10.244.0.0/16"]);
  }

  /**
   * The hub's underlay counters: tincd relays pod → pod inside the daemon, so the hub's tun sees
   * edge → hub traffic only; every tunnelled byte to or through the hub crosses its underlay.
   */
  hubTransfer(): { rxBytes: number; txBytes: number } | null {
    return linkBytes(this.topo.hub.ns, "u0");
  }

  diagnose(edge: Node): string {
    const parts: string[] = [];
    for (const node of [edge, this.topo.hub]) {
      const proc = this.procs.get(node);
      const lines = proc
        ? proc.stderr.toString().split("\n").slice(-12).join(" / ")
        : "not started";
      parts.push(`${node.label}: ${lines || "nothing logged"}`);
    }
    const dead = this.deadDaemon();
    return parts.join(" | ") + (dead ? ` | ${dead}` : "");
  }
}

/** Bytes an interface received and sent (kernel counters), or null. */
export function linkBytes(ns: string, dev: string): { rxBytes: number; txBytes: number } | null {
  try {
    const [link] = JSON.parse(
      runSync("ip", ["-n", ns, "-j", "-s", "link", "show", "dev", dev]),
    ) as Array<{ stats64?: { rx: { bytes: number }; tx: { bytes: number } } }>;
    if (!link?.stats64) return null;
    return { rxBytes: link.stats64.rx.bytes, txBytes: link.stats64.tx.bytes };
  } catch {
    return null;
  }
}
