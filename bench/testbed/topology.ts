// The testbed's network: a router namespace holding the underlay, a hub and seven edges on it
// (veth pairs, one /30 each), and behind every node a "pod" namespace with its own pod CIDR,
// routed through the node as a container bridge would be. Nothing connects these namespaces
// to the host's own network, so no packet of the testbed can leave them.
//
//             hubpod 10.244.0.2
//               | 10.244.0.1
//              hub 10.77.0.2 ── rh 10.77.0.1 ┐
//                                           router ── re<n> 10.77.<n>.1 ── 10.77.<n>.2 edge<n>
//                                                                    10.244.<n>.1 |
//                                                                     edge<n>pod 10.244.<n>.2
//
// Tunnel addresses: hub 10.90.0.1/24, edge n 10.90.0.(10+n)/24. Names: namespaces
// `etb-<pid36>-<role>`, interfaces `etb-<pid36>-<kind><node>`, both unique to this run; a later
// run recognises anything named `etb-` whose owner is gone as a leftover and removes it.
import { readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { commandLine, endPids, nsRun, processAlive, runSync } from "./proc.js";

export const PREFIX = "etb-";
export const EDGE_COUNT = 7;
export const HUB_PORT = 51820;
export const HTTP_PORT = 8080;
export const TUNNEL_MTU = 1420;
/** Underlay interface of the router towards the hub: impairments go here. */
export const ROUTER_HUB_IF = "rh";
/** Each node's underlay interface. */
export const NODE_UNDERLAY_IF = "u0";

export interface Node {
  /** 0 for the hub, 1..7 for the edges. */
  index: number;
  label: string;
  ns: string;
  podNs: string;
  underlayAddress: string;
  routerAddress: string;
  podAddress: string;
  podGateway: string;
  podCidr: string;
  tunnelAddress: string;
}

const UNDERLAY_TABLE = "100";

export class Topology {
  readonly id = process.pid.toString(36);
  readonly router: string;
  readonly hub: Node;
  readonly edges: Node[];
  private readonly created: string[] = [];

  constructor() {
    this.router = this.nsName("r");
    this.hub = this.node(0);
    this.edges = Array.from({ length: EDGE_COUNT }, (_, i) => this.node(i + 1));
  }

  get nodes(): Node[] {
    return [this.hub, ...this.edges];
  }

  nsName(role: string): string {
    return `${PREFIX}${this.id}-${role}`;
  }

  /** An interface name for a tunnel of kind `kind` (one letter) on a node: ≤ 15 characters. */
  interfaceName(kind: string, node: Node): string {
    return `${PREFIX}${this.id}-${kind}${node.index === 0 ? "h" : node.index}`;
  }

  private node(index: number): Node {
    const label = index === 0 ? "hub" : `e${index}`;
    return {
      index,
      label,
      ns: this.nsName(label),
      podNs: this.nsName(`${label}pod`),
      underlayAddress: `10.77.${index}.2`,
      routerAddress: `10.77.${index}.1`,
      podAddress: `10.244.${index}.2`,
      podGateway: `10.244.${index}.1`,
      podCidr: `10.244.${index}.0/24`,
      tunnelAddress: index === 0 ? "10.90.0.1" : `10.90.0.${10 + index}`,
    };
  }

  private addNamespace(name: string): void {
    runSync("ip", ["netns", "add", name]);
    this.created.push(name);
    nsRun(name, "ip", ["link", "set", "lo", "up"]);
    // Forwarding on, redirects and IPv6 (router solicitations, DAD) off: no stray traffic.
    nsRun(name, "sysctl", [
      "-qw",
      "net.ipv4.ip_forward=1",
      "net.ipv4.conf.all.send_redirects=0",
      "net.ipv4.conf.default.send_redirects=0",
      "net.ipv6.conf.all.disable_ipv6=1",
      "net.ipv6.conf.default.disable_ipv6=1",
    ]);
  }

  private veth(
    a: string,
    ifA: string,
    addrA: string,
    b: string,
    ifB: string,
    addrB: string,
    mtu: number,
    wireFrames: boolean,
  ): void {
    runSync("ip", [
      "-n",
      a,
      "link",
      "add",
      ifA,
      "mtu",
      `${mtu}`,
      "type",
      "veth",
      "peer",
      "name",
      ifB,
      "mtu",
      `${mtu}`,
      "netns",
      b,
    ]);
    runSync("ip", ["-n", a, "addr", "add", addrA, "dev", ifA]);
    runSync("ip", ["-n", b, "addr", "add", addrB, "dev", ifB]);
    runSync("ip", ["-n", a, "link", "set", ifA, "up"]);
    runSync("ip", ["-n", b, "link", "set", ifB, "up"]);
    if (wireFrames) {
      // A veth passes GSO super-packets (up to 64 KB) along whole, and nftables would drop
      // such an aggregate as one packet. One segment per packet: the underlay carries
      // MTU-sized frames as a physical network does, and "loss N %" means N % of frames.
      for (const [ns, dev] of [
        [a, ifA],
        [b, ifB],
      ] as const) {
        runSync("ip", ["-n", ns, "link", "set", dev, "gso_max_segs", "1"]);
      }
    }
  }

  create(): void {
    this.addNamespace(this.router);
    for (const node of this.nodes) {
      this.addNamespace(node.ns);
      this.addNamespace(node.podNs);
      const routerIf = node.index === 0 ? ROUTER_HUB_IF : `re${node.index}`;
      this.veth(
        this.router,
        routerIf,
        `${node.routerAddress}/30`,
        node.ns,
        NODE_UNDERLAY_IF,
        `${node.underlayAddress}/30`,
        1500,
        true,
      );
      // Pods get the tunnel's MTU, as a CNI gives them, in every mode (the underlay included),
      // so that all modes carry the same packets.
      this.veth(
        node.ns,
        "pod0",
        `${node.podGateway}/24`,
        node.podNs,
        "eth0",
        `${node.podAddress}/24`,
        TUNNEL_MTU,
        false,
      );
      // Underlay reachability only: no default route, so nothing can fall back to the underlay.
      runSync("ip", ["-n", node.ns, "route", "add", "10.77.0.0/16", "via", node.routerAddress]);
      // Pod traffic without a tunnel route (yet) is dropped silently, not answered with "net
      // unreachable" (which would also stop the first-packet probe's ping). A wider prefix
      // than the tunnels' 10.244.0.0/16: edgetun adds no route where one exists already.
      runSync("ip", ["-n", node.ns, "route", "add", "blackhole", "10.240.0.0/12"]);
      runSync("ip", ["-n", node.podNs, "route", "add", "default", "via", node.podGateway]);
    }
  }

  /**
   * Pod traffic over the plain underlay, still across the hub: edges send the pod CIDRs to the
   * router, the router sends them to the hub, and what comes back from the hub goes to the
   * right edge (a rule on the hub-facing interface picks a table with the edges' pod routes).
   */
  routeUnderlay(on: boolean): void {
    const verb = on ? "add" : "del";
    const tolerant = (args: string[]) => {
      try {
        runSync("ip", args);
      } catch (error) {
        if (on) throw error;
      }
    };
    for (const edge of this.edges) {
      tolerant(["-n", edge.ns, "route", verb, "10.244.0.0/16", "via", edge.routerAddress]);
      tolerant([
        "-n",
        this.router,
        "route",
        verb,
        edge.podCidr,
        "via",
        edge.underlayAddress,
        "table",
        UNDERLAY_TABLE,
      ]);
    }
    tolerant(["-n", this.router, "route", verb, "10.244.0.0/16", "via", this.hub.underlayAddress]);
    tolerant([
      "-n",
      this.router,
      "rule",
      verb,
      "iif",
      ROUTER_HUB_IF,
      "lookup",
      UNDERLAY_TABLE,
      "priority",
      "100",
    ]);
    tolerant(["-n", this.hub.ns, "route", verb, "10.244.0.0/16", "via", this.hub.routerAddress]);
  }

  /** Ends every process still inside our namespaces, then removes the namespaces. Synchronous. */
  destroy(): void {
    const pids: number[] = [];
    for (const ns of this.created) pids.push(...namespacePids(ns));
    endPids(pids);
    for (const ns of [...this.created].reverse()) {
      try {
        runSync("ip", ["netns", "del", ns]);
      } catch {
        // gone already
      }
    }
    this.created.length = 0;
    removeRunFiles(this.id);
  }
}

function namespacePids(ns: string): number[] {
  try {
    return runSync("ip", ["netns", "pids", ns])
      .split(/\s+/)
      .filter(Boolean)
      .map(Number)
      .filter((pid) => Number.isInteger(pid) && pid > 0 && pid !== process.pid);
  } catch {
    return [];
  }
}

/** Control sockets, pid files and key directories a run of id `id` may leave behind. */
function removeRunFiles(id: string): void {
  const prefix = `${PREFIX}${id}-`;
  for (const [dir, suffix] of [
    ["/var/run/wireguard", ".sock"],
    ["/run/edgetun", ".pid"],
    [tmpdir(), ""],
  ] as const) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      if (name.startsWith(prefix) && name.endsWith(suffix)) {
        rmSync(join(dir, name), { recursive: true, force: true });
      }
    }
  }
}

