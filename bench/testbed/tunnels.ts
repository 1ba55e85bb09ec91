// The tunnels the testbed compares, each driving the same topology: edgetun (`edgetun up` per
// node), wireguard-go configured with `wg`, the plain underlay (no tunnel: the physical limit),
// and, when present on the machine, boringtun and kernel WireGuard (same `wg` configuration)
// and OpenVPN (openvpn.ts), tinc (tinc.ts), SoftEther (softether.ts) and Nebula (nebula.ts).
// Every node's tunnel carries its own pod CIDR: the hub's peers are the edges with their tunnel
// address and pod CIDR; each edge has one peer, the hub, for the tunnel subnet and 10.244/16.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { hubEndpointFor, type Level } from "./impair.js";
import { NodeTunnels, START_TIMEOUT_MS } from "./node-tunnels.js";
import { NebulaTunnels, nebulaUnavailable } from "./nebula.js";
import { OpenVpnTunnels, openVpnUnavailable } from "./openvpn.js";
import { SoftEtherTunnels, softEtherUnavailable } from "./softether.js";
import { TincTunnels, tincUnavailable } from "./tinc.js";
import { StepError } from "../../src/host/errors.js";
import {
  commandExists,
  nsRun,
  nsSpawn,
  type Proc,
  runSync,
  sleep,
} from "../../src/host/toolkit/process.js";
import { HUB_PORT, TUNNEL_MTU, type Node, type Topology } from "./topology.js";

export const TUNNEL_NAMES = [
  "edgetun",
  "wireguard-go",
  "underlay",
  "boringtun",
  "kernel",
  "openvpn",
  "tinc",
  "softether",
  "nebula",
] as const;
export type TunnelName = (typeof TUNNEL_NAMES)[number];

const cli = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));
const UAPI_DIRECTORY = "/var/run/wireguard";

export interface Daemon {
  node: string;
  pid: number;
}

export interface Tunnel {
  readonly name: TunnelName;
  /** True when there is a tunnel (the first-packet time means something). */
  readonly tunnelled: boolean;
  supports(level: Level): string | null;
  upHub(level: Level): Promise<void>;
  upEdge(edge: Node, level: Level): Promise<void>;
  down(): Promise<void>;
  /** The daemon processes whose CPU time and memory count as the tunnel's cost. */
  daemons(): Daemon[];
  /** Bytes the hub's interface received and sent, to confirm traffic crossed the tunnel. */
  hubTransfer(): { rxBytes: number; txBytes: number } | null;
  /** Why a daemon of this tunnel is no longer running, or null while all are. */
  deadDaemon(): string | null;
  /** What the edge's and the hub's tunnels say about each other, for an error message. */
  diagnose(edge: Node): string;
  /** How the tunnel carried the case's data, where it can choose (SoftEther: TCP or UDP). */
  transport?(): Promise<object | null>;
}

/** Keys of every node, made once per run; `wg` reads private keys from files only. */
export class Keys {
  readonly dir: string;
  private readonly privateKeys: string[] = [];
  readonly publicKeys: string[] = [];

  constructor(topo: Topology) {
    this.dir = mkdtempSync(join(tmpdir(), `etb-${topo.id}-`));
    for (const node of topo.nodes) {
      const key = generatePrivateKey();
      this.privateKeys[node.index] = key;
      this.publicKeys[node.index] = publicKeyOf(key);
      writeFileSync(this.keyFile(node), `${key}\n`, { mode: 0o600 });
    }
  }

  privateKey(node: Node): string {
    return this.privateKeys[node.index]!;
  }

  publicKey(node: Node): string {
    return this.publicKeys[node.index]!;
  }

  keyFile(node: Node): string {
    return join(this.dir, `${node.label}.key`);
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function edgeAllowedIps(edge: Node): string {
  return `${edge.tunnelAddress}/32,${edge.podCidr}`;
}

const HUB_SIDE_ALLOWED = "10.90.0.0/24,10.244.0.0/16";

async function waitForSocket(name: string, proc: Proc | null): Promise<void> {
  const path = `${UAPI_DIRECTORY}/${name}.sock`;
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!existsSync(path)) {
    if (proc && !proc.running) {
      await proc.exited;
      throw new StepError(`${proc.label} exited during start: ${proc.stderr}`);
    }
    if (Date.now() > deadline)
      throw new StepError(`${name}: no control socket after ${START_TIMEOUT_MS} ms`);
    await sleep(10);
  }
}

function readTransfer(ns: string, name: string): { rxBytes: number; txBytes: number } | null {
  try {
    let rxBytes = 0;
    let txBytes = 0;
    for (const line of nsRun(ns, "wg", ["show", name, "transfer"]).split("\n")) {
      const [, rx, tx] = line.trim().split(/\s+/);
      rxBytes += Number(rx ?? 0) || 0;
      txBytes += Number(tx ?? 0) || 0;
    }
    return { rxBytes, txBytes };
  } catch {
    return null;
  }
}

/** The WireGuard family (edgetun included): `wg` reads their state through the UAPI socket. */
abstract class WireGuardTunnels extends NodeTunnels {
  override async down(): Promise<void> {
    const sockets = [...this.started].map((node) => `${UAPI_DIRECTORY}/${this.ifname(node)}.sock`);
    await super.down();
    for (const socket of sockets) rmSync(socket, { force: true });
  }

