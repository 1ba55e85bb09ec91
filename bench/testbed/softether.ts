// SoftEther VPN as a testbed tunnel, one of the seed study's five VPNs: Debian's SoftEther 5.x,
// the VPN server in the hub and a VPN client on each edge, configured through `vpncmd` alone.
//
// SoftEther is a layer-2 VPN: the server's virtual hub is a switch, bridged here to a tap
// device in the hub's namespace (`BridgeCreate … /TAP:yes`), and each client's virtual
// adapter (`NicCreate`) is a port of that switch. Addresses and routes are the other tunnels':
// the hub routes each pod CIDR to its edge's tunnel address, each edge routes 10.244.0.0/16 to
// the hub's, so pod → pod crosses the hub's kernel as it does with WireGuard and OpenVPN.
//
// Its transport is a TLS session over TCP to the server's listener (here the hub's port 51820,
// the other listeners removed); on top the client and server negotiate "UDP acceleration",
// which moves the data to UDP between the two when it gets through. Which one carried a case's
// data is read from the client (`AccountStatusGet`) at the end of the case and recorded. The
// delay relay carries UDP to the hub's port only, not a TCP session: SoftEther has no delay rows.
//
// Global state: the Debian build keeps its configuration, logs and control files in fixed
// paths (/var/lib/softether, /var/log/softether, /run/softether), one set per machine, which
// eight daemons cannot share. Every SoftEther process of the testbed (daemons and `vpncmd`)
// runs in a mount namespace of its own (`unshare -m`), where an empty tmpfs covers /var/lib,
// /var/log and /run and the node's own directories under the run's keys directory are bound
// onto the three paths: nothing is written to the machine's own, and the run refuses to start
// while another SoftEther runs on the machine (it would be using them).
//
// The server's other outward features (VPN Azure, the keep-alive to a public host, OpenVPN and
// SSTP listeners, VPN over ICMP/DNS) are switched off; the namespaces have no route out anyway.
import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { Level } from "./impair.js";
import { NodeTunnels, START_TIMEOUT_MS } from "./node-tunnels.js";
import { StepError } from "../../src/host/errors.js";
import {
  commandExists,
  endPids,
  nsExec,
  nsRun,
  nsSpawn,
  sleep,
} from "../../src/host/toolkit/process.js";
import { HUB_PORT, PREFIX, TUNNEL_MTU, type Node, type Topology } from "./topology.js";
import type { Daemon, Keys } from "./tunnels.js";
import { linkBytes } from "./tinc.js";

/** Where the Debian packages put the programs (the /usr/bin names are shell wrappers). */
export const SOFTETHER_DIR = "/usr/libexec/softether";
const VPNSERVER = `${SOFTETHER_DIR}/vpnserver/vpnserver`;
const VPNCLIENT = `${SOFTETHER_DIR}/vpnclient/vpnclient`;
const VPNCMD = `${SOFTETHER_DIR}/vpncmd/vpncmd`;

/** The fixed paths the Debian build uses: configuration, logs, pid and control files. */
export const SOFTETHER_GLOBAL_PATHS = [
  "/var/lib/softether",
  "/var/log/softether",
  "/run/softether",
];

/** The server's hub (the one a fresh server has) and the devices' names. */
const VIRTUAL_HUB = "DEFAULT";
const DEVICE = "etb";
/** The server's admin listener before ours exists: a fresh server listens on 443, 992, 1194, 5555. */
const FIRST_ADMIN_PORT = 5555;
/** The client's account name for its connection to the hub. */
const ACCOUNT = "hub";

export const SOFTETHER_DELAY_SKIP =
  "SoftEther's session is TLS over TCP to the hub (UDP acceleration only on top of it); the delay relay carries UDP only";

/**
 * A shell script that makes the paths of SOFTETHER_GLOBAL_PATHS the node's own directories, in
 * the mount namespace it runs in, then runs the command: `sh -c SCRIPT sh STATE COMMAND…`.
 */
const PRIVATE_PATHS_SCRIPT = [
  'state="$1"; shift',
  "for top in /var/lib /var/log /run; do",
  '  mount -t tmpfs -o mode=0755 etb-softether "$top" || exit 111',
  "done",
  'for dir in lib log run; do mkdir -p "$state/$dir" || exit 111; done',
  "mkdir -p /var/lib/softether /var/log/softether /run/softether || exit 111",
  'mount --bind "$state/lib" /var/lib/softether || exit 111',
  'mount --bind "$state/log" /var/log/softether || exit 111',
  'mount --bind "$state/run" /run/softether || exit 111',
  'exec "$@"',
].join("\n");