export interface Leftovers {
  /** Runs still going: their namespaces are not ours to touch. */
  active: number[];
  removed: Array<{ ownerPid: number; namespaces: string[]; processes: string[] }>;
}

function ownerOf(id: string): number {
  return parseInt(id, 36);
}

function isTestbedRun(pid: number): boolean {
  return (
    pid !== process.pid && processAlive(pid) && /testbed|bench\/latency/.test(commandLine(pid))
  );
}

/**
 * Finds what earlier runs left behind (their process was killed before its cleanup ran): any
 * namespace, socket or pid file named `etb-<id>-…` whose owner (pid <id> in base 36) is no
 * longer a testbed run. Ends the processes inside those namespaces by PID, then removes it all.
 */
export function removeLeftovers(): Leftovers {
  const result: Leftovers = { active: [], removed: [] };
  const byId = new Map<string, string[]>();
  let listing: string;
  try {
    listing = runSync("ip", ["netns", "list"]);
  } catch {
    listing = "";
  }
  for (const line of listing.split("\n")) {
    const name = line.split(" ")[0] ?? "";
    const match = /^etb-([0-9a-z]+)-/.exec(name);
    if (!match?.[1]) continue;
    byId.set(match[1], [...(byId.get(match[1]) ?? []), name]);
  }
  for (const dir of ["/var/run/wireguard", "/run/edgetun"]) {
    try {
      for (const name of readdirSync(dir)) {
        const match = /^etb-([0-9a-z]+)-/.exec(name);
        if (match?.[1] && !byId.has(match[1])) byId.set(match[1], []);
      }
    } catch {
      // no such directory
    }
  }
  for (const [id, namespaces] of byId) {
    const owner = ownerOf(id);
    if (isTestbedRun(owner)) {
      result.active.push(owner);
      continue;
    }
    const pids = namespaces.flatMap(namespacePids);
    const processes = pids.map((pid) => `${pid} (${commandLine(pid).slice(0, 60) || "?"})`);
    endPids(pids);
    for (const ns of namespaces) {
      try {
        runSync("ip", ["netns", "del", ns]);
      } catch {
        // gone already
      }
    }
    removeRunFiles(id);
    result.removed.push({ ownerPid: owner, namespaces, processes });
  }
  return result;
}
