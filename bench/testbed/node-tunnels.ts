// The part every per-node tunnel of the testbed shares, whatever its protocol: a daemon (or a
// kernel interface) on each node, named by the topology, whose processes count as the
// tunnel's cost and are ended, and whose interfaces are removed, when the case is over.
// (Apart from tunnels.ts so that openvpn.ts can extend it without an import cycle.)
import type { Level } from "./impair.js";
import { nsRun, type Proc } from "../../src/host/toolkit/process.js";
import type { Node, Topology } from "./topology.js";
import type { Daemon, Keys, Tunnel, TunnelName } from "./tunnels.js";

/** How long a local daemon may take to start (control socket, interface, server bound). */
export const START_TIMEOUT_MS = 20_000;

export abstract class NodeTunnels implements Tunnel {
  abstract readonly name: TunnelName;
  readonly tunnelled = true;
  protected readonly procs = new Map<Node, Proc>();
  protected readonly started = new Set<Node>();

  constructor(
    protected readonly topo: Topology,
    protected readonly keys: Keys,
    protected readonly kind: string,
  ) {}

  /** Why this tunnel cannot take part at `level`, or null; every level by default. */
  supports(level: Level): string | null {
    void level;
    return null;
  }

  ifname(node: Node): string {
    return this.topo.interfaceName(this.kind, node);
  }

  abstract upHub(level: Level): Promise<void>;
  abstract upEdge(edge: Node, level: Level): Promise<void>;
  abstract hubTransfer(): { rxBytes: number; txBytes: number } | null;
  abstract diagnose(edge: Node): string;

  async down(): Promise<void> {
    await Promise.all([...this.procs.values()].map((proc) => proc.end(5000)));
    for (const node of this.started) {
      try {
        nsRun(node.ns, "ip", ["link", "del", this.ifname(node)]);
      } catch {
        // removed by its daemon
      }
    }
    this.procs.clear();
    this.started.clear();
  }

  daemons(): Daemon[] {
    return [...this.procs.entries()].map(([node, proc]) => ({ node: node.label, pid: proc.pid }));
  }

  deadDaemon(): string | null {
    for (const proc of this.procs.values()) {
      if (!proc.running) return `${proc.label} (pid ${proc.pid}) exited: ${this.lastWords(proc)}`;
    }
    return null;
  }

  /** What a daemon said before it ended: where it writes its errors. */
  protected lastWords(proc: Proc): string {
    return proc.stderr.toString();
  }
}
