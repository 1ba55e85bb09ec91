// The edge testbed (issue 6): the seed study on one machine. A hub and seven edges in network
// namespaces, a pod namespace behind each, all pod traffic through the tunnel; edgetun,
// wireguard-go and the plain underlay driven one after the other under the same impairments
// (loss, added delay, rate caps); throughput, latency, first-packet time, service calls at
// rising concurrency, and the daemons' CPU time and memory. Results as JSON lines, Markdown
// tables and SVG figures under bench/results/.
//
//   npm run build && sudo npm run bench:testbed [-- --quick] [-- --tunnels edgetun,underlay]
//
// Options: --quick (a subset in under 3 minutes), --tunnels LIST (edgetun, wireguard-go,
// underlay, boringtun, kernel, openvpn, tinc, softether, nebula; the last six only if present), --levels LIST (none,
// loss:N, delay:MS, rate:MBIT), --out DIR, --time-limit MINUTES. Exit codes: 0 all measured,
// 1 some step failed, 2 cannot run here (bad option, not root, tool missing), 3 another run is
// active, 124 time limit, 130/143 interrupted. The testbed is always removed, whatever the end.
import { writeFileSync } from "node:fs";
import { cpus, loadavg, release, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { nativeLoadError } from "../../src/host/native/index.js";
import { levelName, parseLevel, type Level } from "./impair.js";
import { startHttpService } from "./measure.js";
import { EdgetunError } from "../../src/core/errors.js";
import { UsageError } from "../../src/cli/exit-status.js";
import { endAllSync } from "../../src/host/toolkit/process.js";
import {
  Recorder,
  errorsList,
  figures,
  httpTable,
  markdownReport,
  throughputTable,
  type Meta,
} from "./report.js";
import { runCase, type Settings } from "./scenarios.js";
import {
  SOFTETHER_GLOBAL_PATHS,
  globalPathsSnapshot,
  softEtherConflict,
  softEtherUnavailable,
} from "./softether.js";
import { preflightProblems } from "./tools.js";
import { Topology, removeLeftovers } from "./topology.js";
import {
  Keys,
  TUNNEL_NAMES,
  makeTunnel,
  tunnelUnavailable,
  type Tunnel,
  type TunnelName,
} from "./tunnels.js";

const FULL_LEVELS = [
  "none",
  "loss:1",
  "loss:5",
  "loss:10",
  "delay:50",
  "delay:250",
  "delay:350",
  "rate:100",
];
const QUICK_LEVELS = ["none", "loss:5"];
const OPTIONAL_TUNNELS: TunnelName[] = [
  "boringtun",
  "kernel",
  "openvpn",
  "tinc",
  "softether",
  "nebula",
];

const FULL: Settings = {
  iperfSeconds: 10,
  udpRate: "2G",
  httpSteps: [1, 10, 100, 500, 1000],
  httpSeconds: 10,
  httpTimeoutMs: 10_000,
  pingCount: 200,
  pingIntervalS: 0.02,
};

const QUICK: Settings = {
  iperfSeconds: 2,
  udpRate: "2G",
  httpSteps: [1, 100, 1000],
  httpSeconds: 1.5,
  httpTimeoutMs: 10_000,
  pingCount: 40,
  pingIntervalS: 0.01,
};

const USAGE = `usage: npm run bench:testbed -- [--quick] [--tunnels LIST] [--levels LIST] [--out DIR] [--time-limit MIN]
  --quick          no-impairment level and loss 5 %, short runs (under 3 minutes)
  --tunnels LIST   comma list of ${TUNNEL_NAMES.join(", ")} (default edgetun,wireguard-go,underlay)
  --levels LIST    comma list of none, loss:PERCENT, delay:MS, rate:MBIT (default: all of
                   ${FULL_LEVELS.join(",")}; with --quick ${QUICK_LEVELS.join(",")})
  --out DIR        where results go (default bench/results)
  --time-limit MIN stop (and clean up) after this many minutes (default 3 per tunnel, at least 6, quick; 240 full)`;

function say(text: string): void {
  process.stdout.write(`${text}\n`);
}

function complain(text: string): void {
  process.stderr.write(`bench:testbed: ${text}\n`);
}

interface Options {
  quick: boolean;
  tunnels: TunnelName[];
  levels: Level[];
  out: string;
  timeLimitMin: number;
}

function parseOptions(argv: string[]): Options {
  // `npm run bench:testbed -- --quick -- --tunnels x` passes the inner "--" through: drop it.
  const { values, positionals } = parseArgs({
    args: argv.filter((arg) => arg !== "--"),
    options: {
      quick: { type: "boolean", default: false },
      tunnels: { type: "string" },
      levels: { type: "string" },
      out: { type: "string" },
      "time-limit": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    say(USAGE);
    process.exit(0);
  }
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const quick = values.quick ?? false;
  const tunnels = (values.tunnels ?? "edgetun,wireguard-go,underlay")
    .split(",")
    .map((t) => t.trim())
    .filter(Boolean);
  for (const tunnel of tunnels) {
    if (!(TUNNEL_NAMES as readonly string[]).includes(tunnel)) {
      throw new UsageError(`unknown tunnel "${tunnel}" (use ${TUNNEL_NAMES.join(", ")})`);
    }
  }
  if (tunnels.length === 0) throw new UsageError("--tunnels names none");
  let levels: Level[];
  try {
    levels = (values.levels ?? (quick ? QUICK_LEVELS : FULL_LEVELS).join(","))
      .split(",")
      .map((l) => parseLevel(l.trim()));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  // A quick case takes about half a minute on a busy two-core machine, a full one three.
  const defaultLimit = quick ? Math.max(6, 3 * tunnels.length) : 240;
  const limit = Number(values["time-limit"] ?? defaultLimit);
  if (!Number.isFinite(limit) || limit <= 0) throw new UsageError("--time-limit wants minutes > 0");
  const out = values.out ?? fileURLToPath(new URL("../../../bench/results/", import.meta.url));
  return {
    quick,
    tunnels: [...new Set(tunnels)] as TunnelName[],
    levels,
    out,
    timeLimitMin: limit,
  };
}

function toolsFor(options: Options): string[] {
  const tools = ["ip", "ping", "iperf3", "sysctl", "getconf"];
  if (options.levels.some((l) => l.kind === "loss")) tools.push("nft");
  if (options.levels.some((l) => l.kind === "rate")) tools.push("tc");
  return tools;
}

function stamp(date: Date): string {
  return date.toISOString().slice(0, 19).replace(/:/g, "").replace("T", "-");
}

async function main(): Promise<number> {
  const startedAt = new Date();
  let options: Options;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    complain((error as Error).message);
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const problems = preflightProblems(toolsFor(options));
  if (Number(process.versions.node.split(".")[0]) < 20) problems.push("needs Node.js 20 or later");
  if (problems.length) {
    for (const problem of problems) complain(problem);
    return 2;
  }

  // SoftEther's fixed paths are one machine-wide set: never next to another SoftEther.
  let softEtherPaths: string | null = null;
  if (options.tunnels.includes("softether") && !softEtherUnavailable()) {
    const conflict = softEtherConflict();
    if (conflict) {
      complain(`cannot run softether: ${conflict}`);
      return 2;
    }
    softEtherPaths = globalPathsSnapshot();
  }

  const leftovers = removeLeftovers();
  for (const gone of leftovers.removed) {
    say(
      `Removed leftovers of an earlier testbed run (pid ${gone.ownerPid}, no longer running): ` +
        `${gone.namespaces.length} namespace(s)` +
        (gone.namespaces.length ? ` [${gone.namespaces.join(", ")}]` : "") +
        (gone.processes.length ? `, ended process(es) ${gone.processes.join(", ")}` : "") +
        ", and its control sockets / pid files.",
    );
  }
  if (leftovers.active.length) {
    complain(
      `another testbed run is active (pid ${leftovers.active.join(", ")}); two runs would share the ` +
        "two cores and spoil each other's figures. Wait for it or stop it (its namespaces are left alone).",
    );
    return 3;
  }

  const topo = new Topology();
  let keys: Keys | null = null;
  /** Tables and figures from what was measured so far, once measuring has begun. */
  let partialReport: (() => void) | null = null;
  let cleaned = false;
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    endAllSync();
    topo.destroy();
    keys?.remove();
  };
  process.on("exit", cleanup);
  for (const [signal, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
    ["SIGHUP", 129],
  ] as const) {
    process.on(signal, () => {
      complain(`${signal}: stopping; removing the testbed's processes and namespaces`);
      cleanup();
      complain("testbed removed");
      try {
        partialReport?.();
      } catch {
        // the JSON lines are written already
      }
      process.exit(code);
    });
  }

  // Which tunnels can run here: the asked-for core ones must; optional ones are skipped.
  const tunnels: TunnelName[] = [];
  for (const name of options.tunnels) {
    const why =
      tunnelUnavailable(name, topo) ??
      (name === "edgetun" ? (nativeLoadError()?.message ?? null) : null);
    if (!why) tunnels.push(name);
    else if (OPTIONAL_TUNNELS.includes(name)) say(`Skipping ${name}: ${why}.`);
    else {
      complain(`cannot run ${name}: ${why}`);
      return 2;
    }
  }
  if (tunnels.length === 0) {
    complain("no tunnel left to measure");
    return 2;
  }

  const settings = options.quick ? QUICK : FULL;
  const base = join(options.out, `testbed-${stamp(startedAt)}${options.quick ? "-quick" : ""}`);
  const recorder = new Recorder(`${base}.jsonl`);
  const meta: Meta = {
    runId: topo.id,
    startedAt: startedAt.toISOString(),
    quick: options.quick,
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model.trim() ?? "?",
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      kernel: release(),
      node: process.versions.node,
    },
    tunnels,
    levels: options.levels,
    settings: { ...settings },
  };
  recorder.line({ type: "run", ...meta });

  let finished = false;
  const loads: number[] = [];
  const writeReport = (): number => {
    const durationS = (Date.now() - startedAt.getTime()) / 1000;
    recorder.line({ type: "end", durationS, complete: finished });
    writeFileSync(`${base}.md`, markdownReport(meta, recorder.results, durationS, loads));
    const written = [`${base}.jsonl`, `${base}.md`];
    for (const { name, svg } of figures(meta, recorder.results)) {
      writeFileSync(`${base}-${name}.svg`, svg);
      written.push(`${base}-${name}.svg`);
    }
    say("");
    say(throughputTable(recorder.results));
    say("");
    say(httpTable(recorder.results));
    say("");
    for (const file of written) say(`wrote ${file}`);
    return durationS;
  };
  partialReport = () => void writeReport();
  const watchdog = setTimeout(() => {
    complain(`time limit of ${options.timeLimitMin} min reached: stopping`);
    cleanup();
    try {
      writeReport();
    } catch {
      // the JSON lines are written already
    }
    process.exit(124);
  }, options.timeLimitMin * 60_000);
  watchdog.unref();

  let errors = 0;
  try {
    say(
      `Edge testbed ${topo.id}: ${tunnels.join(", ")} × ${options.levels.map(levelName).join(", ")}` +
        `${options.quick ? " (quick)" : ""}; results in ${base}.*`,
    );
    topo.create();
    keys = new Keys(topo);
    await startHttpService(topo);
    const drivers = new Map<TunnelName, Tunnel>(
      tunnels.map((name) => [name, makeTunnel(name, topo, keys!)]),
    );
    // Impairment outer, tunnel inner: the tunnels take turns at each level, so that drift in a
    // shared machine's load over a long run does not fall on one tunnel's levels.
    for (const level of options.levels) {
      say(`Level: ${levelName(level)}`);
      for (const name of tunnels) {
        // The machine may be shared: its load at each case's start goes with the figures.
        const load = loadavg()[0]!;
        loads.push(load);
        recorder.line({ type: "load", tunnel: name, level: levelName(level), loadAverage1m: load });
        errors += await runCase(topo, drivers.get(name)!, level, settings, recorder);
      }
    }
    finished = true;
  } catch (error) {
    errors++;
    complain(
      error instanceof EdgetunError ? error.message : ((error as Error).stack ?? String(error)),
    );
  } finally {
    clearTimeout(watchdog);
    cleanup();
  }
  if (softEtherPaths !== null && globalPathsSnapshot() !== softEtherPaths) {
    errors++;
    complain(
      `SoftEther's global paths (${SOFTETHER_GLOBAL_PATHS.join(", ")}) changed during the run`,
    );
  }
  const durationS = writeReport();
  const minutes = Math.floor(durationS / 60);
  say(
    `Elapsed: ${minutes} min ${Math.round(durationS - minutes * 60)} s (${durationS.toFixed(1)} s).`,
  );
  const errorList = errorsList(recorder.results);
  if (errors > 0) {
    complain(`${errors} step(s) failed${errorList.length ? `:\n  ${errorList.join("\n  ")}` : ""}`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    complain((error as Error).stack ?? String(error));
    process.exit(1);
  },
);