/** The arguments that run `command` on a node's private SoftEther paths (after `ip netns exec NS`). */
export function privatePathsArgs(state: string, command: string, args: string[]): string[] {
  return [
    "-m",
    "--propagation",
    "private",
    "sh",
    "-c",
    PRIVATE_PATHS_SCRIPT,
    "sh",
    state,
    command,
    ...args,
  ];
}

/** The network namespaces of testbed runs (`etb-…`, this one's and others'), by inode. */
function testbedNetworkNamespaces(): Set<string> {
  const inodes = new Set<string>();
  try {
    for (const name of readdirSync("/run/netns")) {
      if (name.startsWith(PREFIX)) inodes.add(`net:[${statSync(`/run/netns/${name}`).ino}]`);
    }
  } catch {
    // no namespaces
  }
  return inodes;
}

/**
 * SoftEther programs running on this machine outside the testbeds' namespaces: those use the
 * fixed paths. (A testbed's own run on private paths, inside its namespaces.)
 */
export function softEtherProcesses(): Array<{ pid: number; program: string }> {
  const ours = testbedNetworkNamespaces();
  const found: Array<{ pid: number; program: string }> = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let exe: string;
    try {
      exe = readlinkSync(`/proc/${entry}/exe`);
    } catch {
      continue;
    }
    if (!exe.startsWith(`${SOFTETHER_DIR}/`)) continue;
    let netns = "";
    try {
      netns = readlinkSync(`/proc/${entry}/ns/net`);
    } catch {
      // gone, or not ours to read
    }
    if (!ours.has(netns)) found.push({ pid: Number(entry), program: exe });
  }
  return found;
}

/** Why SoftEther cannot run here (not installed, or another SoftEther uses its paths), or null. */
export function softEtherUnavailable(dir = SOFTETHER_DIR): string | null {
  for (const [program, pkg] of [
    ["vpnserver", "softether-vpnserver"],
    ["vpnclient", "softether-vpnclient"],
    ["vpncmd", "softether-vpncmd"],
  ] as const) {
    const path = join(dir, program, program);
    if (!existsSync(path)) return `${path} is missing (apt-get install ${pkg})`;
  }
  if (!commandExists("unshare")) return "unshare is not installed (apt-get install util-linux)";
  return null;
}

/**
 * Why this run must not start SoftEther: another SoftEther is running on the machine (and so
 * owns the fixed paths), or null. Checked once before anything is created.
 */
export function softEtherConflict(): string | null {
  const others = softEtherProcesses();
  if (others.length === 0) return null;
  const list = others.map(({ pid, program }) => `${pid} (${program})`).join(", ");
  return (
    `another SoftEther is running (${list}) and uses ${SOFTETHER_GLOBAL_PATHS.join(", ")}; ` +
    "stop it first, this bench does not share them"
  );
}

/** What the global paths hold (names, sizes and times), to confirm a run left them as it found them. */
export function globalPathsSnapshot(): string {
  const lines: string[] = [];
  const walk = (path: string) => {
    let names: string[];
    try {
      names = readdirSync(path).sort();
    } catch {
      lines.push(`${path}: ${existsSync(path) ? "unreadable" : "absent"}`);
      return;
    }
    lines.push(`${path}/`);
    for (const name of names) {
      const full = join(path, name);
      try {
        const text = readFileSync(full);
        lines.push(`${full} ${text.length}`);
      } catch {
        walk(full);
      }
    }
  };
  for (const path of SOFTETHER_GLOBAL_PATHS) walk(path);
  return lines.join("\n");
}

/** The vpncmd commands that set up the hub's server; `secret(name)` is a user's password. */
export function serverCommands(
  topo: Topology,
  adminPassword: string,
  secret: (edge: Node) => string,
): string[] {
  return [
    `ServerPasswordSet ${adminPassword}`,
    `ListenerCreate ${HUB_PORT}`,
    ...[443, 992, 1194].map((port) => `ListenerDelete ${port}`),
    "OpenVpnEnable no /PORTS:1194",
    "SstpEnable no",
    "VpnOverIcmpDnsEnable /ICMP:no /DNS:no",
    "VpnAzureSetEnable no",
    "KeepDisable",
    `Hub ${VIRTUAL_HUB}`,
    ...topo.edges.flatMap((edge) => [
      `UserCreate ${edge.label} /GROUP:none /REALNAME:none /NOTE:none`,
      `UserPasswordSet ${edge.label} /PASSWORD:${secret(edge)}`,
    ]),
    `BridgeCreate ${VIRTUAL_HUB} /DEVICE:${DEVICE} /TAP:yes`,
    // Last: the session that runs these came in on it.
    `ListenerDelete ${FIRST_ADMIN_PORT}`,
  ];
}

