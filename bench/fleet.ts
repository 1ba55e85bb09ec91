// The fleet at 5,000 edges (root): a hub (`edgetun up --peers-from`) in a namespace with etcd
// on that namespace's loopback, 5,000 edges written to etcd, then
//   1. the hub's start: load and apply 5,000 edges (peers, and 5,000 pod routes by netlink);
//   2. per sample, one new edge with the fleet at 5,000, in parts:
//      a. store write → hub applied: from the start of the edge's transaction (the one `fleet
//         add` makes, sent by this process over an open connection) until the hub has the
//         peer and its route (its "fleet edge applied" log line, which also says how long the
//         change took in the daemon's queue);
//      b. edge process start → first packet: `edgetun up` of the printed config until the
//         first ping reply from the hub's tunnel address crosses the hub;
//      c. the whole, as an operator sees it: `edgetun fleet add` (the command, Node's start
//         included) until that first reply;
//   3. a full resync of 5,000 edges after a compaction (the watcher and the real daemon's
//      reconfiguration queue over in-memory devices, in this process: range, validation,
//      difference; no routes, as only two edges changed).
// Node's own start is measured alone (`node -e 0` in the edge's namespace), and the load
// average printed with every sample: the machine is shared.
// Run: npm run bench:fleet [-- --edges 5000 --samples 3]
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { decodeKey, generatePrivateKey, publicKeyOf } from "../src/core/keys.js";
import { parseCidr } from "../src/core/ipaddr.js";
import { edgeConfig } from "../src/host/fleet/admin.js";
import { EtcdClient, type TxnOp } from "../src/host/fleet/etcd.js";
import {
  HUBS,
  edgeKey,
  formatEdgeRecord,
  leaseKey,
  parseHubRecord,
} from "../src/host/fleet/records.js";
import { FleetWatcher } from "../src/host/fleet/watcher.js";
import { createLogger } from "../src/host/log.js";
import {
  CuttableLink,
  TestEtcd,
  etcdUnavailableReason,
  startEtcdInNamespace,
} from "../test/support/etcd.js";
import { startFleetDaemon } from "../test/support/fleet-daemon.js";
import { NetworkLab } from "../src/host/toolkit/netns.js";
import { cleanUpOnExit, pollUntil, type Proc } from "../src/host/toolkit/process.js";
import { benchOptions, numberOption } from "./options.js";
import { cpuSeconds } from "./testbed/proc.js";

const options = benchOptions("bench:fleet", "a fleet of edges joining through etcd", {
  edges: { type: "string", default: "5000", help: "edges registered in the store" },
  samples: { type: "string", default: "3", help: "times each change is measured" },
});
const EDGES = numberOption("bench:fleet", "edges", options.edges, { min: 1, integer: true });
const SAMPLES = numberOption("bench:fleet", "samples", options.samples, { min: 1, integer: true });
const cli = new URL("../src/cli/main.js", import.meta.url).pathname;
const PREFIX = "/bench";
const STORE = `etcd://127.0.0.1:2379${PREFIX}`;

// The hub's and the edges' namespaces, and what runs in them, ended by PID when the run ends.
const lab = new NetworkLab({ prefix: "fb", commandTimeoutMs: 60_000, ownGroup: false });
const dir = mkdtempSync(join(tmpdir(), "edgetun-fleet-bench-"));
const load = () =>
  loadavg()
    .map((l) => l.toFixed(1))
    .join(" ");

function spawnIn(ns: string, command: string, args: string[]): Proc {
  return lab.spawn(ns, command, command, args);
}
// An interrupted run too removes its namespaces and ends what runs in them.
const cleanup = cleanUpOnExit(() => {
  lab.destroy();
  rmSync(dir, { recursive: true, force: true });
});
/** Milliseconds until `condition` holds, checked every 2 ms. */
const until = (what: string, condition: () => boolean, timeoutMs = 120_000) =>
  pollUntil(what, condition, timeoutMs, 2);
const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1]!;

