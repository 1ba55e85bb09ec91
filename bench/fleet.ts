// The fleet at 5,000 edges (root): a hub (`edgetun up --peers-from`) in a namespace with etcd
// on that namespace's loopback, 5,000 edges written to etcd, then
//   1. the hub's start: load and apply 5,000 edges (peers and 5,000 pod routes), wall and CPU;
//   2. from `edgetun fleet add` (the command) until the new edge's first ping crosses the hub,
//      the edge started from the config that add printed (goal: under 1 s);
//   3. the cost of a full resync of 5,000 edges after a compaction (the watcher and the
//      daemon's sink over a core Device, in this process: range, validation, difference).
// Run: npm run bench:fleet [-- --edges 5000 --samples 3]
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeKey, generatePrivateKey, publicKeyOf } from "../src/core/keys.js";
import { EtcdClient, type TxnOp } from "../src/host/fleet/etcd.js";
import { edgeKey, formatEdgeRecord, leaseKey } from "../src/host/fleet/records.js";
import { startFleetDaemon } from "../test/support/fleet-daemon.js";
import { FleetWatcher } from "../src/host/fleet/watcher.js";
import { createLogger } from "../src/host/log.js";

const arg = (name: string, fallback: number) => {
  const at = process.argv.indexOf(name);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
};
const EDGES = arg("--edges", 5000);
const SAMPLES = arg("--samples", 3);
const cli = new URL("../src/cli/main.js", import.meta.url).pathname;
const PREFIX = "/bench";
const STORE = `etcd://127.0.0.1:2379${PREFIX}`;

const id = `fb${randomBytes(3).toString("hex")}`;
const namespaces: string[] = [];
const children: ChildProcess[] = [];
const dir = mkdtempSync(join(tmpdir(), "edgetun-fleet-bench-"));

