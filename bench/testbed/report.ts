// Results: every figure as a JSON line (written as soon as it is measured, so an interrupted
// run keeps what it had), then Markdown tables and SVG figures from the same records.
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { Level } from "./impair.js";
import type { Cost } from "./measure.js";
import { figure, type ChartOptions } from "./svg.js";

export type Scenario =
  | "bring-up"
  | "ping"
  | "tcp1"
  | "tcp4"
  | "udp"
  | "http"
  | "tunnel-transfer"
  | "relay"
  | "transport"
  | "skipped"
  | "error";

export type PathName = "edge-hub" | "pod-pod";

export interface Result {
  tunnel: string;
  /** "none", "loss 5%", "delay 50 ms", "rate 100 Mbit/s". */
  level: string;
  kind: Level["kind"];
  /** The level's number (percent, ms, Mbit/s); 0 for none. */
  value: number;
  scenario: Scenario;
  path?: PathName;
  concurrency?: number;
  values: Record<string, number>;
  detail?: unknown;
  cost?: Cost | null;
  message?: string;
}

export interface Meta {
  runId: string;
  startedAt: string;
  quick: boolean;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; kernel: string; node: string };
  tunnels: string[];
  levels: Level[];
  settings: Record<string, unknown>;
}

export function levelValue(level: Level): number {
  switch (level.kind) {
    case "none":
      return 0;
    case "loss":
      return level.percent;
    case "delay":
      return level.ms;
    case "rate":
      return level.mbit;
  }
}

export class Recorder {
  readonly results: Result[] = [];

  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, "");
  }

  line(record: Record<string, unknown>): void {
    appendFileSync(this.path, `${JSON.stringify(record)}\n`);
  }

  add(result: Result): void {
    this.results.push(result);
    this.line({ type: "result", ...result });
  }
}

// --- looking things up ---------------------------------------------------------------------

function find(
  results: Result[],
  tunnel: string,
  level: string,
  scenario: Scenario,
  path?: PathName,
  concurrency?: number,
): Result | undefined {
  return results.find(
    (r) =>
      r.tunnel === tunnel &&
      r.level === level &&
      r.scenario === scenario &&
      (path === undefined || r.path === path) &&
      (concurrency === undefined || r.concurrency === concurrency),
  );
}

function value(result: Result | undefined, key: string): number {
  return result?.values[key] ?? Number.NaN;
}

function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return "–";
  if (digits === 0 && Math.abs(n) < 10 && n !== 0) return n.toFixed(1);
  return n.toLocaleString("en-US", {
    maximumFractionDigits: digits,
    minimumFractionDigits: digits,
  });
}

/** A Markdown table laid out the way prettier lays it out (so `prettier --check` passes). */
export function markdownTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) =>
    Math.max(3, [...h].length, ...rows.map((row) => [...(row[i] ?? "")].length)),
  );
  const line = (cells: string[]) =>
    `| ${cells.map((c, i) => c + " ".repeat(widths[i]! - [...c].length)).join(" | ")} |`;
  return [
    line(headers),
    `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`,
    ...rows.map((row) => line(headers.map((_, i) => row[i] ?? ""))),
  ].join("\n");
}