  hubTransfer(): { rxBytes: number; txBytes: number } | null {
    return readTransfer(this.topo.hub.ns, this.ifname(this.topo.hub));
  }

  diagnose(edge: Node): string {
    const parts: string[] = [];
    for (const node of [edge, this.topo.hub]) {
      const name = this.ifname(node);
      try {
        const dump = nsRun(node.ns, "wg", ["show", name, "dump"]).trim().split("\n").slice(1);
        // peer lines: public key, psk, endpoint, allowed ips, latest handshake, rx, tx, keepalive
        const peers = dump
          .map((line) => line.split("\t"))
          .filter((f) => node === edge || f[3]?.includes(edge.podCidr))
          .map((f) => `endpoint ${f[2]}, handshake ${f[4]}, rx ${f[5]} B, tx ${f[6]} B`);
        parts.push(`${node.label}: ${peers.join("; ") || "no peer"}`);
      } catch (error) {
        parts.push(`${node.label}: ${(error as Error).message}`);
      }
    }
    const dead = this.deadDaemon();
    return parts.join(" | ") + (dead ? ` | ${dead}` : "");
  }
}

/** edgetun: one `edgetun up FILE --interface NAME` per node, from a wg-quick style file. */
export class EdgetunTunnels extends WireGuardTunnels {
  readonly name = "edgetun";

  constructor(topo: Topology, keys: Keys) {
    super(topo, keys, "t");
  }

  private async start(node: Node, text: string): Promise<void> {
    const file = join(this.keys.dir, `edgetun-${node.label}.conf`);
    writeFileSync(file, text, { mode: 0o600 });
    const name = this.ifname(node);
    const proc = nsSpawn(node.ns, `edgetun on ${node.label}`, process.execPath, [
      cli,
      "up",
      file,
      "--interface",
      name,
      "--log-level",
      "warn",
    ]);
    this.procs.set(node, proc);
    this.started.add(node);
    await waitForSocket(name, proc);
  }

  async upHub(): Promise<void> {
    const hub = this.topo.hub;
    const lines = [
      "[Interface]",
      `PrivateKey = ${this.keys.privateKey(hub)}`,
      `ListenPort = ${HUB_PORT}`,
      `Address = ${hub.tunnelAddress}/24`,
      `MTU = ${TUNNEL_MTU}`,
    ];
    for (const edge of this.topo.edges) {
      lines.push(
        "",
        "[Peer]",
        `PublicKey = ${this.keys.publicKey(edge)}`,
        `AllowedIPs = ${edgeAllowedIps(edge)}`,
      );
    }
    await this.start(hub, `${lines.join("\n")}\n`);
  }

  async upEdge(edge: Node, level: Level): Promise<void> {
    const text = [
      "[Interface]",
      `PrivateKey = ${this.keys.privateKey(edge)}`,
      `Address = ${edge.tunnelAddress}/24`,
      `MTU = ${TUNNEL_MTU}`,
      "",
      "[Peer]",
      `PublicKey = ${this.keys.publicKey(this.topo.hub)}`,
      `Endpoint = ${hubEndpointFor(level, edge, this.topo)}`,
      `AllowedIPs = ${HUB_SIDE_ALLOWED}`,
      "PersistentKeepalive = 25",
    ].join("\n");
    await this.start(edge, `${text}\n`);
  }
}

/**
 * Tunnels configured with `wg` and iproute2 as wg-quick would: wireguard-go and boringtun
 * (a userspace daemon per node) or kernel WireGuard (an `ip link add … type wireguard`).
 */
export class WgTunnels extends WireGuardTunnels {
  constructor(
    topo: Topology,
    keys: Keys,
    readonly name: TunnelName,
    private readonly launch:
      ((ifname: string) => { command: string; args: string[]; env: Record<string, string> }) | null,
  ) {
    super(topo, keys, name === "wireguard-go" ? "g" : name === "boringtun" ? "b" : "k");
  }

  private async create(node: Node): Promise<string> {
    const name = this.ifname(node);
    this.started.add(node);
    if (this.launch) {
      const { command, args, env } = this.launch(name);
      const proc = nsSpawn(node.ns, `${this.name} on ${node.label}`, command, args, env);
      this.procs.set(node, proc);
      await waitForSocket(name, proc);
    } else {
      nsRun(node.ns, "ip", ["link", "add", name, "type", "wireguard"]);
    }
    return name;
  }

