// Impairments of the underlay, all on the link between the router and the hub (every packet
// between an edge and the hub crosses it once; edge pod → hub → edge pod crosses it twice):
//   - loss: nftables in the router namespace drops N % of packets at random, in each direction
//     (`numgen random mod 100 < N drop` on the hub-facing interface);
//   - delay: the edges' tunnels reach the hub through the delay relay (relay.ts) in the router
//     namespace, D ms each way; the plain underlay has no UDP endpoint to relay, so it skips it;
//   - rate: tbf on both ends of the hub link (tbf shapes egress only).
import { fileURLToPath } from "node:url";
import type { RelayOptions } from "./relay.js";
import { StepError } from "../../src/host/errors.js";
import { nsRun, nsSpawn, runSync, type Proc } from "../../src/host/toolkit/process.js";
import { HUB_PORT, NODE_UNDERLAY_IF, ROUTER_HUB_IF, type Node, type Topology } from "./topology.js";

export type Level =
  | { kind: "none" }
  | { kind: "loss"; percent: number }
  | { kind: "delay"; ms: number }
  | { kind: "rate"; mbit: number };

export function levelName(level: Level): string {
  switch (level.kind) {
    case "none":
      return "none";
    case "loss":
      return `loss ${level.percent}%`;
    case "delay":
      return `delay ${level.ms} ms`;
    case "rate":
      return `rate ${level.mbit} Mbit/s`;
  }
}

/** "none", "loss:5", "delay:50", "rate:100". */
export function parseLevel(text: string): Level {
  const [kind, value] = text.split(":");
  const n = Number(value);
  if (kind === "none" && value === undefined) return { kind: "none" };
  if (!Number.isFinite(n) || n <= 0) throw new StepError(`bad impairment level "${text}"`);
  // nftables' `numgen random mod 100` takes whole percentages.
  if (kind === "loss" && n < 100 && Number.isInteger(n)) return { kind: "loss", percent: n };
  if (kind === "delay" && n <= 5000) return { kind: "delay", ms: n };
  if (kind === "rate" && n <= 100_000) return { kind: "rate", mbit: n };
  throw new StepError(
    `bad impairment level "${text}" (use none, loss:PERCENT (whole, 1-99), delay:MS or rate:MBIT)`,
  );
}

export const RELAY_PORT = 51900;
const RELAY_QUEUE_LIMIT = 16384;
const relayScript = fileURLToPath(new URL("./relay.js", import.meta.url));

/** Where an edge's tunnel sends to: the hub itself, or its relay socket under delay. */
export function hubEndpointFor(level: Level, edge: Node, topo: Topology): string {
  return level.kind === "delay"
    ? `${edge.routerAddress}:${RELAY_PORT}`
    : `${topo.hub.underlayAddress}:${HUB_PORT}`;
}

export class Impairment {
  private relay: Proc | null = null;

  constructor(
    private readonly topo: Topology,
    readonly level: Level,
  ) {}

  async apply(): Promise<void> {
    const { topo, level } = this;
    if (level.kind === "loss") {
      const ruleset = [
        "table inet etb_impair {",
        "  chain pre { type filter hook prerouting priority raw; policy accept;",
        `    iifname "${ROUTER_HUB_IF}" numgen random mod 100 < ${level.percent} drop; }`,
        "  chain post { type filter hook postrouting priority 300; policy accept;",
        `    oifname "${ROUTER_HUB_IF}" numgen random mod 100 < ${level.percent} drop; }`,
        "}",
      ].join("\n");
      runSync("ip", ["netns", "exec", topo.router, "nft", "-f", "-"], { input: ruleset });
    } else if (level.kind === "rate") {
      const rate = `${level.mbit}mbit`;
      // burst ≥ rate / HZ with room to spare; latency bounds the queue at 50 ms.
      const burst = `${Math.max(32, Math.ceil((level.mbit * 1e6) / 8 / 250 / 1024) * 2)}kb`;
      for (const [ns, dev] of [
        [topo.router, ROUTER_HUB_IF],
        [topo.hub.ns, NODE_UNDERLAY_IF],
      ] as const) {
        nsRun(ns, "tc", [
          "qdisc",
          "add",
          "dev",
          dev,
          "root",
          "tbf",
          "rate",
          rate,
          "burst",
          burst,
          "latency",
          "50ms",
        ]);
      }
    } else if (level.kind === "delay") {
      const options: RelayOptions = {
        delayMs: level.ms,
        hub: `${topo.hub.underlayAddress}:${HUB_PORT}`,
        hubBind: topo.hub.routerAddress,
        listen: topo.edges.map((edge) => `${edge.routerAddress}:${RELAY_PORT}`),
        queueLimit: RELAY_QUEUE_LIMIT,
      };
      this.relay = nsSpawn(topo.router, "delay relay", process.execPath, [
        relayScript,
        JSON.stringify(options),
      ]);
      await this.relay.waitForLine(/^ready$/, 10_000);
    }
  }

  /** Removes the impairment; returns the relay's counters when there was one. */
  async remove(): Promise<Record<string, number> | null> {
    const { topo, level } = this;
    if (level.kind === "loss") {
      tolerate(() => nsRun(topo.router, "nft", ["delete", "table", "inet", "etb_impair"]));
    } else if (level.kind === "rate") {
      tolerate(() => nsRun(topo.router, "tc", ["qdisc", "del", "dev", ROUTER_HUB_IF, "root"]));
      tolerate(() => nsRun(topo.hub.ns, "tc", ["qdisc", "del", "dev", NODE_UNDERLAY_IF, "root"]));
    } else if (level.kind === "delay" && this.relay) {
      const relay = this.relay;
      this.relay = null;
      let counters: Record<string, number> | null = null;
      relay.onLine((line) => {
        try {
          counters = JSON.parse(line) as Record<string, number>;
        } catch {
          // not the counters
        }
      });
      await relay.end(5000);
      return counters;
    }
    return null;
  }
}

function tolerate(fn: () => unknown): void {
  try {
    fn();
  } catch {
    // already gone
  }
}
