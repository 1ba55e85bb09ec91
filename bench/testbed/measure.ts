// The measurements, each bounded in time: ping RTT, iperf3 throughput (TCP 1 and 4 streams,
// UDP at a high offered rate), the time from a tunnel's launch to its first packet across, the
// HTTP scalability steps, and the tunnel daemons' CPU time and peak memory over a scenario.
import { fileURLToPath } from "node:url";
import { Histogram, type HistogramJson } from "./hist.js";
import {
  StepError,
  cpuSeconds,
  nsExec,
  nsSpawn,
  peakRssMiB,
  resetPeakRss,
  type Proc,
} from "./proc.js";
import { HTTP_PORT, type Node, type Topology } from "./topology.js";
import type { Daemon } from "./tunnels.js";

// --- ping ----------------------------------------------------------------------------------

export interface PingResult {
  sent: number;
  received: number;
  lossPercent: number;
  minMs: number;
  avgMs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

/** `count` echo requests every `intervalS` from a namespace; RTTs of the replies. */
export async function ping(
  ns: string,
  target: string,
  count: number,
  intervalS: number,
  maxRttS: number,
): Promise<PingResult> {
  const timeoutMs = (count * intervalS + maxRttS + 10) * 1000;
  const args = [
    "-n",
    "-c",
    `${count}`,
    "-i",
    `${intervalS}`,
    "-W",
    `${Math.ceil(maxRttS)}`,
    target,
  ];
  const result = await nsExec(ns, `ping ${target}`, "ping", args, timeoutMs);
  const times = [...result.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  const summary = /(\d+) packets transmitted, (\d+) received/.exec(result.stdout);
  if (!summary) throw new StepError(`ping ${target} from ${ns}: ${result.stderr || result.stdout}`);
  const sent = Number(summary[1]);
  const received = Number(summary[2]);
  times.sort((a, b) => a - b);
  return {
    sent,
    received,
    lossPercent: sent > 0 ? (100 * (sent - received)) / sent : Number.NaN,
    minMs: times[0] ?? Number.NaN,
    avgMs: times.length ? times.reduce((a, b) => a + b, 0) / times.length : Number.NaN,
    p50Ms: quantile(times, 0.5),
    p99Ms: quantile(times, 0.99),
    maxMs: times[times.length - 1] ?? Number.NaN,
  };
}

/** Waits until `target` answers one echo request from `ns` (retrying), or throws. */
export async function reach(ns: string, target: string, timeoutS: number): Promise<void> {
  const deadline = Math.ceil(timeoutS);
  const args = ["-n", "-c", "1", "-i", "0.05", "-w", `${deadline}`, target];
  const result = await nsExec(ns, `ping ${target}`, "ping", args, (deadline + 5) * 1000);
  // Replies queued behind a handshake can arrive together: "2 received" is a success too.
  if (!/ [1-9]\d* received/.test(result.stdout)) {
    throw new StepError(`${target} does not answer from ${ns} within ${timeoutS} s`);
  }
}

/**
 * Time from a tunnel's launch to the first packet across it: pings (every 10 ms, from the pod
 * behind the edge to the hub's pod) are already going when `launch` starts the edge's tunnel;
 * the first reply's timestamp (ping -D) minus the launch time is the figure. (No `-c`: iputils
 * counts the "net unreachable" answers of the time before the tunnel's route towards it.)
 */
export async function firstPacket(
  ns: string,
  target: string,
  launch: () => Promise<void>,
  timeoutS: number,
): Promise<number> {
  // A count, not a deadline (-w): with a deadline ping quits at the first ICMP error, and a
  // tunnel may answer "net unreachable" while it still connects (tinc does, before it has
  // learnt the hub's subnets). The wait below bounds it instead.
  const intervalS = 0.01;
  const args = [
    "-n",
    "-D",
    "-i",
    `${intervalS}`,
    "-c",
    `${Math.ceil(timeoutS / intervalS)}`,
    target,
  ];
  const probe = nsSpawn(ns, `first-packet ping ${target}`, "ping", args);
  try {
    const reply = probe.waitForLine(/time=/, (timeoutS + 5) * 1000);
    reply.catch(() => undefined);
    // Give ping a moment to start sending before the tunnel is launched.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const launchedAt = Date.now();
    await launch();
    const line = await reply.catch(() => {
      const said = `${probe.stdout.toString()} ${probe.stderr.toString()}`.trim().split("\n");
      throw new StepError(
        `no packet crossed from ${ns} to ${target} within ${timeoutS} s (ping: ${said.slice(-3).join(" / ")})`,
      );
    });
    const stamp = /^\[(\d+\.\d+)\]/.exec(line);
    if (!stamp) throw new StepError(`ping printed no timestamp: ${line}`);
    return Number(stamp[1]) * 1000 - launchedAt;
  } finally {
    await probe.end(2000);
  }
}

// --- iperf3 --------------------------------------------------------------------------------

export interface IperfOptions {
  protocol: "tcp" | "udp";
  streams: number;
  seconds: number;
  /** UDP offered rate, iperf3 -b syntax. */
  udpRate?: string;
  /** Time allowed from the client's start until data flows (longer on slow paths). */
  setupS: number;
}

export interface IperfResult {
  receivedMbps: number;
  sentMbps: number;
  receivedBytes: number;
  seconds: number;
  retransmits?: number;
  lostPercent?: number;
}

let nextPort = 5201;

interface IperfSum {
  bits_per_second?: number;
  bytes?: number;
  seconds?: number;
  lost_percent?: number;
  retransmits?: number;
}

/**
 * An iperf3 run from one pod to a one-off server in another; JSON parsed. A run that fails is
 * tried again, up to five attempts in all: under heavy loss iperf3 stalls when the one
 * datagram that opens a UDP test, or its answer, is lost. The result says how many it took.
 */
export async function iperf(
  client: Node,
  server: Node,
  options: IperfOptions,
): Promise<IperfResult & { attempts: number }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return { ...(await iperfOnce(client, server, options)), attempts: attempt };
    } catch (error) {
      if (!(error instanceof StepError) || attempt >= IPERF_ATTEMPTS) throw error;
    }
  }
}