  private configure(node: Node, name: string, wgArgs: string[], routes: string[]): void {
    nsRun(node.ns, "wg", ["set", name, "private-key", this.keys.keyFile(node), ...wgArgs]);
    nsRun(node.ns, "ip", ["addr", "add", `${node.tunnelAddress}/24`, "dev", name]);
    nsRun(node.ns, "ip", ["link", "set", name, "mtu", `${TUNNEL_MTU}`, "up"]);
    for (const route of routes) nsRun(node.ns, "ip", ["route", "add", route, "dev", name]);
  }

  async upHub(): Promise<void> {
    const hub = this.topo.hub;
    const name = await this.create(hub);
    const peers = this.topo.edges.flatMap((edge) => [
      "peer",
      this.keys.publicKey(edge),
      "allowed-ips",
      edgeAllowedIps(edge),
    ]);
    this.configure(
      hub,
      name,
      ["listen-port", `${HUB_PORT}`, ...peers],
      this.topo.edges.map((e) => e.podCidr),
    );
  }

  async upEdge(edge: Node, level: Level): Promise<void> {
    const name = await this.create(edge);
    const peer = [
      "peer",
      this.keys.publicKey(this.topo.hub),
      "endpoint",
      hubEndpointFor(level, edge, this.topo),
      "allowed-ips",
      HUB_SIDE_ALLOWED,
      "persistent-keepalive",
      "25",
    ];
    this.configure(edge, name, peer, ["10.244.0.0/16"]);
  }
}

/** No tunnel: pods routed over the underlay, across the hub. */
export class UnderlayRoutes implements Tunnel {
  readonly name = "underlay";
  readonly tunnelled = false;
  constructor(private readonly topo: Topology) {}
  supports(level: Level): string | null {
    return level.kind === "delay"
      ? "the delay relay carries the tunnels' UDP; the plain underlay has none to relay"
      : null;
  }
  async upHub(): Promise<void> {
    this.topo.routeUnderlay(true);
  }
  async upEdge(): Promise<void> {}
  async down(): Promise<void> {
    this.topo.routeUnderlay(false);
  }
  daemons(): Daemon[] {
    return [];
  }
  hubTransfer(): null {
    return null;
  }
  deadDaemon(): null {
    return null;
  }
  diagnose(): string {
    return "plain underlay routes";
  }
}

/** The boringtun binary, if one is installed. */
function boringtunBinary(): string | null {
  for (const name of ["boringtun-cli", "boringtun"]) if (commandExists(name)) return name;
  return null;
}

/** Whether kernel WireGuard works here: tried in a throwaway namespace of this run. */
function kernelWireguardWorks(topo: Topology): boolean {
  const ns = topo.nsName("probe");
  try {
    runSync("ip", ["netns", "add", ns]);
    runSync("ip", ["-n", ns, "link", "add", "wgprobe", "type", "wireguard"]);
    return true;
  } catch {
    return false;
  } finally {
    try {
      runSync("ip", ["netns", "del", ns]);
    } catch {
      // never created
    }
  }
}

/** Why a tunnel cannot run on this machine (tools missing), or null. */
export function tunnelUnavailable(name: TunnelName, topo: Topology): string | null {
  switch (name) {
    case "edgetun":
      return existsSync(cli) ? null : `${cli} is missing: run npm run build`;
    case "wireguard-go":
      if (!commandExists("wireguard-go"))
        return "wireguard-go is not installed (apt-get install wireguard-go)";
      return commandExists("wg") ? null : "wg is not installed (apt-get install wireguard-tools)";
    case "boringtun":
      if (!boringtunBinary()) return "boringtun is not installed";
      return commandExists("wg") ? null : "wg is not installed (apt-get install wireguard-tools)";
    case "kernel":
      if (!commandExists("wg")) return "wg is not installed (apt-get install wireguard-tools)";
      return kernelWireguardWorks(topo) ? null : "no kernel WireGuard module on this machine";
    case "openvpn":
      return openVpnUnavailable();
    case "tinc":
      return tincUnavailable();
    case "softether":
      return softEtherUnavailable();
    case "nebula":
      return nebulaUnavailable();
    case "underlay":
      return null;
  }
}

export function makeTunnel(name: TunnelName, topo: Topology, keys: Keys): Tunnel {
  switch (name) {
    case "edgetun":
      return new EdgetunTunnels(topo, keys);
    case "wireguard-go":
      return new WgTunnels(topo, keys, name, (ifname) => ({
        command: "wireguard-go",
        args: ["-f", ifname],
        env: { LOG_LEVEL: "error" },
      }));
    case "boringtun":
      return new WgTunnels(topo, keys, name, (ifname) => ({
        command: boringtunBinary() ?? "boringtun-cli",
        args: ["-f", "--disable-drop-privileges", ifname],
        env: { WG_LOG_LEVEL: "error" },
      }));
    case "kernel":
      return new WgTunnels(topo, keys, name, null);
    case "openvpn":
      return new OpenVpnTunnels(topo, keys);
    case "tinc":
      return new TincTunnels(topo, keys);
    case "softether":
      return new SoftEtherTunnels(topo, keys);
    case "nebula":
      return new NebulaTunnels(topo, keys);
    case "underlay":
      return new UnderlayRoutes(topo);
  }
}
