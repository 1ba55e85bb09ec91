// A hub for thousands of edges, control plane: edgetun against Debian's wireguard-go configured
// the way wg-quick would (wg setconf, then ip -batch for addresses and routes), in the same run,
// in a network namespace of its own. Each peer has a /32 tunnel address and a /24 pod CIDR.
// Prints: time until the interface is usable with every route, `wg set` of one peer, a reload
// changing one peer, `wg syncconf` and `edgetun syncconf` of a file changing one peer, `edgetun
// show` and `wg show`, resident memory, and the size of /metrics. Then the fleet comes alive:
// every peer is a simulated edge (bench/scale-edges.ts: core Devices in one process, each with
// its own loopback address and port), all starting at once; the table gives the time until
// every edge has a session, the hub's memory with every session live, and the ping round trip
// from a real edge (wireguard-go in a namespace of its own, over a veth pair) with only itself
// active and then with every simulated edge sending an echo a second. Nothing leaves the two
// namespaces. Run (root): npm run bench:scale [-- --peers 5000] [--start-cap SECONDS]
// [--simulator-cpu N] [--cpu-prof-dir DIR] (`-- --help` says what each does); --start-cap ends
// the simultaneous start after that long (default 30 s) and the row says how many edges had
// sessions at the goal (8 s) and at the cap.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generatePrivateKey, publicKeyOf } from "../src/core/keys.js";
import { NetworkLab } from "../src/host/toolkit/netns.js";
import {
  cleanUpOnExit,
  commandExists,
  nsRun,
  pollUntil,
  sleepSync,
  type RunOptions,
} from "../src/host/toolkit/process.js";
import { benchOptions, numberOption } from "./options.js";
import { SESSIONS_GOAL_MS, edgeTunnelAddress, type EdgeSimulatorInput } from "./scale-edges.js";

const options = benchOptions("bench:scale", "a hub for thousands of edges, beside wireguard-go", {
  peers: { type: "string", default: "5000", help: "peers of the hub, each a simulated edge" },
  "start-cap": {
    type: "string",
    default: "30",
    help: "seconds after which the simultaneous start is ended",
  },
  "simulator-cpu": {
    type: "string",
    help: "run the edge simulator on this CPU only (taskset), so that its own work competes less with the hub in the RTT rows",
  },
  "cpu-prof-dir": {
    type: "string",
    help: "every edgetun process writes a V8 CPU profile here, phases in phases.json",
  },
  "edgetun-only": {
    type: "boolean",
    help: "leave wireguard-go out (for profiling runs: the table then has nothing to compare with)",
  },
});
const PEERS = numberOption("bench:scale", "peers", options.peers, { min: 1, integer: true });
const START_CAP_MS =
  numberOption("bench:scale", "start-cap", options["start-cap"], { min: 1 }) * 1000;
const cli = new URL("../src/cli/main.js", import.meta.url).pathname;
// --cpu-prof-dir DIR: every edgetun process writes a V8 CPU profile there, and each phase's
// start and end (the profiles' clock, microseconds) go to DIR/phases.json to slice them by.
const profileDirectory = options["cpu-prof-dir"] ?? null;
// The simulator is 5,000 JS Devices in one process: sealing an echo a second for each takes
// about half a core, which the hub's ping would otherwise share with it on a 2-core machine.
const simulatorCpu =
  options["simulator-cpu"] === undefined
    ? null
    : numberOption("bench:scale", "simulator-cpu", options["simulator-cpu"], {
        min: 0,
        integer: true,
      });
const nodeFlags = profileDirectory ? ["--cpu-prof", "--cpu-prof-dir", profileDirectory] : [];
const phases: Record<string, [number, number]> = {};
const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);
/** Records that phase `name` ran from `startUs` until now. */
const phaseEnded = (name: string, startUs: number) => (phases[name] = [startUs, monotonicUs()]);
const tag = randomBytes(3).toString("hex");
/** The two namespaces and what runs in them, ended by PID and removed by `cleanup`. */
const lab = new NetworkLab({ prefix: "scale", ownGroup: false });
const ns = lab.name("hub");
/** The real edge's namespace, joined to the hub's by a veth pair. */
const edgeNs = lab.name("edge");
const edgeLink = { hub: "192.168.231.1", edge: "192.168.231.2" };
const realEdge = { name: `re${tag}`, key: generatePrivateKey() };
const simulator = new URL("./scale-edges.js", import.meta.url).pathname;
const directory = mkdtempSync(join(tmpdir(), "edgetun-scale-"));