const edgeAddress = (i: number) => `10.99.${Math.floor((i + 2) / 256)}.${(i + 2) % 256}`;
const podCidr = (i: number) => `10.${100 + Math.floor(i / 256)}.${i % 256}.0/24`;

function record(i: number) {
  return {
    name: `edge${i}`,
    publicKey: decodeKey(publicKeyOf(generatePrivateKey())),
    tunnelAddress: parseCidr(edgeAddress(i)).address,
    podCidrs: [parseCidr(podCidr(i))],
    endpoint: null,
    persistentKeepalive: 0,
    presharedKey: null,
  };
}

/** Writes edges [from, to) with their address leases, 50 per transaction. */
async function populate(client: EtcdClient, prefix: string, from: number, to: number) {
  const batches: Promise<unknown>[] = [];
  for (let start = from; start < to; start += 50) {
    const ops: TxnOp[] = [];
    for (let i = start; i < Math.min(to, start + 50); i++) {
      const edge = record(i);
      ops.push({ put: edgeKey(prefix, edge.name), value: formatEdgeRecord(edge) });
      ops.push({ put: leaseKey(prefix, edge.tunnelAddress), value: edge.name });
    }
    batches.push(client.txn([], ops));
    if (batches.length >= 4) await Promise.all(batches.splice(0));
  }
  await Promise.all(batches);
}

interface Sample {
  /** a. The add's transaction start → the hub's "fleet edge applied" line (wall clock, ms). */
  writeToHubApplied: number;
  /** Of which etcd's transaction, as this process saw it (request to answer). */
  writeMs: number;
  /** Of which in the daemon's queue (validation, netlink route, peer), as the hub measured. */
  hubQueueMs: number;
  /** b. Edge process spawned → its first ping reply across the hub. */
  edgeStartToFirstPacket: number;
  /** Of which: edge process spawned → "interface up" logged. */
  edgeStartToUp: number;
  /** c. `edgetun fleet add` spawned → the first reply (everything, Node's starts included). */
  addCommandToFirstPacket: number;
  /** The `fleet add` process alone. */
  addCommand: number;
  load: string;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("needs root (namespaces)");
  const missing = etcdUnavailableReason();
  if (missing) throw new Error(missing);
  console.log(`load average at start: ${load()} (${EDGES} edges, ${SAMPLES} samples)`);
  const hub = lab.add("hub");
  lab.exec(hub, "ip", ["link", "add", "br0", "type", "bridge"]);
  lab.exec(hub, "ip", ["addr", "add", "192.168.77.1/24", "dev", "br0"]);
  lab.exec(hub, "ip", ["link", "set", "br0", "up"]);
  await startEtcdInNamespace(
    (command, args) => spawnIn(hub, command, args).child,
    hub,
    join(dir, "etcd"),
    {
      quotaBackendBytes: 4 * 1024 ** 3,
    },
  );
  // This process reaches the namespace's etcd through a relay started inside it.
  const relayPort = await relayInto(hub);
  // Generous timeout: the relay and a busy machine make single requests slow, not wrong.
  const client = new EtcdClient(
    { host: "127.0.0.1", port: relayPort, prefix: PREFIX, tls: false },
    {},
    60_000,
  );