const IPERF_ATTEMPTS = 5;

async function iperfOnce(client: Node, server: Node, options: IperfOptions): Promise<IperfResult> {
  const port = nextPort;
  nextPort = nextPort >= 5299 ? 5201 : nextPort + 1;
  const serverProc: Proc = nsSpawn(server.podNs, "iperf3 server", "iperf3", [
    "-s",
    "-1",
    "-p",
    `${port}`,
    "--forceflush",
  ]);
  let clientProc: Proc | null = null;
  try {
    await serverProc.waitForLine(/Server listening/, 5000);
    const args = ["-c", server.podAddress, "-p", `${port}`, "-t", `${options.seconds}`, "--json"];
    args.push("--connect-timeout", `${Math.round(options.setupS * 1000)}`);
    args.push("-P", `${options.streams}`);
    if (options.protocol === "udp") args.push("-u", "-b", options.udpRate ?? "2G", "-l", "1392");
    // The server prints a line per second once the test runs. iperf3 3.12 waits 30 s for the
    // answer to the datagram that opens a UDP test: when that is lost, give up early. The
    // server then counts empty seconds, so a UDP test must show data; for TCP any interval will
    // do (a TCP stall under loss is a result, not a reason to start again).
    const interval =
      options.protocol === "udp"
        ? /\d+\.\d+-\d+\.\d+\s+sec\s+(?!0(?:\.0+)?\s)\d/
        : /\d+\.\d+-\d+\.\d+\s+sec/;
    const flowing = serverProc.waitForLine(interval, (options.setupS + 1.5) * 1000);
    flowing.catch(() => undefined);
    const started = nsSpawn(client.podNs, "iperf3 client", "iperf3", args);
    clientProc = started;
    const exitedEarly = started.exited.then(() => "exited" as const);
    const first = await Promise.race([
      flowing.then(
        () => "flowing" as const,
        () => "stalled" as const,
      ),
      exitedEarly,
    ]);
    if (first === "stalled") {
      throw new StepError(`iperf3: no data within ${options.setupS + 1.5} s (setup lost)`);
    }
    const timeoutMs = (options.seconds + options.setupS + 30) * 1000;
    const { timedOut } = await started.finish(timeoutMs);
    if (timedOut) throw new StepError(`iperf3 did not finish within ${timeoutMs} ms`);
    const stdout = started.stdout.toString();
    let json: { error?: string; end?: Record<string, IperfSum> };
    try {
      json = JSON.parse(stdout) as typeof json;
    } catch {
      throw new StepError(`iperf3: no JSON (${started.stderr.toString() || stdout.slice(0, 200)})`);
    }
    if (json.error) throw new StepError(`iperf3: ${json.error}`);
    const received = json.end?.["sum_received"];
    const sent = json.end?.["sum_sent"];
    if (!received || !sent) throw new StepError("iperf3: no end summary");
    return {
      receivedMbps: (received.bits_per_second ?? 0) / 1e6,
      sentMbps: (sent.bits_per_second ?? 0) / 1e6,
      receivedBytes: received.bytes ?? 0,
      seconds: received.seconds ?? options.seconds,
      ...(options.protocol === "tcp" ? { retransmits: sent.retransmits ?? 0 } : {}),
      ...(options.protocol === "udp" ? { lostPercent: received.lost_percent ?? 0 } : {}),
    };
  } finally {
    await Promise.all([clientProc?.end(2000), serverProc.end(2000)]);
  }
}

