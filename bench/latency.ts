// How quick, not only how fast (issue 14): idle and loaded latency, start-up, bulk and idle
// cost of edgetun beside Debian's wireguard-go and the plain link, in one run, on the
// testbed's topology (bench/testbed/topology.ts), so that every figure has its comparison
// measured minutes apart on the same loaded machine.
//
//   npm run build && sudo npm run bench:latency [-- --sets N] [--tunnels LIST] [--json FILE]
//                                               [--alongside]
//
// Paths: "1 tunnel" is edge 1's pod → hub's pod (edge → hub; the testbed's underlay has one
// kernel router between them); "via hub" is edge 1's pod → edge 2's pod (edge → hub → edge,
// decrypted and encrypted again at the hub). The plain link routes the same pods over the
// underlay, across the hub too. Each set starts every tunnel afresh (the idle pings come
// first: a freshly started daemon); with several sets each figure is the median of the sets.
import { writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { nativeLoadError } from "../src/host/native/index.js";
import { type Level } from "./testbed/impair.js";
import {
  CostMeter,
  firstPacket,
  httpStep,
  iperf,
  ping,
  reach,
  startHttpService,
} from "./testbed/measure.js";
import { StepError } from "../src/host/errors.js";
import { benchOptions, benchUsageError, numberOption } from "./options.js";
import {
  cleanUpOnExit,
  endAllSync,
  nsSpawn,
  sleep,
  type Proc,
} from "../src/host/toolkit/process.js";
import { cpuNanoseconds } from "./testbed/proc.js";
import { preflightProblems } from "./testbed/tools.js";
import { Topology, removeLeftovers } from "./testbed/topology.js";
import {
  Keys,
  makeTunnel,
  TUNNEL_NAMES,
  tunnelUnavailable,
  type Tunnel,
  type TunnelName,
} from "./testbed/tunnels.js";

const NONE: Level = { kind: "none" };
const ECHO_PORT = 7007;
const echoScript = fileURLToPath(new URL("./testbed/echo.js", import.meta.url));

interface Settings {
  idlePings: number;
  idleIntervalS: number;
  rrSeconds: number;
  /** The HTTP rows: calls over this many connections at once, one row each (issue 14: 1 and 10). */
  httpConnections: readonly number[];
  httpMs: number;
  streamSeconds: number;
  udpRate: string;
  idleCpuSeconds: number;
}

const SETTINGS: Settings = {
  idlePings: 500,
  idleIntervalS: 0.01,
  rrSeconds: 3,
  httpConnections: [1, 10],
  httpMs: 2000,
  streamSeconds: 5,
  udpRate: "2G",
  idleCpuSeconds: 10,
};

/** One set's figures for one tunnel, by name; NaN where a figure does not apply. */
type Figures = Record<string, number>;

function say(text: string): void {
  process.stdout.write(`${text}\n`);
}

async function idlePing(into: Figures, key: string, ns: string, target: string): Promise<void> {
  const result = await ping(ns, target, SETTINGS.idlePings, SETTINGS.idleIntervalS, 2);
  into[`${key}.avg`] = result.avgMs;
  into[`${key}.p50`] = result.p50Ms;
  into[`${key}.p99`] = result.p99Ms;
  into[`${key}.loss`] = result.lossPercent;
}

async function requestResponse(topo: Topology, into: Figures): Promise<void> {
  const server: Proc = nsSpawn(topo.hub.podNs, "echo server", process.execPath, [
    echoScript,
    "server",
    `${ECHO_PORT}`,
  ]);
  try {
    await server.waitForLine(/^listening /, 10_000);
    const client = nsSpawn(topo.edges[0]!.podNs, "echo client", process.execPath, [
      echoScript,
      "client",
      topo.hub.podAddress,
      `${ECHO_PORT}`,
      `${SETTINGS.rrSeconds}`,
      "64",
    ]);
    const { timedOut } = await client.finish((SETTINGS.rrSeconds + 20) * 1000);
    if (timedOut) throw new StepError("echo client did not finish");
    const line = client.stdout.toString().trim().split("\n").pop() ?? "";
    const report = JSON.parse(line) as { perSecond: number; meanUs: number; p99Us: number };
    into["rr.perSecond"] = report.perSecond;
    into["rr.mean"] = report.meanUs;
    into["rr.p99"] = report.p99Us;
  } finally {
    await server.end(2000);
  }
}

/**
 * HTTP calls to the hub's pod over `connections` connections at once, with the testbed's load
 * generator (bench/testbed/measure.ts): one connection runs from edge 1; more are spread over
 * the edges, each through its own tunnel to the hub.
 */
async function httpCalls(topo: Topology, connections: number, into: Figures): Promise<void> {
  const http = await httpStep(topo, connections, SETTINGS.httpMs, 10_000);
  into[`http${connections}.perSecond`] = http.requestsPerSecond;
  into[`http${connections}.p99`] = http.p99Ms;
}

/** Pings every 10 ms while one TCP stream fills the path in the same direction. */
async function loadedPing(topo: Topology, into: Figures): Promise<void> {
  const edge = topo.edges[0]!;
  const count = Math.floor((SETTINGS.streamSeconds - 1.5) / 0.01);
  const [, result] = await Promise.all([
    iperf(edge, topo.hub, {
      protocol: "tcp",
      streams: 1,
      seconds: SETTINGS.streamSeconds,
      setupS: 5,
    }),
    sleep(1000).then(() => ping(edge.podNs, topo.hub.podAddress, count, 0.01, 2)),
  ]);
  into["loaded.p50"] = result.p50Ms;
  into["loaded.p99"] = result.p99Ms;
  into["loaded.loss"] = result.lossPercent;
}

async function bulk(topo: Topology, tunnel: Tunnel, into: Figures): Promise<void> {
  const edge = topo.edges[0]!;
  const seconds = SETTINGS.streamSeconds;
  const pair = tunnel.daemons().filter((d) => d.node === "hub" || d.node === edge.label);
  const meter = new CostMeter(pair).start();
  const forward = await iperf(edge, topo.hub, { protocol: "tcp", streams: 1, seconds, setupS: 5 });
  const cost = meter.stop();
  into["tcp.fwd"] = forward.receivedMbps;
  into["tcp.gbitPerCpuS"] = cost ? (forward.receivedBytes * 8) / 1e9 / cost.cpuSeconds : Number.NaN;
  const reverse = await iperf(topo.hub, edge, { protocol: "tcp", streams: 1, seconds, setupS: 5 });
  into["tcp.rev"] = reverse.receivedMbps;
  const udp = await iperf(edge, topo.hub, {
    protocol: "udp",
    streams: 1,
    seconds,
    udpRate: SETTINGS.udpRate,
    setupS: 5,
  });
  into["udp.received"] = udp.receivedMbps;
  into["udp.loss"] = udp.lostPercent ?? Number.NaN;
}

/** CPU of edge 1's daemon while nobody sends: only its own timers and keepalives run. */
async function idleCpu(topo: Topology, tunnel: Tunnel, into: Figures): Promise<void> {
  const daemon = tunnel.daemons().find((d) => d.node === topo.edges[0]!.label);
  if (!daemon) return;
  await sleep(2000); // let the last bulk test's queues drain
  const before = cpuNanoseconds(daemon.pid);
  await sleep(SETTINGS.idleCpuSeconds * 1000);
  into["idle.cpuMsPerS"] = (cpuNanoseconds(daemon.pid) - before) / 1e6 / SETTINGS.idleCpuSeconds;
}

async function measureTunnel(topo: Topology, tunnel: Tunnel): Promise<Figures> {
  const figures: Figures = {};
  const [edge1, edge2] = [topo.edges[0]!, topo.edges[1]!];
  try {
    await tunnel.upHub(NONE);
    if (tunnel.tunnelled) {
      figures["launchMs"] = await firstPacket(
        edge1.podNs,
        topo.hub.podAddress,
        () => tunnel.upEdge(edge1, NONE),
        20,
      );
    } else {
      await tunnel.upEdge(edge1, NONE);
    }
    await tunnel.upEdge(edge2, NONE);
    await reach(edge1.podNs, topo.hub.podAddress, 10);
    await reach(edge2.podNs, topo.hub.podAddress, 10);
    await reach(edge1.podNs, edge2.podAddress, 10);
    await idlePing(figures, "idle1", edge1.podNs, topo.hub.podAddress);
    await idlePing(figures, "idle2", edge1.podNs, edge2.podAddress);
    await requestResponse(topo, figures);
    for (const connections of SETTINGS.httpConnections) {
      await httpCalls(topo, connections, figures);
    }
    await loadedPing(topo, figures);
    await bulk(topo, tunnel, figures);
    await idleCpu(topo, tunnel, figures);
    const dead = tunnel.deadDaemon();
    if (dead) throw new StepError(dead);
  } finally {
    await tunnel.down();
  }
  return figures;
}

function median(values: number[]): number {
  const finite = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (finite.length === 0) return Number.NaN;
  const mid = finite.length >> 1;
  return finite.length % 2 ? finite[mid]! : (finite[mid - 1]! + finite[mid]!) / 2;
}

function fmt(value: number | undefined, digits: number): string {
  if (value === undefined || !Number.isFinite(value)) return "–";
  return value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

interface Row {
  label: string;
  keys: string[];
  digits: number;
  /** Smaller is better (the ratio column then reads "× as long"). */
  lowerIsBetter: boolean;
}

const ROWS: Row[] = [
  {
    label: "idle ping 1 tunnel (500 at 10 ms), avg / p50 / p99 ms",
    keys: ["idle1.avg", "idle1.p50", "idle1.p99"],
    digits: 2,
    lowerIsBetter: true,
  },
  {
    label: "idle ping via hub, avg / p50 / p99 ms",
    keys: ["idle2.avg", "idle2.p50", "idle2.p99"],
    digits: 2,
    lowerIsBetter: true,
  },
  {
    label: "64-byte TCP request/response, mean / p99 µs",
    keys: ["rr.mean", "rr.p99"],
    digits: 0,
    lowerIsBetter: true,
  },
  {
    label: "64-byte TCP request/response per second",
    keys: ["rr.perSecond"],
    digits: 0,
    lowerIsBetter: false,
  },
  ...SETTINGS.httpConnections.map((connections) => ({
    label: `HTTP calls at ${connections} connection${connections === 1 ? "" : "s"}, req/s · p99 ms`,
    keys: [`http${connections}.perSecond`, `http${connections}.p99`],
    digits: 1,
    lowerIsBetter: false,
  })),
  {
    label: "ping during a TCP stream, p50 / p99 ms (loss %)",
    keys: ["loaded.p50", "loaded.p99", "loaded.loss"],
    digits: 2,
    lowerIsBetter: true,
  },
  {
    label: "TCP×1 fwd / rev Mbit/s",
    keys: ["tcp.fwd", "tcp.rev"],
    digits: 0,
    lowerIsBetter: false,
  },
  {
    label: `UDP offered ${SETTINGS.udpRate}bit/s, received Mbit/s (loss %)`,
    keys: ["udp.received", "udp.loss"],
    digits: 0,
    lowerIsBetter: false,
  },
  {
    label: "Gbit per daemon CPU-second, TCP×1 (hub + edge)",
    keys: ["tcp.gbitPerCpuS"],
    digits: 2,
    lowerIsBetter: false,
  },
  {
    label: "launch → first ping through the tunnel, ms",
    keys: ["launchMs"],
    digits: 0,
    lowerIsBetter: true,
  },
  {
    label: "idle CPU of an edge daemon, quiet peer, ms per s",
    keys: ["idle.cpuMsPerS"],
    digits: 2,
    lowerIsBetter: true,
  },
];

function table(tunnels: TunnelName[], results: Map<TunnelName, Figures>): string {
  const ratioOf = tunnels.includes("edgetun") && tunnels.includes("wireguard-go");
  const head = ["figure", ...tunnels, ...(ratioOf ? ["edgetun ÷ wireguard-go"] : [])];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const row of ROWS) {
    const cells = tunnels.map((name) => {
      const figures = results.get(name) ?? {};
      const shown = row.keys.map((key) => fmt(figures[key], key.endsWith("loss") ? 0 : row.digits));
      return shown.every((cell) => cell === "–") ? "–" : shown.join(" / ");
    });
    if (ratioOf) {
      const ours = results.get("edgetun") ?? {};
      const theirs = results.get("wireguard-go") ?? {};
      cells.push(
        row.keys
          .filter((key) => !key.endsWith("loss"))
          .map((key) => `${fmt((ours[key] ?? NaN) / (theirs[key] ?? NaN), 2)}×`)
          .join(" / "),
      );
    }
    lines.push(`| ${row.label} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

async function main(): Promise<number> {
  const values = benchOptions("bench:latency", "idle and loaded latency, bulk, launch, idle CPU", {
    sets: { type: "string", default: "1", help: "sets of every figure, 1 to 9 (medians)" },
    tunnels: {
      type: "string",
      default: "edgetun,wireguard-go,underlay",
      help: `what to measure, in order (of ${TUNNEL_NAMES.join(", ")})`,
    },
    json: { type: "string", help: "also write the figures to this file as JSON" },
    // Another testbed run shares the two cores and makes every figure slower; ratios
    // against wireguard-go in the same run still hold up better than absolute numbers.
    alongside: { type: "boolean", help: "measure even while a testbed run is active" },
  });
  const sets = numberOption("bench:latency", "sets", values.sets, { min: 1, integer: true });
  if (sets > 9) benchUsageError("bench:latency", "--sets wants 1 to 9");
  const tunnels = values.tunnels.split(",").map((t) => t.trim()) as TunnelName[];
  const unknown = tunnels.find((name) => !(TUNNEL_NAMES as readonly string[]).includes(name));
  if (unknown !== undefined) {
    benchUsageError("bench:latency", `unknown tunnel "${unknown}" (${TUNNEL_NAMES.join(", ")})`);
  }
  const problems = preflightProblems(["ip", "ping", "iperf3", "sysctl", "getconf"]);
  const topo = new Topology();
  for (const name of tunnels) {
    const why =
      tunnelUnavailable(name, topo) ??
      (name === "edgetun" ? (nativeLoadError()?.message ?? null) : null);
    if (why) problems.push(`${name}: ${why}`);
  }
  if (problems.length) {
    for (const problem of problems) process.stderr.write(`bench:latency: ${problem}\n`);
    return 2;
  }
  const leftovers = removeLeftovers();
  if (leftovers.active.length && !values.alongside) {
    process.stderr.write(
      `bench:latency: a testbed run is active (pid ${leftovers.active.join(", ")}); wait for it ` +
        "or pass --alongside to measure beside it\n",
    );
    return 3;
  }
  let keys: Keys | null = null;
  const cleanup = cleanUpOnExit(() => {
    endAllSync();
    topo.destroy();
    keys?.remove();
  });
  const startedAt = new Date();
  say(
    `bench:latency ${startedAt.toISOString()} · ${cpus().length}× ${cpus()[0]?.model.trim() ?? "?"}` +
      ` · load average ${loadavg()
        .map((l) => l.toFixed(2))
        .join(" ")} · ${sets} set(s)`,
  );
  const perSet = new Map<TunnelName, Figures[]>(tunnels.map((t) => [t, []]));
  try {
    topo.create();
    keys = new Keys(topo);
    const http = await startHttpService(topo);
    for (let set = 1; set <= sets; set++) {
      // Tunnels take turns within a set, so that a swing in the machine's load spreads over all.
      for (const name of tunnels) {
        say(`set ${set}: ${name}`);
        perSet.get(name)!.push(await measureTunnel(topo, makeTunnel(name, topo, keys)));
      }
    }
    await http.end(2000);
  } finally {
    cleanup();
  }
  const results = new Map<TunnelName, Figures>();
  for (const [name, figures] of perSet) {
    const keysSeen = new Set(figures.flatMap((f) => Object.keys(f)));
    results.set(
      name,
      Object.fromEntries([...keysSeen].map((k) => [k, median(figures.map((f) => f[k] ?? NaN))])),
    );
  }
  say("");
  say(table(tunnels, results));
  say(
    `\nload average at the end ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  if (values.json) {
    writeFileSync(
      values.json,
      `${JSON.stringify({ startedAt: startedAt.toISOString(), sets: Object.fromEntries(perSet), medians: Object.fromEntries(results) })}\n`,
    );
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(
      `bench:latency: ${error instanceof StepError ? error.message : ((error as Error).stack ?? String(error))}\n`,
    );
    process.exit(1);
  },
);