  let t = performance.now();
  await populate(client, PREFIX, 0, EDGES);
  console.log(`wrote ${EDGES} edges to etcd in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  // 1. The hub's start with the fleet.
  const hubConf = join(dir, "hub0.conf");
  writeFileSync(
    hubConf,
    `[Interface]\nPrivateKey = ${generatePrivateKey()}\nListenPort = 51820\nAddress = 10.99.0.1/16\n`,
    { mode: 0o600 },
  );
  let hubLog = "";
  t = performance.now();
  const daemon = spawnIn(hub, process.execPath, [
    cli,
    "up",
    hubConf,
    "--peers-from",
    STORE,
    "--advertise-endpoint",
    "192.168.77.1:51820",
    "--advertise-name",
    "hub",
    "--metrics-listen",
    "off",
    "--log-level",
    "debug",
  ]);
  daemon.child.stderr!.setEncoding("utf8");
  daemon.child.stderr!.on("data", (chunk: string) => {
    hubLog += chunk;
    if (hubLog.length > 8_000_000) hubLog = hubLog.slice(-1_000_000);
  });
  await until("hub up", () => /"msg":"interface up"/.test(hubLog));
  const upWall = (performance.now() - t) / 1000;
  await until("fleet loaded", () => /"msg":"fleet loaded"/.test(hubLog), 600_000);
  const loadWall = (performance.now() - t) / 1000;
  const routes = lab.exec(hub, "ip", ["-4", "route", "show", "dev", "hub0"]);
  const podRoutes = routes.split("\n").filter((l) => l.startsWith("10.1") || l.startsWith("10.2"));
  if (podRoutes.length < EDGES) throw new Error(`${podRoutes.length} of ${EDGES} pod routes`);
  const loadCpu = cpuSeconds(daemon.pid);
  console.log(
    `hub start with ${EDGES} edges: interface up ${upWall.toFixed(2)} s, all ${EDGES} edges ` +
      `and pod routes in ${loadWall.toFixed(2)} s, hub CPU ${loadCpu.toFixed(2)} s ` +
      `(Node's start included; load ${load()})`,
  );

  // Node's start alone, for scale: what every `edgetun` command pays before doing anything.
  const nodeStarts: number[] = [];
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    lab.exec(hub, process.execPath, ["-e", "0"]);
    nodeStarts.push(performance.now() - started);
  }
  const edgetunStarts: number[] = [];
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    lab.exec(hub, process.execPath, [cli, "--version"]);
    edgetunStarts.push(performance.now() - started);
  }
  console.log(
    `process start alone: node -e 0 ${Math.round(median(nodeStarts))} ms, ` +
      `edgetun --version ${Math.round(median(edgetunStarts))} ms (medians of 3)`,
  );

  // 2. One new edge at a time, the fleet at EDGES.
  const samples: Sample[] = [];
  for (let s = 0; s < SAMPLES; s++) {
    const sample = await oneEdge(s, hub, client, () => hubLog);
    samples.push(sample);
    console.log(
      `sample ${s + 1}: store write → hub applied ${sample.writeToHubApplied} ms ` +
        `(transaction ${sample.writeMs} ms, in the hub's queue ${sample.hubQueueMs} ms); edge start → first packet ` +
        `${Math.round(sample.edgeStartToFirstPacket)} ms (up after ${Math.round(sample.edgeStartToUp)} ms); ` +
        `fleet add command → first packet ${Math.round(sample.addCommandToFirstPacket)} ms ` +
        `(the add command ${Math.round(sample.addCommand)} ms); load ${sample.load}`,
    );
  }
  const pick = (field: keyof Sample) => samples.map((x) => x[field] as number);
  console.log(
    `medians over ${SAMPLES}: store write → hub applied ${median(pick("writeToHubApplied"))} ms ` +
      `(queue ${median(pick("hubQueueMs"))} ms), edge start → first packet ` +
      `${Math.round(median(pick("edgeStartToFirstPacket")))} ms, fleet add command → first packet ` +
      `${Math.round(median(pick("addCommandToFirstPacket")))} ms`,
  );

  // 3. A full resync of EDGES edges, in this process.
  const resync = await measureResync();
  console.log(
    `full resync of ${EDGES} edges after a compaction: ${resync.wallMs.toFixed(0)} ms wall, ` +
      `${resync.cpuMs.toFixed(0)} ms CPU (first load into an empty device through the queue: ` +
      `${resync.firstLoadMs.toFixed(0)} ms wall, ${resync.firstLoadCpuMs.toFixed(0)} ms CPU); load ${load()}`,
  );
  console.log(
    JSON.stringify({
      bench: "fleet",
      edges: EDGES,
      hubStart: { interfaceUpS: upWall, loadedS: loadWall, cpuS: loadCpu },
      processStartMs: { node: median(nodeStarts), edgetunVersion: median(edgetunStarts) },
      samples,
      resync,
    }),
  );
  client.close();
}