// --- HTTP scalability ----------------------------------------------------------------------

const loadgenScript = fileURLToPath(new URL("./loadgen.js", import.meta.url));
const serverScript = fileURLToPath(new URL("./httpserver.js", import.meta.url));

export async function startHttpService(topo: Topology): Promise<Proc> {
  const proc = nsSpawn(topo.hub.podNs, "HTTP service", process.execPath, [
    serverScript,
    `${HTTP_PORT}`,
  ]);
  await proc.waitForLine(/^listening$/, 10_000);
  return proc;
}

export interface HttpStepResult {
  concurrency: number;
  ok: number;
  failed: number;
  failureRate: number;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  maxMs: number;
  failures: Record<string, number>;
  lateStartMs: number;
}

interface LoadgenReport {
  ok: number;
  failures: Record<string, number>;
  elapsedMs: number;
  lateStartMs: number;
  histogram: HistogramJson;
  sumMs: number;
  maxMs: number;
}

/** `concurrency` connections spread evenly over the seven edge pods, all calling the hub's pod. */
export async function httpStep(
  topo: Topology,
  concurrency: number,
  durationMs: number,
  timeoutMs: number,
): Promise<HttpStepResult> {
  const edges = topo.edges;
  const startAt = Date.now() + 800;
  const runs = edges
    .map((edge, i) => ({
      edge,
      connections:
        Math.floor(concurrency / edges.length) + (i < concurrency % edges.length ? 1 : 0),
    }))
    .filter((share) => share.connections > 0)
    .map(({ edge, connections }) => {
      const options = {
        host: topo.hub.podAddress,
        port: HTTP_PORT,
        connections,
        startAt,
        durationMs,
        timeoutMs,
      };
      return nsExec(
        edge.podNs,
        `load generator on ${edge.label}`,
        process.execPath,
        [loadgenScript, JSON.stringify(options)],
        startAt - Date.now() + durationMs + timeoutMs + 30_000,
      );
    });
  const histogram = new Histogram();
  let ok = 0;
  let requestsPerSecond = 0;
  let lateStartMs = 0;
  const failures: Record<string, number> = {};
  for (const run of await Promise.all(runs)) {
    const line = run.stdout.trim().split("\n").pop() ?? "";
    let report: LoadgenReport;
    try {
      report = JSON.parse(line) as LoadgenReport;
    } catch {
      throw new StepError(`load generator: no report (${run.timedOut ? "timed out" : run.stderr})`);
    }
    ok += report.ok;
    requestsPerSecond += report.ok / (report.elapsedMs / 1000);
    lateStartMs = Math.max(lateStartMs, report.lateStartMs);
    histogram.merge(report.histogram, report.sumMs, report.maxMs);
    for (const [cause, n] of Object.entries(report.failures))
      failures[cause] = (failures[cause] ?? 0) + n;
  }
  const failed = Object.values(failures).reduce((a, b) => a + b, 0);
  return {
    concurrency,
    ok,
    failed,
    failureRate: ok + failed > 0 ? failed / (ok + failed) : Number.NaN,
    requestsPerSecond,
    p50Ms: histogram.quantileMs(0.5),
    p99Ms: histogram.quantileMs(0.99),
    meanMs: histogram.meanMs,
    maxMs: histogram.maxMs,
    failures,
    lateStartMs,
  };
}

// --- cost ----------------------------------------------------------------------------------

export interface Cost {
  /** User + system CPU seconds of all tunnel daemons over the scenario. */
  cpuSeconds: number;
  /** The largest peak RSS of any one daemon during the scenario, MiB. */
  peakRssMiB: number;
  perDaemon: Array<{ node: string; pid: number; cpuSeconds: number; peakRssMiB: number }>;
}

/** CPU time and peak RSS of the tunnel daemons between `start` and `stop`. */
export class CostMeter {
  private readonly before = new Map<number, number>();

  constructor(private readonly daemons: Daemon[]) {}

  start(): this {
    for (const { pid } of this.daemons) {
      resetPeakRss(pid);
      this.before.set(pid, cpuSeconds(pid));
    }
    return this;
  }

  stop(): Cost | null {
    if (this.daemons.length === 0) return null;
    const perDaemon = this.daemons.map(({ node, pid }) => ({
      node,
      pid,
      cpuSeconds: round(cpuSeconds(pid) - (this.before.get(pid) ?? Number.NaN), 2),
      peakRssMiB: round(peakRssMiB(pid), 1),
    }));
    return {
      cpuSeconds: round(
        perDaemon.reduce((sum, d) => sum + d.cpuSeconds, 0),
        2,
      ),
      peakRssMiB: Math.max(...perDaemon.map((d) => d.peakRssMiB)),
      perDaemon,
    };
  }
}

export function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}