function pairs(results: Result[]): Array<{ tunnel: string; level: string }> {
  const seen = new Set<string>();
  const out: Array<{ tunnel: string; level: string }> = [];
  for (const r of results) {
    const key = `${r.tunnel}\u0000${r.level}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push({ tunnel: r.tunnel, level: r.level });
    }
  }
  return out;
}

const THROUGHPUT: Array<[Scenario, PathName]> = [
  ["tcp1", "edge-hub"],
  ["tcp4", "edge-hub"],
  ["udp", "edge-hub"],
  ["tcp1", "pod-pod"],
  ["tcp4", "pod-pod"],
  ["udp", "pod-pod"],
];

/** The throughput and latency table: one row per tunnel and impairment level. */
export function throughputTable(results: Result[]): string {
  const headers = [
    "tunnel",
    "impairment",
    "1st packet ms",
    "RTT p→p avg/p99 ms",
    "TCP×1 e→h",
    "TCP×4 e→h",
    "UDP e→h (loss)",
    "TCP×1 p→p",
    "TCP×4 p→p",
    "UDP p→p (loss)",
    "CPU s",
    "RSS MiB",
    "Gbit/CPU-s",
  ];
  const rows: string[][] = [];
  for (const { tunnel, level } of pairs(results)) {
    const skipped = find(results, tunnel, level, "skipped");
    if (skipped) {
      rows.push([tunnel, level, "skipped", ...headers.slice(3).map(() => "")]);
      continue;
    }
    const bringUp = find(results, tunnel, level, "bring-up");
    const rtt = find(results, tunnel, level, "ping", "pod-pod");
    const cells = [tunnel, level, fmt(value(bringUp, "firstPacketMs"))];
    cells.push(`${fmt(value(rtt, "avgMs"), 2)} / ${fmt(value(rtt, "p99Ms"), 2)}`);
    let cpu = 0;
    let gbit = 0;
    let rss = Number.NaN;
    for (const [scenario, path] of THROUGHPUT) {
      const r = find(results, tunnel, level, scenario, path);
      const mbps = value(r, "receivedMbps");
      cells.push(
        scenario === "udp" ? `${fmt(mbps)} (${fmt(value(r, "lostPercent"), 1)} %)` : fmt(mbps),
      );
      if (r?.cost) {
        cpu += r.cost.cpuSeconds;
        gbit += (value(r, "receivedBytes") * 8) / 1e9;
        rss = Number.isFinite(rss) ? Math.max(rss, r.cost.peakRssMiB) : r.cost.peakRssMiB;
      }
    }
    const tunnelled = THROUGHPUT.some(([s, p]) => find(results, tunnel, level, s, p)?.cost);
    cells.push(
      tunnelled ? fmt(cpu, 1) : "–",
      fmt(rss, 0),
      tunnelled && cpu > 0 ? fmt(gbit / cpu, 2) : "–",
    );
    rows.push(cells);
  }
  return markdownTable(headers, rows);
}

function concurrencies(results: Result[]): number[] {
  return [
    ...new Set(results.filter((r) => r.scenario === "http").map((r) => r.concurrency ?? 0)),
  ].sort((a, b) => a - b);
}

/** The scalability table: per tunnel and level, requests/s · p50/p99 ms · failures per step. */
export function httpTable(results: Result[]): string {
  const steps = concurrencies(results);
  const headers = [
    "tunnel",
    "impairment",
    ...steps.map((c) => `${c} conn.: req/s · p50/p99 ms · fail`),
  ];
  const rows: string[][] = [];
  for (const { tunnel, level } of pairs(results)) {
    if (find(results, tunnel, level, "skipped")) continue;
    const cells = [tunnel, level];
    for (const c of steps) {
      const r = find(results, tunnel, level, "http", undefined, c);
      cells.push(
        r
          ? `${fmt(value(r, "requestsPerSecond"))} · ${fmt(value(r, "p50Ms"), 1)}/${fmt(value(r, "p99Ms"), 1)} · ${fmt(100 * value(r, "failureRate"), 2)} %`
          : "–",
      );
    }
    rows.push(cells);
  }
  return markdownTable(headers, rows);
}

/** Which VPN of the seed study each tunnel of the testbed stands for. */
const STUDY_VPN: Record<string, string> = {
  edgetun: "WireGuard (edgetun)",
  "wireguard-go": "WireGuard (wireguard-go)",
  boringtun: "WireGuard (boringtun)",
  kernel: "WireGuard (kernel)",
  openvpn: "OpenVPN",
  tinc: "tinc",
  softether: "SoftEther",
  nebula: "Nebula (beside the study)",
  underlay: "none (plain underlay)",
};

/** VPNs of the seed study the testbed cannot run, and why. */
export const NOT_MEASURED: Record<string, string> = {
  ZeroTier: "not packaged in Debian (no zerotier-one): not measured",
};

/** The level of a kind with the largest value that has figures, e.g. the worst loss measured. */
function worstLevel(results: Result[], tunnel: string, kind: Level["kind"]): Result | undefined {
  return results
    .filter(
      (r) =>
        r.tunnel === tunnel && r.kind === kind && r.scenario === "tcp1" && r.path === "edge-hub",
    )
    .sort((a, b) => b.value - a.value)[0];
}

/**
 * One row per VPN of the seed study: the figures an operator weighs, without impairment, at the
 * worst loss and the longest delay the run measured. HTTP at the busiest step up to 100
 * connections; cost over the no-impairment iperf3 runs.
 */
export function studyTable(results: Result[]): string {
  const steps = concurrencies(results).filter((c) => c <= 100);
  const step = steps[steps.length - 1];
  const tunnels = [...new Set(results.map((r) => r.tunnel))];
  const lossLevel = results.find((r) => r.kind === "loss" && r.scenario !== "skipped")?.level;
  const headers = [
    "VPN of the study",
    "TCP×1 e→h",
    "TCP×1 p→p",
    `HTTP ${step ?? "–"} conn. req/s · p99 ms`,
    "TCP×1 e→h, worst loss",
    `HTTP ${step ?? "–"} conn., worst loss`,
    "TCP×1 e→h, longest delay",
    "RSS MiB",
    "Gbit/CPU-s",
  ];
  const rows: string[][] = [];
  for (const tunnel of tunnels) {
    const none = "none";
    const http = (level: string | undefined) => {
      const r = level ? find(results, tunnel, level, "http", undefined, step) : undefined;
      return r ? `${fmt(value(r, "requestsPerSecond"))} · ${fmt(value(r, "p99Ms"), 1)}` : "–";
    };
    const at = (r: Result | undefined) =>
      r ? `${fmt(value(r, "receivedMbps"))} (${r.level})` : "–";
    const loss = worstLevel(results, tunnel, "loss");
    const delay = worstLevel(results, tunnel, "delay");
    const delaySkip = results.find(
      (r) => r.tunnel === tunnel && r.kind === "delay" && r.scenario === "skipped",
    );
    let cpu = 0;
    let gbit = 0;
    let rss = Number.NaN;
    for (const [scenario, path] of THROUGHPUT) {
      const r = find(results, tunnel, none, scenario, path);
      if (!r?.cost) continue;
      cpu += r.cost.cpuSeconds;
      gbit += (value(r, "receivedBytes") * 8) / 1e9;
      rss = Number.isFinite(rss) ? Math.max(rss, r.cost.peakRssMiB) : r.cost.peakRssMiB;
    }
    rows.push([
      STUDY_VPN[tunnel] ?? tunnel,
      fmt(value(find(results, tunnel, none, "tcp1", "edge-hub"), "receivedMbps")),
      fmt(value(find(results, tunnel, none, "tcp1", "pod-pod"), "receivedMbps")),
      http(none),
      at(loss),
      http(loss?.level ?? lossLevel),
      delay ? at(delay) : delaySkip ? "skipped" : "–",
      fmt(rss, 0),
      cpu > 0 ? fmt(gbit / cpu, 2) : "–",
    ]);
  }
  for (const [vpn, why] of Object.entries(NOT_MEASURED)) {
    rows.push([vpn, why, ...headers.slice(2).map(() => "")]);
  }
  return markdownTable(headers, rows);
}

export function errorsList(results: Result[]): string[] {
  // One line each, single-spaced: a message may carry a tool's output (as prettier would).
  return results
    .filter((r) => r.scenario === "error")
    .map((r) => `${r.tunnel}, ${r.level}: ${r.message ?? "error"}`.replace(/\s+/g, " "));
}

/** A record's detail as "key value, key value" for a list item. */
export function describeDetail(detail: unknown): string {
  if (detail === null || typeof detail !== "object") return String(detail);
  return Object.entries(detail as Record<string, unknown>)
    .map(([key, value]) => `${key} ${String(value)}`)
    .join(", ");
}

/**
 * What the machine's 1-minute load average was at the cases' starts, or "" when none was
 * recorded (runs before it was): on a shared machine, the context every figure needs.
 */
export function loadSummary(loads: number[], cpus: number): string {
  if (loads.length === 0) return "";
  const sorted = [...loads].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  return (
    `Load average (1 min) at the start of each case: ${fmt(sorted[0]!, 1)}–${fmt(sorted[sorted.length - 1]!, 1)}, ` +
    `median ${fmt(median, 1)}, on ${cpus} cores.`
  );
}

export function markdownReport(
  meta: Meta,
  results: Result[],
  durationS: number,
  loads: number[] = [],
): string {
  const m = meta.machine;
  const load = loadSummary(loads, m.cpus);
  const errors = errorsList(results);
  const skipped = results
    .filter((r) => r.scenario === "skipped")
    .map((r) => `${r.tunnel}, ${r.level}: ${r.message ?? ""}`);
  const transports = results
    .filter((r) => r.scenario === "transport")
    .map((r) => `${r.tunnel}, ${r.level}: ${describeDetail(r.detail)}`);
  return [
    `# Edge testbed, ${meta.startedAt.slice(0, 10)}${meta.quick ? " (quick)" : ""}`,
    "",
    `Run ${meta.runId} started ${meta.startedAt}, took ${fmt(durationS)} s. Machine: ${m.cpus} cores (${m.cpuModel}), ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}.`,
    ...(load ? ["", load] : []),
    "",
    "## The seed study's VPNs",
    "",
    "Mbit/s received, requests/s and p99 response time; without impairment unless the column",
    "says otherwise (worst loss / longest delay: the largest level of that kind measured). Delay",
    "skipped: the tunnel needs TCP to the hub, which the UDP delay relay does not carry.",
    "",
    studyTable(results),
    "",
    "## Throughput, latency and cost",
    "",
    "Mbit/s received. e→h: edge 1's pod to the hub's pod; p→p: edge 1's pod to edge 2's pod",
    "through the hub. CPU s: user + system time of all eight tunnel daemons over the six iperf3",
    "runs; RSS: the largest daemon's peak resident set during them; Gbit/CPU-s: gigabits received",
    "per daemon CPU second over the same runs.",
    "",
    throughputTable(results),
    "",
    "## Service calls from all seven edges",
    "",
    "Connections spread evenly over the edge pods, each calling the hub pod's HTTP service in a",
    "closed loop; fail: calls that failed (error, timeout or status other than 200).",
    "",
    httpTable(results),
    "",
    ...(skipped.length ? ["Skipped:", "", ...skipped.map((e) => `- ${e}`), ""] : []),
    ...(transports.length
      ? [
          "Transport the tunnel chose at run time (edge 1, read at the end of each case):",
          "",
          ...transports.map((e) => `- ${e}`),
          "",
        ]
      : []),
    ...(errors.length ? ["## Errors", "", ...errors.map((e) => `- ${e}`), ""] : []),
  ].join("\n");
}