/**
 * One sample: (a) an edge's transaction from this process, timed to the hub's log line; then
 * (b) the edge from its config; then (c) another edge through the `fleet add` command, end to
 * end.
 */
async function oneEdge(
  s: number,
  hub: string,
  client: EtcdClient,
  hubLog: () => string,
): Promise<Sample> {
  const edgeNs = (name: string, octet: number) => {
    const ns = lab.add(name);
    const [, hubSide] = lab.veth(ns, hub, {
      nameA: "eth0",
      nameB: `h${name}`,
      addressA: `192.168.77.${octet}/24`,
    });
    lab.exec(hub, "ip", ["link", "set", hubSide, "master", "br0"]);
    return ns;
  };
  const appliedAt = (name: string, from: number) => {
    const line = new RegExp(
      `"time":"([^"]+)","level":"debug","msg":"fleet edge applied","edge":"${name}"[^\\n]*"applyMs":([0-9.]+)`,
    ).exec(hubLog().slice(from));
    return line ? { at: Date.parse(line[1]!), queueMs: Number(line[2]) } : null;
  };
  /** Starts `edgetun up file` in `ns`; resolves with (up, first reply) times. */
  const runEdge = async (ns: string, file: string) => {
    const started = performance.now();
    const edge = spawnIn(ns, process.execPath, [cli, "up", file, "--metrics-listen", "off"]);
    let edgeLog = "";
    edge.child.stderr!.on("data", (c: Buffer) => (edgeLog += c.toString()));
    await until("edge up", () => edgeLog.includes("interface up"), 60_000);
    const up = performance.now();
    // Started once the tunnel's route exists (before, ping exits: network unreachable).
    const ping = spawnIn(ns, "ping", ["-n", "-i", "0.005", "-W", "1", "-w", "60", "10.99.0.1"]);
    let firstReply = 0;
    ping.onLine((line) => {
      if (!firstReply && line.includes("bytes from")) firstReply = performance.now();
    });
    await until("first reply", () => firstReply !== 0, 60_000);
    ping.stop();
    edge.stop();
    return { started, up: up - started, firstReply: firstReply - started };
  };

  // a. + b. The edge written as `fleet add` writes it (edge and address lease in one
  // transaction), at an address known to be free, over a connection already open: the time
  // is etcd's commit, the watch and the hub's change, nothing else.
  const name = `a${s}`;
  const ns = edgeNs(name, 10 + 2 * s);
  const { kvs } = await client.rangePrefix(`${PREFIX}/${HUBS}/`);
  const hubRecord = parseHubRecord("hub", kvs[0]!.value);
  const privateKey = generatePrivateKey();
  const edge = {
    ...record(EDGES + 100 + s),
    name,
    publicKey: decodeKey(publicKeyOf(privateKey)),
    podCidrs: [parseCidr(`10.250.${s}.0/24`)],
  };
  let mark = hubLog().length;
  const writeStarted = Date.now();
  const written = await client.txn(
    [{ absent: edgeKey(PREFIX, name) }, { absent: leaseKey(PREFIX, edge.tunnelAddress) }],
    [
      { put: edgeKey(PREFIX, name), value: formatEdgeRecord(edge) },
      { put: leaseKey(PREFIX, edge.tunnelAddress), value: name },
    ],
  );
  const writeMs = Date.now() - writeStarted;
  if (!written.succeeded) throw new Error("the edge's transaction failed");
  await until("hub applied", () => appliedAt(name, mark) !== null, 30_000);
  const applied = appliedAt(name, mark)!;
  const file = join(dir, `${name}.conf`);
  writeFileSync(file, edgeConfig(edge, hubRecord, privateKey), { mode: 0o600 });
  const edgeRun = await runEdge(ns, file);

  // c.
  const whole = `c${s}`;
  const wholeNs = edgeNs(whole, 11 + 2 * s);
  mark = hubLog().length;
  const addStarted = performance.now();
  const printed = lab.exec(hub, process.execPath, [cli, "fleet", "add", whole, "--store", STORE]);
  const addCommand = performance.now() - addStarted;
  const wholeFile = join(dir, `${whole}.conf`);
  writeFileSync(wholeFile, printed, { mode: 0o600 });
  const wholeRun = await runEdge(wholeNs, wholeFile);
  return {
    writeToHubApplied: applied.at - writeStarted,
    writeMs,
    hubQueueMs: applied.queueMs,
    edgeStartToFirstPacket: edgeRun.firstReply,
    edgeStartToUp: edgeRun.up,
    addCommandToFirstPacket: wholeRun.started + wholeRun.firstReply - addStarted,
    addCommand,
    load: load(),
  };
}