function ip(args: string[]): void {
  const result = spawnSync("ip", args, { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`ip ${args.join(" ")}: ${result.stderr}`);
}
function inNs(ns: string, args: string[]) {
  return spawnSync("ip", ["netns", "exec", ns, ...args], { encoding: "utf8", timeout: 60_000 });
}
function namespace(label: string): string {
  const name = `${id}-${label}`;
  ip(["netns", "add", name]);
  namespaces.push(name);
  ip(["-n", name, "link", "set", "lo", "up"]);
  return name;
}
function spawnIn(ns: string, command: string, args: string[]): ChildProcess {
  const child = spawn("ip", ["netns", "exec", ns, command, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  return child;
}
function cleanup(): void {
  for (const child of children) if (child.exitCode === null && child.pid) child.kill("SIGTERM");
  for (const ns of namespaces.reverse()) spawnSync("ip", ["netns", "del", ns]);
  rmSync(dir, { recursive: true, force: true });
}
async function until(what: string, condition: () => boolean, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
/** CPU seconds a process has used so far (user + system). */
function cpuSecondsOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const edgeAddress = (i: number) => `10.99.${Math.floor((i + 2) / 256)}.${(i + 2) % 256}`;
const podCidr = (i: number) => `10.${100 + Math.floor(i / 256)}.${i % 256}.0/24`;

function record(i: number) {
  return {
    name: `edge${i}`,
    publicKey: decodeKey(publicKeyOf(generatePrivateKey())),
    tunnelAddress: Uint8Array.from(edgeAddress(i).split(".").map(Number)),
    podCidrs: [
      {
        address: Uint8Array.from(podCidr(i).split("/")[0]!.split(".").map(Number)),
        cidr: 24,
      },
    ],
    endpoint: null,
    persistentKeepalive: 0,
    presharedKey: null,
  };
}

/** Writes edges [from, to) with their leases, 50 per transaction. */
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

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("needs root (namespaces)");
  const hub = namespace("hub");
  ip(["-n", hub, "link", "add", "br0", "type", "bridge"]);
  ip(["-n", hub, "addr", "add", "192.168.77.1/24", "dev", "br0"]);
  ip(["-n", hub, "link", "set", "br0", "up"]);
  spawnIn(hub, "etcd", [
    "--data-dir",
    join(dir, "etcd"),
    "--listen-client-urls",
    "http://127.0.0.1:2379",
    "--advertise-client-urls",
    "http://127.0.0.1:2379",
    "--listen-peer-urls",
    "http://127.0.0.1:2380",
    "--log-level",
    "error",
    "--quota-backend-bytes",
    String(4 * 1024 ** 3),
  ]);
  await until(
    "etcd",
    () =>
      inNs(hub, ["etcdctl", "--endpoints", "127.0.0.1:2379", "endpoint", "health"]).status === 0,
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
  daemon.stderr!.setEncoding("utf8");
  daemon.stderr!.on("data", (chunk: string) => {
    hubLog += chunk;
    if (hubLog.length > 4_000_000) hubLog = hubLog.slice(-1_000_000);
  });
  await until("hub loaded", () => /"msg":"interface up"/.test(hubLog));
  const loadWall = (performance.now() - t) / 1000;
  await until("hub routes", () => {
    const routes = inNs(hub, ["ip", "-4", "route", "show", "dev", "hub0"]).stdout;
    return routes.split("\n").filter((l) => l.startsWith("10.1")).length >= EDGES;
  });
  const routesWall = (performance.now() - t) / 1000;
  const loadCpu = cpuSecondsOf(daemon.pid!);
  console.log(
    `hub start with ${EDGES} edges: interface up after ${loadWall.toFixed(2)} s, ` +
      `all ${EDGES} pod routes in after ${routesWall.toFixed(2)} s, hub CPU ${loadCpu.toFixed(2)} s (node start included)`,
  );

  // 2. fleet add → first packet across the hub, with the fleet at EDGES.
  const samples: Array<Record<string, number>> = [];
  for (let s = 0; s < SAMPLES; s++) {
    const name = `new${s}`;
    const ns = namespace(name);
    const veth = `v${id.slice(-4)}${s}`;
    ip(["link", "add", veth, "netns", ns, "type", "veth", "peer", `h${name}`, "netns", hub]);
    ip(["-n", ns, "link", "set", veth, "name", "eth0"]);
    ip(["-n", ns, "addr", "add", `192.168.77.${10 + s}/24`, "dev", "eth0"]);
    ip(["-n", ns, "link", "set", "eth0", "up"]);
    ip(["-n", hub, "link", "set", `h${name}`, "master", "br0", "up"]);
    const logMark = hubLog.length;
    const t0 = performance.now();
    const wall0 = Date.now();
    const added = inNs(hub, [
      process.execPath,
      cli,
      "fleet",
      "add",
      name,
      "--pod-cidr",
      `10.250.${s}.0/24`,
      "--store",
      STORE,
    ]);
    if (added.status !== 0) throw new Error(`fleet add: ${added.stderr}`);
    const addDone = performance.now();
    const file = join(dir, `${name}.conf`);
    writeFileSync(file, added.stdout, { mode: 0o600 });
    const edge = spawnIn(ns, process.execPath, [cli, "up", file, "--metrics-listen", "off"]);
    edge.stderr!.resume();
    let edgeLog = "";
    edge.stderr!.on("data", (c: Buffer) => (edgeLog += c.toString()));
    await until("edge up", () => edgeLog.includes("interface up"), 30_000);
    const edgeUp = performance.now();
    const ping = spawnIn(ns, "ping", ["-n", "-i", "0.01", "-w", "20", "10.99.0.1"]);
    let firstReply = 0;
    ping.stdout!.on("data", (c: Buffer) => {
      if (!firstReply && c.toString().includes("bytes from")) firstReply = performance.now();
    });
    await until("first reply", () => firstReply !== 0, 25_000);
    ping.kill("SIGTERM");
    const applied = new RegExp(
      `"time":"([^"]+)","level":"debug","msg":"fleet edge applied","edge":"${name}"`,
    ).exec(hubLog.slice(logMark));
    const hubApplied = applied ? Date.parse(applied[1]!) - wall0 : NaN;
    const sample = {
      addCommand: addDone - t0,
      hubApplied,
      edgeUp: edgeUp - t0,
      firstPacket: firstReply - t0,
      firstPacketAfterEdgeUp: firstReply - edgeUp,
    };
    samples.push(sample);
    console.log(
      `fleet add → first packet across the hub (${EDGES} edges in the fleet): ` +
        `${Math.round(sample.firstPacket)} ms  [add command ${Math.round(sample.addCommand)} ms ` +
        `(node start included), hub applied at ${Math.round(sample.hubApplied)} ms, edge up at ` +
        `${Math.round(sample.edgeUp)} ms, first reply ${Math.round(sample.firstPacketAfterEdgeUp)} ms after edge up]`,
    );
  }

  // 3. A full resync of EDGES edges, in this process: a watcher over a core Device.
  const resync = await measureResync();
  console.log(
    `full resync of ${EDGES} edges after a compaction: ${resync.wallMs.toFixed(0)} ms wall, ` +
      `${resync.cpuMs.toFixed(0)} ms CPU (first load into an empty device: ${resync.firstLoadMs.toFixed(0)} ms wall, ${resync.firstLoadCpuMs.toFixed(0)} ms CPU)`,
  );
  console.log(
    JSON.stringify({
      bench: "fleet",
      edges: EDGES,
      hubStart: { interfaceUpS: loadWall, routesInS: routesWall, cpuS: loadCpu },
      addToFirstPacketMs: samples,
      resync,
    }),
  );
  client.close();
}

/** A TCP relay: a listener here, a `node` inside `ns` that connects to its loopback etcd. */
async function relayInto(ns: string): Promise<number> {
  // The inside half: stdin/stdout of a process in the namespace, one per connection.
  const script =
    "const s=require('net').connect(2379,'127.0.0.1');process.stdin.pipe(s);s.pipe(process.stdout);s.on('close',()=>process.exit(0));process.stdin.on('end',()=>s.end())";
  const server = createServer((socket: Socket) => {
    const inside = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", script], {
      stdio: ["pipe", "pipe", "ignore"],
    });
    children.push(inside);
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

/** An etcd of its own on this host's loopback, random free ports, for the resync figure. */
async function loopbackEtcd(): Promise<number> {
  const free = () =>
    new Promise<number>((resolve) => {
      const server = createServer();
      server.listen({ host: "127.0.0.1", port: 0 }, () => {
        const port = (server.address() as { port: number }).port;
        server.close(() => resolve(port));
      });
    });
  const [clientPort, peerPort] = [await free(), await free()];
  const child = spawn(
    "etcd",
    [
      "--data-dir",
      join(dir, "etcd-resync"),
      "--listen-client-urls",
      `http://127.0.0.1:${clientPort}`,
      "--advertise-client-urls",
      `http://127.0.0.1:${clientPort}`,
      "--listen-peer-urls",
      `http://127.0.0.1:${peerPort}`,
      "--initial-advertise-peer-urls",
      `http://127.0.0.1:${peerPort}`,
      "--initial-cluster",
      `default=http://127.0.0.1:${peerPort}`,
      "--log-level",
      "error",
    ],
    { stdio: "ignore" },
  );
  children.push(child);
  const probe = new EtcdClient({ host: "127.0.0.1", port: clientPort, prefix: "/", tls: false });
  const deadline = Date.now() + 30_000;
  while (true) {
    try {
      await probe.get("/probe");
      break;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  probe.close();
  return clientPort;
}

async function measureResync() {
  const etcdPort = await loopbackEtcd();
  const prefix = "/resync";
  const writer = new EtcdClient(
    { host: "127.0.0.1", port: etcdPort, prefix, tls: false },
    {},
    60_000,
  );
  await populate(writer, prefix, 0, EDGES);
  // A link to etcd this process can cut: the watcher misses history that is then compacted.
  let cut = false;
  const sockets = new Set<Socket>();
  const link = createServer((socket) => {
    if (cut) return socket.destroy();
    const upstream = connect({ host: "127.0.0.1", port: etcdPort });
    for (const s of [socket, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => (socket.destroy(), upstream.destroy()));
    }
    socket.pipe(upstream);
    upstream.pipe(socket);
  });
  await new Promise<void>((resolve) => link.listen({ host: "127.0.0.1", port: 0 }, resolve));
  const linkPort = (link.address() as { port: number }).port;
  const watched = new EtcdClient({ host: "127.0.0.1", port: linkPort, prefix, tls: false });
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
  let cpu = process.cpuUsage();
  let t = performance.now();
  watcher.start();
  await watcher.loaded();
  const firstLoadMs = performance.now() - t;
  const firstLoadCpuMs = (process.cpuUsage(cpu).user + process.cpuUsage(cpu).system) / 1000;
  if (device.peers.size !== EDGES) throw new Error(`loaded ${device.peers.size} of ${EDGES}`);
  cut = true;
  for (const s of sockets) s.destroy();
  await until("disconnected", () => !watcher.stats.connected);
  // Two changes, then history up to now compacted: the watch cannot resume after the first.
  await writer.put(edgeKey(prefix, "edge1"), formatEdgeRecord(record(1)));
  const changed = record(0);
  await writer.put(edgeKey(prefix, "edge0"), formatEdgeRecord(changed));
  const { revision } = await writer.rangePrefix(`${prefix}/none`);
  await writer.compact(revision);
  cpu = process.cpuUsage();
  t = performance.now();
  cut = false;
  await until("resynced", () => watcher.stats.fullLoads === 2, 120_000);
  const wallMs = performance.now() - t;
  const used = process.cpuUsage(cpu);
  await watcher.stop();
  watched.close();
  writer.close();
  link.close();
  await daemon.stop();
  if (!device.peer(changed.publicKey)) throw new Error("the change was not applied by the resync");
  return { wallMs, cpuMs: (used.user + used.system) / 1000, firstLoadMs, firstLoadCpuMs };
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