// --- figures -------------------------------------------------------------------------------

const COLORS: Record<string, string> = {
  edgetun: "#1f77b4",
  "wireguard-go": "#ff7f0e",
  underlay: "#7f7f7f",
  boringtun: "#2ca02c",
  kernel: "#d62728",
  openvpn: "#9467bd",
  tinc: "#8c564b",
  softether: "#e377c2",
  nebula: "#17becf",
};

interface Metric {
  title: string;
  unit: string;
  pick: (results: Result[], tunnel: string, level: string) => number;
  yLog?: boolean;
}

function throughputMetric(title: string, scenario: Scenario, path: PathName): Metric {
  return {
    title,
    unit: "Mbit/s (log scale)",
    // The underlay runs at ten times the tunnels' rate: a log axis keeps the tunnels readable.
    yLog: true,
    pick: (results, tunnel, level) =>
      value(find(results, tunnel, level, scenario, path), "receivedMbps"),
  };
}

function httpMetric(
  title: string,
  key: string,
  unit: string,
  concurrency: number,
  scaleBy = 1,
  yLog = false,
): Metric {
  return {
    title,
    unit,
    yLog,
    pick: (results, tunnel, level) =>
      value(find(results, tunnel, level, "http", undefined, concurrency), key) * scaleBy,
  };
}