/** The vpncmd commands that connect an edge's client to the hub. */
export function clientCommands(edge: Node, server: string, password: string): string[] {
  return [
    `NicCreate ${DEVICE}`,
    `AccountCreate ${ACCOUNT} /SERVER:${server} /HUB:${VIRTUAL_HUB} /USERNAME:${edge.label} /NICNAME:${DEVICE}`,
    `AccountPasswordSet ${ACCOUNT} /PASSWORD:${password} /TYPE:standard`,
    `AccountConnect ${ACCOUNT}`,
  ];
}

/** What a client's AccountStatusGet says about how its session carries data. */
export interface SoftEtherTransport {
  tcpConnections: number;
  encryption: string;
  compression: string;
  udpAccelerationActive: boolean;
}

export function parseAccountStatus(text: string): SoftEtherTransport | null {
  const field = (name: string) => new RegExp(`^${name}\\s*\\|(.*)$`, "m").exec(text)?.[1]?.trim();
  const connections = field("Number of TCP Connections");
  const udp = field("UDP Acceleration is Active");
  if (connections === undefined || udp === undefined) return null;
  return {
    tcpConnections: Number(connections),
    encryption: field("Encryption") ?? "?",
    compression: field("Use of Compression") ?? "?",
    udpAccelerationActive: udp === "Yes",
  };
}

export class SoftEtherTunnels extends NodeTunnels {
  readonly name = "softether";
  private readonly dir: string;
  private readonly secrets = new Map<Node, string>();
  private readonly adminPassword = randomBytes(16).toString("hex");

  constructor(topo: Topology, keys: Keys) {
    super(topo, keys, "s");
    this.dir = join(keys.dir, "softether");
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    for (const edge of topo.edges) this.secrets.set(edge, randomBytes(16).toString("hex"));
  }

  /** The hub's tap (`tap_` + name) or the edge's virtual adapter (`vpn_` + name). */
  override ifname(node: Node): string {
    return `${node === this.topo.hub ? "tap" : "vpn"}_${DEVICE}`;
  }

  override supports(level: Level): string | null {
    return level.kind === "delay" ? SOFTETHER_DELAY_SKIP : null;
  }

  private state(node: Node): string {
    return join(this.dir, node.label);
  }

  /** Output with this run's passwords replaced: vpncmd echoes each command it runs. */
  private redact(text: string): string {
    let out = text;
    for (const secret of [this.adminPassword, ...this.secrets.values()]) {
      out = out.split(secret).join("[redacted]");
    }
    return out;
  }

  /** Runs vpncmd commands on a node (its own private paths); throws on the first error reported. */
  private async vpncmd(
    node: Node,
    target: string[],
    commands: string[],
    password?: string,
  ): Promise<string> {
    const file = join(this.state(node), "commands.txt");
    writeFileSync(file, `${commands.join("\n")}\n`, { mode: 0o600 });
    const args = [
      ...target,
      ...(password === undefined ? [] : [`/PASSWORD:${password}`]),
      `/IN:${file}`,
    ];
    const result = await nsExec(
      node.ns,
      `vpncmd on ${node.label}`,
      "unshare",
      privatePathsArgs(this.state(node), VPNCMD, args),
      30_000,
    );
    rmSync(file, { force: true });
    const output = this.redact(result.stdout);
    const error = /Error occurred\. \(Error code: \d+\)[^\n]*\n?[^\n]*/.exec(output);
    if (result.code !== 0 || error || result.timedOut) {
      const tail = output.split("\n").slice(-8).join(" / ");
      throw new StepError(
        `vpncmd on ${node.label}: ${error?.[0].replace(/\n/g, " ") ?? `exit ${result.code}`}: ${tail} ${this.redact(result.stderr)}`,
      );
    }
    return output;
  }