/** At thousands of peers, `wg show`, `ip -batch` and the like print and take a lot. */
const LARGE_COMMAND: RunOptions = { maxBuffer: 256 << 20, timeoutMs: 300_000 };
const inNs = (command: string, args: string[], input?: string) =>
  nsRun(ns, command, args, { ...LARGE_COMMAND, ...(input !== undefined ? { input } : {}) });
const inEdgeNs = (command: string, args: string[]) => nsRun(edgeNs, command, args, LARGE_COMMAND);

/** Milliseconds `fn` takes. */
function timed(fn: () => void, phaseName?: string): number {
  const start = performance.now();
  const startUs = monotonicUs();
  fn();
  if (phaseName) phaseEnded(phaseName, startUs);
  return performance.now() - start;
}

/** Runs of a show command: one sample of a ~300 ms process is at the mercy of the machine. */
const SHOW_RUNS = 5;

/** The median and range of `runs` timings of `fn`, as the table prints them. */
function timedMedian(fn: () => void, runs: number, phaseName?: string): string {
  const times = Array.from({ length: runs }, () => timed(fn, phaseName)).sort((a, b) => a - b);
  const median = times[Math.floor(runs / 2)]!;
  return `${ms(median)} (median of ${runs}, ${ms(times[0]!)}–${ms(times[runs - 1]!)})`;
}

/** Milliseconds until `condition` holds, checked every 5 ms. */
const waitFor = (what: string, condition: () => boolean, timeoutMs = 300_000) =>
  pollUntil(what, condition, timeoutMs, 5);

function rssMb(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmRSS:"));
  return Number(/(\d+)/.exec(line ?? "")?.[1] ?? 0) / 1024;
}

interface Peer {
  publicKey: string;
  allowedIps: string[];
}

function peerAt(i: number, publicKey: string, pod = `172.${16 + (i >> 8)}.${i & 255}.0/24`): Peer {
  return { publicKey, allowedIps: [`${edgeTunnelAddress(i)}/32`, pod] };
}

function configText(
  privateKey: string,
  port: number,
  peers: Peer[],
  withInterfaceExtras: boolean,
): string {
  const lines = ["[Interface]", `PrivateKey = ${privateKey}`, `ListenPort = ${port}`];
  if (withInterfaceExtras) lines.push("Address = 10.99.0.1/16");
  for (const peer of peers) {
    lines.push(
      "[Peer]",
      `PublicKey = ${peer.publicKey}`,
      `AllowedIPs = ${peer.allowedIps.join(", ")}`,
    );
  }
  return `${lines.join("\n")}\n`;
}

// An interrupted run too removes its namespaces and ends its processes.
const cleanup = cleanUpOnExit(() => {
  lab.destroy();
  rmSync(directory, { recursive: true, force: true });
});