/** Charts against one impairment kind: x = its value, the level without impairment at 0. */
function impairmentFigure(meta: Meta, results: Result[], kind: "loss" | "delay"): string | null {
  // Levels something was measured at: a level every tunnel skipped has nothing to plot.
  const measured = results.filter(
    (r) => r.kind === kind && r.scenario !== "skipped" && r.scenario !== "error",
  );
  const levels = [...new Set(measured.map((r) => r.value))];
  if (levels.length === 0) return null;
  const xs = [0, ...levels.sort((a, b) => a - b)];
  const levelOf = (x: number) =>
    x === 0 ? "none" : (results.find((r) => r.kind === kind && r.value === x)?.level ?? "");
  const steps = concurrencies(results);
  const ref = steps.includes(100) ? 100 : (steps[Math.floor(steps.length / 2)] ?? 0);
  const top = steps[steps.length - 1] ?? 0;
  const metrics: Metric[] = [
    throughputMetric("TCP, 1 stream, pod → pod", "tcp1", "pod-pod"),
    throughputMetric("TCP, 4 streams, pod → pod", "tcp4", "pod-pod"),
    throughputMetric("UDP received, pod → pod", "udp", "pod-pod"),
    throughputMetric("TCP, 1 stream, edge → hub", "tcp1", "edge-hub"),
    httpMetric(
      `Service calls: p99 response time, ${ref} conn.`,
      "p99Ms",
      "ms (log scale)",
      ref,
      1,
      true,
    ),
    httpMetric(`Service calls: failures, ${top} conn.`, "failureRate", "%", top, 100),
  ];
  const xLabel =
    kind === "loss"
      ? "packet loss on the hub link (%, each way)"
      : "added delay (ms, each way, edge ↔ hub)";
  const charts: ChartOptions[] = metrics.map((metric) => ({
    title: metric.title,
    xLabel,
    yLabel: metric.unit,
    yLog: metric.yLog ?? false,
    xTicks: xs,
    series: meta.tunnels.map((tunnel) => ({
      name: tunnel,
      color: COLORS[tunnel] ?? "#000",
      points: xs.map((x) => [x, metric.pick(results, tunnel, levelOf(x))] as [number, number]),
    })),
  }));
  return figure(
    `Edge testbed: against ${kind === "loss" ? "packet loss" : "added delay"} (${meta.startedAt.slice(0, 10)})`,
    charts,
    3,
  );
}