  /** Runs vpncmd until the daemon answers (it takes a moment to open its RPC port). */
  private async vpncmdOnceUp(
    node: Node,
    target: string[],
    commands: string[],
    password?: string,
  ): Promise<string> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const dead = this.deadDaemon();
      if (dead) throw new StepError(dead);
      try {
        return await this.vpncmd(node, target, commands, password);
      } catch (error) {
        // Error code 1: "Connection to the server failed", the daemon not listening yet.
        if (Date.now() > deadline || !/Error code: 1\)/.test((error as Error).message)) throw error;
        await sleep(200);
      }
    }
  }

  private startDaemon(node: Node, program: string): void {
    const state = this.state(node);
    rmSync(state, { recursive: true, force: true });
    mkdirSync(state, { recursive: true, mode: 0o700 });
    const proc = nsSpawn(
      node.ns,
      `${program.split("/").pop()} on ${node.label}`,
      "unshare",
      privatePathsArgs(state, program, ["execsvc"]),
    );
    this.procs.set(node, proc);
    this.started.add(node);
  }

  /** Waits for the device the daemon makes, then addresses and routes it. */
  private async configureDevice(node: Node, routes: string[][]): Promise<void> {
    const name = this.ifname(node);
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      try {
        nsRun(node.ns, "ip", ["link", "show", "dev", name]);
        break;
      } catch {
        if (Date.now() > deadline)
          throw new StepError(`${node.label}: no ${name} after ${START_TIMEOUT_MS} ms`);
        await sleep(20);
      }
    }
    nsRun(node.ns, "ip", ["addr", "add", `${node.tunnelAddress}/24`, "dev", name]);
    nsRun(node.ns, "ip", ["link", "set", name, "mtu", `${TUNNEL_MTU}`, "up"]);
    for (const route of routes) nsRun(node.ns, "ip", ["route", "add", ...route, "dev", name]);
  }

  async upHub(): Promise<void> {
    const hub = this.topo.hub;
    this.startDaemon(hub, VPNSERVER);
    // A fresh server has an empty admin password: the first batch sets one.
    await this.vpncmdOnceUp(
      hub,
      [`localhost:${FIRST_ADMIN_PORT}`, "/SERVER"],
      serverCommands(this.topo, this.adminPassword, (edge) => this.secrets.get(edge)!),
      "",
    );
    await this.configureDevice(
      hub,
      this.topo.edges.map((edge) => [edge.podCidr, "via", edge.tunnelAddress]),
    );
  }

  async upEdge(edge: Node): Promise<void> {
    this.startDaemon(edge, VPNCLIENT);
    const server = `${this.topo.hub.underlayAddress}:${HUB_PORT}`;
    await this.vpncmdOnceUp(
      edge,
      ["localhost", "/CLIENT"],
      clientCommands(edge, server, this.secrets.get(edge)!),
    );
    await this.configureDevice(edge, [["10.244.0.0/16", "via", this.topo.hub.tunnelAddress]]);
  }

  /** How edge 1's session carried its data at the end of the case. */
  async transport(): Promise<SoftEtherTransport | null> {
    const edge = this.topo.edges[0]!;
    if (!this.procs.has(edge)) return null;
    try {
      return parseAccountStatus(
        await this.vpncmd(edge, ["localhost", "/CLIENT"], [`AccountStatusGet ${ACCOUNT}`]),
      );
    } catch {
      return null;
    }
  }

  /** The daemon started (a watcher) and the process it forks, which does the work. */
  override daemons(): Daemon[] {
    return [...this.procs.entries()].flatMap(([node, proc]) => [
      { node: node.label, pid: proc.pid },
      ...childPids(proc.pid).map((pid) => ({ node: node.label, pid })),
    ]);
  }

  /** The watcher leaves its worker running when it ends: both are ended, by pid. */
  override async down(): Promise<void> {
    const pids = [...this.procs.values()].flatMap((proc) => [proc.pid, ...childPids(proc.pid)]);
    endPids(pids);
    await super.down();
  }

  hubTransfer(): { rxBytes: number; txBytes: number } | null {
    return linkBytes(this.topo.hub.ns, this.ifname(this.topo.hub));
  }

  diagnose(edge: Node): string {
    const parts = [edge, this.topo.hub].map((node) => {
      const log = join(
        this.state(node),
        "log",
        node === this.topo.hub ? "server_log" : "client_log",
      );
      try {
        const files = readdirSync(log).sort();
        const text = readFileSync(join(log, files[files.length - 1]!), "utf8");
        return `${node.label}: ${this.redact(text.trim().split("\n").slice(-4).join(" / "))}`;
      } catch {
        return `${node.label}: no log`;
      }
    });
    const dead = this.deadDaemon();
    return parts.join(" | ") + (dead ? ` | ${dead}` : "");
  }
}

/** The direct children of a process (from /proc), or none. */
function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}