/** A TCP relay: a listener here, a `node` inside `ns` that connects to its loopback etcd. */
async function relayInto(ns: string): Promise<number> {
  // The inside half: stdin/stdout of a process in the namespace, one per connection. Started
  // without a Proc, whose line splitting would copy every byte relayed; it lives in the lab's
  // namespace, so the lab ends it by PID all the same.
  const script =
    "const s=require('net').connect(2379,'127.0.0.1');process.stdin.pipe(s);s.pipe(process.stdout);s.on('close',()=>process.exit(0));process.stdin.on('end',()=>s.end())";
  const server = createServer((socket: Socket) => {
    const inside = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", script], {
      stdio: ["pipe", "pipe", "ignore"],
    });
    socket.on("error", () => inside.kill("SIGTERM"));
    inside.stdin!.on("error", () => socket.destroy());
    socket.pipe(inside.stdin!);
    inside.stdout!.pipe(socket);
    socket.on("close", () => inside.kill("SIGTERM"));
    inside.on("exit", () => socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen({ host: "127.0.0.1", port: 0 }, resolve));
  server.unref();
  const address = server.address();
  return typeof address === "object" && address ? address.port : 0;
}

async function measureResync() {
  const etcd = await TestEtcd.create();
  const prefix = "/resync";
  const writer = etcd.client(prefix, 60_000);
  await populate(writer, prefix, 0, EDGES);
  // A link to etcd this process can cut: the watcher misses history that is then compacted.
  const link = await CuttableLink.open(etcd.clientPort);
  const watched = new EtcdClient({ host: "127.0.0.1", port: link.port, prefix, tls: false });
  const { daemon, sink } = await startFleetDaemon();
  const device = daemon.device;
  const watcher = new FleetWatcher({
    client: watched,
    prefix,
    sink,
    logger: createLogger({ level: "error" }),
    retryMinMs: 20,
    retryMaxMs: 20,
  });
  try {
    let cpu = process.cpuUsage();
    let t = performance.now();
    watcher.start();
    await watcher.loaded();
    const firstLoadMs = performance.now() - t;
    const firstUsed = process.cpuUsage(cpu);
    const firstLoadCpuMs = (firstUsed.user + firstUsed.system) / 1000;
    if (device.peers.size !== EDGES) throw new Error(`loaded ${device.peers.size} of ${EDGES}`);
    link.sever();
    await until("disconnected", () => !watcher.stats.connected);
    // Two changes, then history up to now compacted: the watch cannot resume after the first.
    await writer.put(edgeKey(prefix, "edge1"), formatEdgeRecord(record(1)));
    const changed = record(0);
    await writer.put(edgeKey(prefix, "edge0"), formatEdgeRecord(changed));
    const { revision } = await writer.rangePrefix(`${prefix}/none`);
    await writer.compact(revision);
    cpu = process.cpuUsage();
    t = performance.now();
    link.restore();
    await until("resynced", () => watcher.stats.fullLoads === 2, 120_000);
    const wallMs = performance.now() - t;
    const used = process.cpuUsage(cpu);
    if (!device.peer(changed.publicKey)) throw new Error("the resync did not apply the change");
    return { wallMs, cpuMs: (used.user + used.system) / 1000, firstLoadMs, firstLoadCpuMs };
  } finally {
    await watcher.stop();
    watched.close();
    writer.close();
    await link.close();
    await daemon.stop();
    await etcd.cleanup();
  }
}

main()
  .catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(() => {
    cleanup();
    process.exit();
  });
