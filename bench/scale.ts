// A hub for thousands of edges, control plane: edgetun against Debian's wireguard-go configured
// the way wg-quick would (wg setconf, then ip -batch for addresses and routes), in the same run,
// in a network namespace of its own. Each peer has a /32 tunnel address and a /24 pod CIDR.
// Prints: time until the interface is usable with every route, `wg set` of one peer, a reload
// changing one peer, `wg syncconf` and `edgetun syncconf` of a file changing one peer, `edgetun
// show` and `wg show`, resident memory, and the size of /metrics. Nothing leaves the namespace.
// Run (root): npm run bench:scale [-- --peers 5000]
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generatePrivateKey, publicKeyOf } from "../src/core/keys.js";
import { NetworkLab } from "../src/host/toolkit/netns.js";
import { commandExists } from "../src/host/toolkit/process.js";

const peersArg = process.argv.indexOf("--peers");
const PEERS = peersArg > 0 ? Number(process.argv[peersArg + 1]) : 5000;
const cli = new URL("../src/cli/main.js", import.meta.url).pathname;
// Thousands of peers: `wg setconf` and `ip -batch` take their time, and `wg show` is long.
// No signal handler here: in our process group, a Ctrl-C ends the daemons too.
const lab = new NetworkLab({ prefix: "scale-", commandTimeoutMs: 600_000, ownGroup: false });
const tag = lab.id.slice(-6);
const ns = lab.name("ns");
const directory = mkdtempSync(join(tmpdir(), "edgetun-scale-"));

const inNs = (command: string, args: string[], input?: string) =>
  lab.exec(ns, command, args, { maxBuffer: 256 << 20, ...(input !== undefined ? { input } : {}) });

/** Milliseconds `fn` takes. */
function timed(fn: () => void): number {
  const start = performance.now();
  fn();
  return performance.now() - start;
}

async function waitFor(
  what: string,
  condition: () => boolean,
  timeoutMs = 300_000,
): Promise<number> {
  const start = performance.now();
  while (!condition()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return performance.now() - start;
}

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
  return { publicKey, allowedIps: [`10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`, pod] };
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

function cleanup(): void {
  lab.destroy();
  rmSync(directory, { recursive: true, force: true });
}

type Row = [string, string, string];
const rows: Row[] = [];
const ms = (value: number) =>
  value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(0)} ms`;

async function benchEdgetun(peers: Peer[]): Promise<Record<string, string>> {
  const name = `es${tag}`;
  const key = generatePrivateKey();
  const file = join(directory, `${name}.conf`);
  writeFileSync(file, configText(key, 51820, peers, true), { mode: 0o600 });
  let log = "";
  const start = performance.now();
  const { child } = lab.spawn(ns, "edgetun", process.execPath, [
    cli,
    "up",
    file,
    "--metrics-listen",
    "127.0.0.1:9586",
  ]);
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (log += chunk));
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (log += chunk));
  await waitFor("edgetun up", () => log.includes('"interface up"') || child.exitCode !== null);
  if (child.exitCode !== null) throw new Error(`edgetun failed:\n${log}`);
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

  const syncFile = join(directory, `${name}.sync.conf`);
  const synced = changed.map((peer, i) =>
    i === 9 ? peerAt(i, peer.publicKey, "10.252.0.0/24") : peer,
  );
  writeFileSync(syncFile, configText(key, 51820, synced, false), { mode: 0o600 });
  const wgSyncMs = timed(() => inNs("wg", ["syncconf", name, syncFile]));
  const edgeSynced = synced.map((peer, i) =>
    i === 11 ? peerAt(i, peer.publicKey, "10.253.0.0/24") : peer,
  );
  writeFileSync(file, configText(key, 51820, edgeSynced, true));
  const etSyncMs = timed(() => inNs(process.execPath, [cli, "syncconf", name, file]));
  const showMs = timed(() => inNs(process.execPath, [cli, "show", name]));
  const wgShowMs = timed(() => inNs("wg", ["show", name]));
  const metrics = inNs("curl", ["-s", "http://127.0.0.1:9586/metrics"]);
  const series = metrics.split("\n").filter((l) => l !== "" && !l.startsWith("#")).length;
  const routesAfter = inNs("ip", ["-4", "route", "show", "dev", name]).trim().split("\n").length;
  const stopStart = performance.now();
  child.kill("SIGTERM");
  await waitFor("edgetun exit", () => child.exitCode !== null);
  const stopMs = performance.now() - stopStart;
  return {
    up: ms(upMs),
    set: ms(setMs),
    reload: ms(reloadMs),
    wgSync: ms(wgSyncMs),
    etSync: ms(etSyncMs),
    show: `edgetun show ${ms(showMs)}, wg show ${ms(wgShowMs)}`,
    rss: `${idleRss.toFixed(0)} MB`,
    metrics: `${(metrics.length / 1024).toFixed(0)} KB, ${series} series (default --metrics-peers 1000)`,
    routes: `${routes} → ${routesAfter}`,
    stop: ms(stopMs),
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
  const { child } = lab.spawn(ns, "wireguard-go", "wireguard-go", ["-f", name], {
    env: { LOG_LEVEL: "error" },
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
  const wgShowMs = timed(() => inNs("wg", ["show", name]));
  child.kill("SIGTERM");
  await waitFor("wireguard-go exit", () => child.exitCode !== null || child.signalCode !== null);
  return {
    up: `${ms(upMs)} (wg setconf + ip -batch)`,
    set: `${ms(setMs)} (no route change)`,
    reload: "–",
    wgSync: `${ms(wgSyncMs)} (no route change)`,
    etSync: "–",
    show: `wg show ${ms(wgShowMs)}`,
    rss: `${idleRss.toFixed(0)} MB`,
    metrics: "–",
    routes: `${routes} (by ip -batch)`,
    stop: "–",
  };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("needs root (network namespaces)");
  lab.add("ns");
  const keyStart = performance.now();
  const peers = Array.from({ length: PEERS }, (_, i) =>
    peerAt(i, publicKeyOf(generatePrivateKey())),
  );
  console.log(`${PEERS} peer keys in ${ms(performance.now() - keyStart)}; ${PEERS * 2} prefixes`);
  const et = await benchEdgetun(peers);
  const wg = await benchWireguardGo(peers);
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
    ["stop", "SIGTERM until exit"],
  ];
  for (const [key, label] of labels) rows.push([label, et[key]!, wg[key]!]);
  console.log(`\n| ${PEERS.toLocaleString("en")} peers | edgetun | wireguard-go + wg + ip |`);
  console.log("|---|---|---|");
  for (const row of rows) console.log(`| ${row.join(" | ")} |`);
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