function concurrencyFigure(meta: Meta, results: Result[]): string | null {
  const steps = concurrencies(results);
  if (steps.length === 0) return null;
  const metrics = [
    { title: "p50 response time", key: "p50Ms", unit: "ms (log scale)", scaleBy: 1, yLog: true },
    { title: "p99 response time", key: "p99Ms", unit: "ms (log scale)", scaleBy: 1, yLog: true },
    { title: "failed calls", key: "failureRate", unit: "%", scaleBy: 100, yLog: false },
    {
      title: "requests per second",
      key: "requestsPerSecond",
      unit: "req/s",
      scaleBy: 1,
      yLog: false,
    },
  ];
  const charts: ChartOptions[] = metrics.map((metric) => ({
    title: `Service calls: ${metric.title}`,
    xLabel: "concurrent connections (all 7 edges)",
    yLabel: metric.unit,
    xLog: true,
    yLog: metric.yLog,
    xTicks: steps,
    series: meta.tunnels.map((tunnel) => ({
      name: tunnel,
      color: COLORS[tunnel] ?? "#000",
      points: steps.map((c) => {
        const r = find(results, tunnel, "none", "http", undefined, c);
        return [c, value(r, metric.key) * metric.scaleBy] as [number, number];
      }),
    })),
  }));
  return figure(
    `Edge testbed: service calls against concurrency, no impairment (${meta.startedAt.slice(0, 10)})`,
    charts,
    2,
  );
}

/** The SVG figures that the results support, by short name. */
export function figures(meta: Meta, results: Result[]): Array<{ name: string; svg: string }> {
  const out: Array<{ name: string; svg: string }> = [];
  const loss = impairmentFigure(meta, results, "loss");
  if (loss) out.push({ name: "loss", svg: loss });
  const delay = impairmentFigure(meta, results, "delay");
  if (delay) out.push({ name: "delay", svg: delay });
  const concurrency = concurrencyFigure(meta, results);
  if (concurrency) out.push({ name: "concurrency", svg: concurrency });
  return out;
}