type Row = [string, string, string];
const rows: Row[] = [];
/** The edges' private keys: the simulator needs them, the hubs their public halves. */
let edgeKeys: string[] = [];
const ms = (value: number) =>
  value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(0)} ms`;

/** The real edge: wireguard-go in its own namespace, a veth pair away from the hub. */
function startRealEdge(): void {
  lab.add("edge");
  lab.veth(ns, edgeNs, {
    nameA: `vh${tag}`,
    nameB: `ve${tag}`,
    addressA: `${edgeLink.hub}/24`,
    addressB: `${edgeLink.edge}/24`,
  });
  spawn("ip", ["netns", "exec", edgeNs, "wireguard-go", "-f", realEdge.name], {
    stdio: "ignore",
    env: { ...process.env, LOG_LEVEL: "error" },
  });
  const deadline = Date.now() + 10_000;
  while (!inEdgeNs("wg", ["show", "interfaces"]).includes(realEdge.name)) {
    if (Date.now() > deadline) throw new Error("the real edge's wireguard-go did not start");
    sleepSync(50);
  }
  const keyFile = join(directory, "real-edge.key");
  writeFileSync(keyFile, `${realEdge.key}\n`, { mode: 0o600 });
  inEdgeNs("wg", ["set", realEdge.name, "private-key", keyFile]);
  // Its tunnel address inside each hub's subnet, so neither hub needs a route for it.
  for (const address of ["10.99.200.2/32", "10.98.200.2/32"]) {
    inEdgeNs("ip", ["address", "add", address, "dev", realEdge.name]);
  }
  inEdgeNs("ip", ["link", "set", realEdge.name, "up"]);
}

/** Points the real edge at a hub and the hub at it; returns the real edge's tunnel address. */
function joinRealEdge(hub: string, hubPublicKey: string, port: number, hubAddress: string): void {
  const edgeAddress = hubAddress.replace(/\.0\.1$/, ".200.2");
  for (const previous of inEdgeNs("wg", ["show", realEdge.name, "peers"]).split("\n")) {
    if (previous !== "") inEdgeNs("wg", ["set", realEdge.name, "peer", previous, "remove"]);
  }
  inEdgeNs("wg", [
    "set",
    realEdge.name,
    "peer",
    hubPublicKey,
    "endpoint",
    `${edgeLink.hub}:${port}`,
    "allowed-ips",
    `${hubAddress}/32`,
  ]);
  inEdgeNs("ip", [
    "route",
    "replace",
    `${hubAddress}/32`,
    "dev",
    realEdge.name,
    "src",
    edgeAddress,
  ]);
  inNs("wg", ["set", hub, "peer", publicKeyOf(realEdge.key), "allowed-ips", `${edgeAddress}/32`]);
}

/** Ping round trips from the real edge to `hubAddress`, in ms: the average and two quantiles. */
interface RoundTrips {
  average: number;
  p50: number;
  p90: number;
}

function pingRtt(hubAddress: string): RoundTrips {
  // The first packets may wait for a handshake: not part of the figure.
  inEdgeNs("ping", ["-c", "3", "-i", "0.2", "-w", "15", hubAddress]);
  const text = inEdgeNs("ping", ["-c", "60", "-i", "0.05", hubAddress]);
  const average = /= [\d.]+\/([\d.]+)\//.exec(text)?.[1];
  if (average === undefined) throw new Error(`no round trip in: ${text}`);
  const each = [...text.matchAll(/time=([\d.]+) ms/g)]
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  const quantile = (q: number) => each[Math.min(each.length - 1, Math.floor(q * each.length))]!;
  return { average: Number(average), p50: quantile(0.5), p90: quantile(0.9) };
}

/** A thread's name and its CPU time so far (/proc/PID/task/TID/schedstat), in ns. */
interface ThreadTime {
  name: string;
  /** On a CPU. */
  runNs: number;
  /** Runnable, waiting in a run queue for a CPU. */
  waitNs: number;
  /** Times it was given a CPU (about its wake-ups, for a thread that mostly sleeps). */
  slices: number;
}

/** Every thread of `pid` by thread id; a thread that ended meanwhile is left out. */
function threadTimes(pid: number): Map<number, ThreadTime> {
  const times = new Map<number, ThreadTime>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const [run, wait, slices] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8")
        .trim()
        .split(" ");
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
      times.set(Number(tid), {
        name,
        runNs: Number(run),
        waitNs: Number(wait),
        slices: Number(slices),
      });
    } catch {
      // ended between the listing and the read
    }
  }
  return times;
}

/** A kind of thread's CPU between two samples. */
interface CpuFigure {
  /** Milliseconds per second on a CPU, and waiting for one. */
  run: number;
  wait: number;
  /** The wait in all, and the times it was given a CPU. */
  waitNs: number;
  slices: number;
}

/**
 * Milliseconds per second each kind of thread of `pid` ran (and waited for a CPU) between two
 * samples `elapsedMs` apart: the main thread (for Node, the JS thread), then by thread name.
 */
function cpuSplit(
  pid: number,
  before: Map<number, ThreadTime>,
  after: Map<number, ThreadTime>,
  elapsedMs: number,
): Map<string, CpuFigure> {
  const split = new Map<string, CpuFigure>();
  for (const [tid, now] of after) {
    const then = before.get(tid) ?? { runNs: 0, waitNs: 0, slices: 0 };
    const kind = tid === pid ? "main" : now.name;
    const sum = split.get(kind) ?? { run: 0, wait: 0, waitNs: 0, slices: 0 };
    sum.run += (now.runNs - then.runNs) / 1e6 / (elapsedMs / 1000);
    sum.wait += (now.waitNs - then.waitNs) / 1e6 / (elapsedMs / 1000);
    sum.waitNs += now.waitNs - then.waitNs;
    sum.slices += now.slices - then.slices;
    split.set(kind, sum);
  }
  return split;
}

/** The hub's CPU while the others are active, thread by thread where they have names. */
function describeHubCpu(split: Map<string, CpuFigure>): string {
  const named: Array<[string, string]> = [
    ["main", "JS"],
    ["edgetun-rx", "receive"],
    ["edgetun-tx", "send"],
    ["edgetun-lane", "lane"],
  ];
  const total = { run: 0, wait: 0, waitNs: 0, slices: 0 };
  for (const figure of split.values()) {
    total.run += figure.run;
    total.wait += figure.wait;
    total.waitNs += figure.waitNs;
    total.slices += figure.slices;
  }
  const perWake = (figure: CpuFigure) =>
    `${(figure.slices > 0 ? figure.waitNs / figure.slices / 1000 : 0).toFixed(0)} µs a wake-up`;
  const parts: string[] = [];
  let rest = total.run;
  if (split.has("edgetun-rx")) {
    for (const [kind, label] of named) {
      const figure = split.get(kind);
      if (!figure) continue;
      // What a packet waits for that thread to get a CPU, on average, each time it wakes.
      parts.push(`${label} ${figure.run.toFixed(0)} (waits ${perWake(figure)})`);
      rest -= figure.run;
    }
    parts.push(`other threads ${rest.toFixed(0)}`);
  }
  const of = parts.length > 0 ? ` (${parts.join(", ")})` : "";
  return `${total.run.toFixed(0)} ms/s${of}, waiting for a CPU ${total.wait.toFixed(0)} ms/s (${perWake(total)})`;
}

/** Hub peers with a handshake (the real edge left out). */
function peersWithHandshake(hub: string): number {
  const realEdgeKey = publicKeyOf(realEdge.key);
  return inNs("wg", ["show", hub, "latest-handshakes"])
    .trim()
    .split("\n")
    .map((line) => line.split("\t"))
    .filter(([key, seconds]) => key !== realEdgeKey && Number(seconds) > 0).length;
}

interface LiveFigures {
  sessions: string;
  liveRss: string;
  rtt: string;
  hubCpu: string;
  hubCpuAlone: string;
}

/**
 * The fleet comes alive against a running hub: RTT from the real edge alone, then every
 * simulated edge starting at once, the time until all have sessions, RSS with every session
 * live and sending, and the RTT again meanwhile.
 */
async function liveFleet(
  hub: string,
  hubPid: number,
  hubPublicKey: string,
  port: number,
  hubAddress: string,
): Promise<LiveFigures> {
  let phaseStart = monotonicUs();
  const hubBeforeAlone = threadTimes(hubPid);
  const aloneStart = performance.now();
  const aloneRtt = pingRtt(hubAddress);
  const hubCpuAlone = describeHubCpu(
    cpuSplit(hubPid, hubBeforeAlone, threadTimes(hubPid), performance.now() - aloneStart),
  );
  phaseEnded(`${hub} ping alone`, phaseStart);
  const input: EdgeSimulatorInput = {
    privateKeys: edgeKeys,
    hubPublicKey,
    hubEndpoint: { address: "127.0.0.1", port },
    hubAddress,
    deadlineMs: START_CAP_MS,
  };
  const inputFile = join(directory, `edges-${port}.json`);
  writeFileSync(inputFile, JSON.stringify(input), { mode: 0o600 });
  const pinned = simulatorCpu === null ? [] : ["taskset", "-c", String(simulatorCpu)];
  const child = spawn(
    "ip",
    ["netns", "exec", ns, ...pinned, process.execPath, simulator, inputFile],
    {
      stdio: ["pipe", "pipe", "inherit"],
    },
  );
  const events: Array<Record<string, unknown>> = [];
  let pending = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    pending += chunk;
    const lines = pending.split("\n");
    pending = lines.pop()!;
    for (const line of lines) events.push(JSON.parse(line) as Record<string, unknown>);
  });
  const event = async (name: string) => {
    await waitFor(
      `edges: ${name}`,
      () => events.some((e) => e.event === name) || child.exitCode !== null,
    );
    const found = events.find((e) => e.event === name);
    if (!found) throw new Error(`the edge simulator exited before "${name}"`);
    return found;
  };
  await event("ready");
  phaseStart = monotonicUs();
  child.stdin.write("go\n");
  const sessions = await event("sessions");
  phaseEnded(`${hub} sessions`, phaseStart);
  console.log(`simulated edges against ${hub}: ${JSON.stringify(sessions)}`);
  const onHub = peersWithHandshake(hub);
  child.stdin.write("active\n");
  await new Promise((resolve) => setTimeout(resolve, 2000));
  phaseStart = monotonicUs();
  const hubBefore = threadTimes(hubPid);
  const simulatorBefore = threadTimes(child.pid!);
  const cpuStart = performance.now();
  const activeRtt = pingRtt(hubAddress);
  const cpuMs = performance.now() - cpuStart;
  const hubCpu = describeHubCpu(cpuSplit(hubPid, hubBefore, threadTimes(hubPid), cpuMs));
  const simulatorSplit = cpuSplit(child.pid!, simulatorBefore, threadTimes(child.pid!), cpuMs);
  const simulatorMs = [...simulatorSplit.values()].reduce((sum, { run }) => sum + run, 0);
  phaseEnded(`${hub} ping with the others active`, phaseStart);
  const liveRss = rssMb(hubPid);
  child.stdin.write("stop\n");
  await waitFor("edges exit", () => child.exitCode !== null);
  const ms = Number(sessions.ms);
  const complete = sessions.withSession === sessions.edges;
  const goal = `${String(sessions.atGoal)} at ${SESSIONS_GOAL_MS / 1000} s`;
  return {
    sessions: complete
      ? `${(ms / 1000).toFixed(2)} s (${goal}; hub: ${onHub} with a handshake)`
      : `not reached: ${goal}, ${String(sessions.withSession)} at the cap of ${START_CAP_MS / 1000} s (hub: ${onHub})`,
    liveRss: `${liveRss.toFixed(0)} MB`,
    rtt:
      `${activeRtt.average.toFixed(2)} ms vs ${aloneRtt.average.toFixed(2)} ms alone ` +
      `(×${(activeRtt.average / aloneRtt.average).toFixed(2)}; p50 ${quantiles(activeRtt, aloneRtt, "p50")}, ` +
      `p90 ${quantiles(activeRtt, aloneRtt, "p90")})`,
    hubCpu: `others active: ${hubCpu}; the simulator ${simulatorMs.toFixed(0)} ms/s`,
    hubCpuAlone: `alone: ${hubCpuAlone}`,
  };
}

/** "active / alone ms" of one quantile. */
const quantiles = (active: RoundTrips, alone: RoundTrips, key: "p50" | "p90") =>
  `${active[key].toFixed(2)} / ${alone[key].toFixed(2)} ms`;

async function benchEdgetun(peers: Peer[]): Promise<Record<string, string>> {
  const name = `es${tag}`;
  const key = generatePrivateKey();
  const file = join(directory, `${name}.conf`);
  writeFileSync(file, configText(key, 51820, peers, true), { mode: 0o600 });
  let log = "";
  const start = performance.now();
  const upStart = monotonicUs();
  const child = spawn(
    "ip",
    [
      ...["netns", "exec", ns, process.execPath, ...nodeFlags, cli, "up", file],
      ...["--metrics-listen", "127.0.0.1:9586", "--log-level", "debug"],
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => (log += chunk));
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (log += chunk));
  await waitFor("edgetun up", () => log.includes('"interface up"') || child.exitCode !== null);
  if (child.exitCode !== null) throw new Error(`edgetun failed:\n${log}`);
  const upMs = performance.now() - start;
  phaseEnded(`${name} up`, upStart);
  const routes = inNs("ip", ["-4", "route", "show", "dev", name]).trim().split("\n").length;
  // The data path's warm-up runs in the background after "interface up"; the changes below
  // are timed once it is done, as an operator's would come.
  const warmUpMs = await waitFor("the warm-up", () => log.includes('"data path warmed up"'));
  const idleRss = rssMb(child.pid!);

  const target = peers[PEERS >> 1]!;
  const setMs = timed(
    () =>
      inNs("wg", [
        "set",
        name,
        "peer",
        target.publicKey,
        "allowed-ips",
        `${target.allowedIps[0]},10.250.0.0/24`,
      ]),
    `${name} wg set`,
  );
  // A reload changing one peer: from the signal until the queue logged the change.
  const changed = peers.map((peer, i) =>
    i === 7 ? peerAt(i, peer.publicKey, "10.251.0.0/24") : peer,
  );
  writeFileSync(file, configText(key, 51820, changed, true));
  const reloadsBefore = log.split('"source":"reload"').length;
  const reloadStart = performance.now();
  child.kill("SIGHUP");
  await waitFor("reload", () => log.split('"source":"reload"').length > reloadsBefore);
  const reloadMs = performance.now() - reloadStart;
  phases[`${name} reload`] = [monotonicUs() - Math.round(reloadMs * 1000), monotonicUs()];

  const syncFile = join(directory, `${name}.sync.conf`);
  const synced = changed.map((peer, i) =>
    i === 9 ? peerAt(i, peer.publicKey, "10.252.0.0/24") : peer,
  );
  writeFileSync(syncFile, configText(key, 51820, synced, false), { mode: 0o600 });
  const wgSyncMs = timed(() => inNs("wg", ["syncconf", name, syncFile]), `${name} wg syncconf`);
  const edgeSynced = synced.map((peer, i) =>
    i === 11 ? peerAt(i, peer.publicKey, "10.253.0.0/24") : peer,
  );
  writeFileSync(file, configText(key, 51820, edgeSynced, true));
  const etSyncMs = timed(
    () => inNs(process.execPath, [...nodeFlags, cli, "syncconf", name, file]),
    `${name} edgetun syncconf`,
  );
  const show = timedMedian(
    () => inNs(process.execPath, [...nodeFlags, cli, "show", name]),
    SHOW_RUNS,
    `${name} edgetun show`,
  );
  const wgShow = timedMedian(() => inNs("wg", ["show", name]), SHOW_RUNS);
  const metrics = inNs("curl", ["-s", "http://127.0.0.1:9586/metrics"]);
  const series = metrics.split("\n").filter((l) => l !== "" && !l.startsWith("#")).length;
  const routesAfter = inNs("ip", ["-4", "route", "show", "dev", name]).trim().split("\n").length;
  joinRealEdge(name, publicKeyOf(key), 51820, "10.99.0.1");
  const live = await liveFleet(name, child.pid!, publicKeyOf(key), 51820, "10.99.0.1");
  const stopStart = performance.now();
  child.kill("SIGTERM");
  await waitFor("edgetun exit", () => child.exitCode !== null);
  const stopMs = performance.now() - stopStart;
  const down = log.split("\n").find((line) => line.includes('"interface down"'));
  const { drops, ...counters } = down
    ? (JSON.parse(down) as Record<string, unknown>)
    : { drops: undefined };
  delete counters.level;
  delete counters.msg;
  delete counters.time;
  console.log(
    `${name}: warm-up done ${ms(warmUpMs)} after up; drops at stop ${JSON.stringify(drops)}; ` +
      `counters at stop ${JSON.stringify(counters)}`,
  );
  return {
    up: ms(upMs),
    set: ms(setMs),
    reload: ms(reloadMs),
    wgSync: ms(wgSyncMs),
    etSync: ms(etSyncMs),
    show: `edgetun show ${show}, wg show ${wgShow}`,
    rss: `${idleRss.toFixed(0)} MB`,
    metrics: `${(metrics.length / 1024).toFixed(0)} KB, ${series} series (default --metrics-peers 1000)`,
    routes: `${routes} → ${routesAfter}`,
    stop: ms(stopMs),
    ...live,
  };
}

async function benchWireguardGo(peers: Peer[]): Promise<Record<string, string>> {
  const name = `gs${tag}`;
  const key = generatePrivateKey();
  const file = join(directory, `${name}.conf`);
  writeFileSync(file, configText(key, 51821, peers, false), { mode: 0o600 });
  const batch = [
    `address add 10.98.0.1/16 dev ${name}`,
    `link set ${name} up`,
    ...peers.flatMap((peer) => peer.allowedIps.map((prefix) => `route add ${prefix} dev ${name}`)),
  ].join("\n");
  const start = performance.now();
  const child = spawn("ip", ["netns", "exec", ns, "wireguard-go", "-f", name], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, LOG_LEVEL: "error" },
  });
  await waitFor("wireguard-go socket", () => {
    try {
      return inNs("wg", ["show", "interfaces"]).includes(name);
    } catch {
      return false;
    }
  });
  inNs("wg", ["setconf", name, file]);
  inNs("ip", ["-batch", "-"], `${batch}\n`);
  const upMs = performance.now() - start;
  const routes = inNs("ip", ["-4", "route", "show", "dev", name]).trim().split("\n").length;
  const idleRss = rssMb(child.pid!);
  const target = peers[PEERS >> 1]!;
  const setMs = timed(() =>
    inNs("wg", [
      "set",
      name,
      "peer",
      target.publicKey,
      "allowed-ips",
      `${target.allowedIps[0]},10.250.0.0/24`,
    ]),
  );
  const syncFile = join(directory, `${name}.sync.conf`);
  const synced = peers.map((peer, i) =>
    i === 9 ? peerAt(i, peer.publicKey, "10.252.0.0/24") : peer,
  );
  writeFileSync(syncFile, configText(key, 51821, synced, false), { mode: 0o600 });
  const wgSyncMs = timed(() => inNs("wg", ["syncconf", name, syncFile]));
  const wgShow = timedMedian(() => inNs("wg", ["show", name]), SHOW_RUNS);
  joinRealEdge(name, publicKeyOf(key), 51821, "10.98.0.1");
  const live = await liveFleet(name, child.pid!, publicKeyOf(key), 51821, "10.98.0.1");
  child.kill("SIGTERM");
  await waitFor("wireguard-go exit", () => child.exitCode !== null || child.signalCode !== null);
  return {
    up: `${ms(upMs)} (wg setconf + ip -batch)`,
    set: `${ms(setMs)} (no route change)`,
    reload: "–",
    wgSync: `${ms(wgSyncMs)} (no route change)`,
    etSync: "–",
    show: `wg show ${wgShow}`,
    rss: `${idleRss.toFixed(0)} MB`,
    metrics: "–",
    routes: `${routes} (by ip -batch)`,
    stop: "–",
    ...live,
  };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("needs root (network namespaces)");
  lab.add("hub");
  const keyStart = performance.now();
  edgeKeys = Array.from({ length: PEERS }, () => generatePrivateKey());
  const peers = edgeKeys.map((edgeKey, i) => peerAt(i, publicKeyOf(edgeKey)));
  startRealEdge();
  console.log(`${PEERS} peer keys in ${ms(performance.now() - keyStart)}; ${PEERS * 2} prefixes`);
  const et = await benchEdgetun(peers);
  const wg: Record<string, string> = options["edgetun-only"] ? {} : await benchWireguardGo(peers);
  const labels: Array<[keyof typeof et, string]> = [
    ["up", "`up` until usable (every route in)"],
    ["routes", "IPv4 routes through the interface"],
    ["set", "`wg set` of one peer's allowed IPs"],
    ["reload", "SIGHUP reload changing one peer"],
    ["wgSync", "`wg syncconf`, one peer changed"],
    ["etSync", "`edgetun syncconf`, one peer changed"],
    ["show", "show"],
    ["rss", "RSS idle"],
    ["metrics", "`/metrics`"],
    [
      "sessions",
      `all ${PEERS.toLocaleString("en")} simulated edges have sessions after starting at once`,
    ],
    [
      "liveRss",
      `RSS with ${PEERS.toLocaleString("en")} live sessions (each edge sending an echo a second)`,
    ],
    [
      "rtt",
      "ping RTT avg from a real edge, the others active vs alone" +
        (simulatorCpu === null ? "" : ` (simulator on CPU ${simulatorCpu})`),
    ],
    ["hubCpuAlone", "the hub's CPU meanwhile, per thread (schedstat; ms per second)"],
    ["hubCpu", "the same with the others active"],
    ["stop", "SIGTERM until exit"],
  ];
  for (const [key, label] of labels) rows.push([label, et[key]!, wg[key] ?? "(left out)"]);
  console.log(`\n| ${PEERS.toLocaleString("en")} peers | edgetun | wireguard-go + wg + ip |`);
  console.log("|---|---|---|");
  for (const row of rows) console.log(`| ${row.join(" | ")} |`);
  if (profileDirectory) {
    writeFileSync(join(profileDirectory, "phases.json"), `${JSON.stringify(phases, null, 1)}\n`);
    console.log(`\nCPU profiles and phases.json in ${profileDirectory}`);
  }
}

if (!["wireguard-go", "wg", "curl"].every(commandExists)) {
  console.error("bench:scale needs wireguard-go, wg and curl");
  process.exit(1);
}
main()
  .catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(cleanup);
