// Handshake flood against a hub, edgetun and Debian's wireguard-go in the same run: an attacker
// host sends initiations with a valid mac1 and unknown keys, paced at 20 k/s, 50 k/s and as
// fast as it can, while an established edge measures TCP throughput (iperf3) and pings through
// the tunnel, a new edge joins (its handshake time), and after the flood the time until the
// tunnel carries its full throughput again. Namespaces of its own, removed at the end.
// Run (root): npm run build && npm run bench:flood [-- --rates 20000,50000,0 --seconds 24
//   --implementations edgetun,wireguard-go --plain-flood]
import { execFile, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { generatePrivateKey, publicKeyOf } from "../src/core/keys.js";
import { NetworkLab } from "../src/host/toolkit/netns.js";
import { waitFor } from "../test/support/netns.js";
import { benchOptions, benchUsageError, numberOption } from "./options.js";

const execFileAsync = promisify(execFile);
const root = new URL("../..", import.meta.url).pathname;
const cli = join(root, "dist/src/cli/main.js");
const flooder = join(root, "dist/test/support/fixtures/handshake-flood.js");

const IMPLEMENTATION_NAMES = ["edgetun", "wireguard-go"] as const;
type Implementation = (typeof IMPLEMENTATION_NAMES)[number];

const values = benchOptions("bench:flood", "a handshake flood at the hub, beside wireguard-go", {
  rates: {
    type: "string",
    default: "20000,50000,0",
    help: "flood rates in initiations a second, 0 unpaced",
  },
  seconds: { type: "string", default: "24", help: "length of each flood" },
  implementations: {
    type: "string",
    default: IMPLEMENTATION_NAMES.join(","),
    help: "hubs to flood, in order",
  },
  // The flooder sends with UDP GSO (its fastest); --plain-flood sends each datagram alone.
  "plain-flood": { type: "boolean", help: "send each flood datagram alone, without UDP GSO" },
});
const RATES = values.rates
  .split(",")
  .map((rate) => numberOption("bench:flood", "rates", rate, { min: 0, integer: true }));
const FLOOD_SECONDS = numberOption("bench:flood", "seconds", values.seconds, { min: 1 });
const IMPLEMENTATIONS = values.implementations.split(",").map((name) => {
  if (!(IMPLEMENTATION_NAMES as readonly string[]).includes(name)) {
    benchUsageError(
      "bench:flood",
      `unknown implementation "${name}" (${IMPLEMENTATION_NAMES.join(", ")})`,
    );
  }
  return name as Implementation;
});

interface Outcome {
  implementation: Implementation;
  rate: string;
  sent: number;
  achievedPerSecond: number;
  /** edgetun's own drop counters (hub and joining edge), as they stood at the end. */
  drops: Record<string, Record<string, number> | null> | null;
  baselineMbps: number;
  floodMbps: number;
  pings: number;
  joinMs: number | null;
  recoveryMs: number | null;
}

const dir = mkdtempSync(join(tmpdir(), "edgetun-bench-flood-"));
chmodSync(dir, 0o700);
const keys = {
  hub: generatePrivateKey(),
  edge: generatePrivateKey(),
  joiner: generatePrivateKey(),
};

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function output(child: ChildProcess): () => string {
  let text = "";
  child.stdout?.on("data", (chunk: Buffer) => (text += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (text += chunk.toString()));
  return () => text;
}

async function inNs(ns: string, command: string, args: string[]): Promise<string> {
  const { stdout } = await execFileAsync("ip", ["netns", "exec", ns, command, ...args], {
    maxBuffer: 16 << 20,
  });
  return stdout;
}

/** One tunnel node: `address` inside the tunnel, its config as wg-quick's file format. */
interface NodeSpec {
  ns: string;
  name: string;
  privateKey: string;
  address: string;
  listenPort?: number;
  peers: Array<{ publicKey: string; allowedIps: string; endpoint?: string }>;
}

function configText(node: NodeSpec): string {
  let text = `[Interface]\nPrivateKey = ${node.privateKey}\nAddress = ${node.address}\n`;
  if (node.listenPort) text += `ListenPort = ${node.listenPort}\n`;
  for (const peer of node.peers) {
    text += `[Peer]\nPublicKey = ${peer.publicKey}\nAllowedIPs = ${peer.allowedIps}\n`;
    if (peer.endpoint) text += `Endpoint = ${peer.endpoint}\n`;
  }
  return text;
}

/** Starts a node and resolves once its interface is up and configured. */
async function startNode(bed: NetworkLab, implementation: Implementation, node: NodeSpec) {
  if (implementation === "edgetun") {
    const file = join(dir, `${node.name}.conf`);
    writeFileSync(file, configText(node), { mode: 0o600 });
    const { child } = bed.spawn(node.ns, "edgetun", process.execPath, [
      cli,
      "up",
      file,
      "--interface",
      node.name,
      "--metrics-listen",
      "off",
    ]);
    const log = output(child);
    await waitFor(`${node.name} up`, () => log().includes('"interface up"'), 20_000);
    return { child, log };
  }
  const { child } = bed.spawn(node.ns, "wireguard-go", "wireguard-go", ["-f", node.name]);
  await waitFor(
    `${node.name} socket`,
    () => existsSync(`/var/run/wireguard/${node.name}.sock`),
    20_000,
  );
  const keyFile = join(dir, `${node.name}.key`);
  writeFileSync(keyFile, `${node.privateKey}\n`, { mode: 0o600 });
  const args = ["set", node.name, "private-key", keyFile];
  if (node.listenPort) args.push("listen-port", String(node.listenPort));
  for (const peer of node.peers) {
    args.push("peer", peer.publicKey, "allowed-ips", peer.allowedIps);
    if (peer.endpoint) args.push("endpoint", peer.endpoint);
  }
  await inNs(node.ns, "wg", args);
  await inNs(node.ns, "ip", ["addr", "add", node.address, "dev", node.name]);
  await inNs(node.ns, "ip", ["link", "set", node.name, "up"]);
  return { child, log: () => "" };
}

/** What an edgetun daemon dropped, from its "interface down" line (after SIGTERM). */
async function dropsAtExit(node: {
  child: ChildProcess;
  log: () => string;
}): Promise<Record<string, number> | null> {
  node.child.kill("SIGTERM");
  try {
    await waitFor("interface down", () => node.log().includes('"interface down"'), 10_000);
  } catch {
    return null;
  }
  const line = node
    .log()
    .split("\n")
    .find((text) => text.includes('"interface down"'))!;
  return (JSON.parse(line) as { drops: Record<string, number> }).drops;
}

async function iperf(ns: string, server: string, seconds: number, interval = 1) {
  const text = await inNs(ns, "iperf3", [
    "-c",
    server,
    "-t",
    String(seconds),
    "-i",
    String(interval),
    "-J",
  ]).catch((error: { stdout?: string }) => error.stdout ?? "{}");
  const result = JSON.parse(text || "{}") as {
    end?: { sum_received?: { bits_per_second: number } };
    intervals?: Array<{ sum: { bits_per_second: number; end: number } }>;
  };
  return {
    mbps: (result.end?.sum_received?.bits_per_second ?? 0) / 1e6,
    intervals: (result.intervals ?? []).map((i) => ({
      mbps: i.sum.bits_per_second / 1e6,
      end: i.sum.end,
    })),
  };
}

async function runOne(implementation: Implementation, rate: number): Promise<Outcome> {
  const bed = new NetworkLab({ ownGroup: false });
  try {
    const hubNs = bed.add("hub");
    const edgeNs = bed.add("edge");
    const joinerNs = bed.add("new");
    const attackerNs = bed.add("atk");
    bed.veth(hubNs, edgeNs, { addressA: "10.217.1.1/24", addressB: "10.217.1.2/24" });
    bed.veth(hubNs, attackerNs, { addressA: "10.217.2.1/24", addressB: "10.217.2.2/24" });
    bed.veth(hubNs, joinerNs, { addressA: "10.217.3.1/24", addressB: "10.217.3.2/24" });
    const tag = bed.id.slice(-6);
    const hubPublic = publicKeyOf(keys.hub);
    const hub = await startNode(bed, implementation, {
      ns: hubNs,
      name: `bh${tag}`,
      privateKey: keys.hub,
      address: "10.218.0.1/24",
      listenPort: 51820,
      peers: [
        { publicKey: publicKeyOf(keys.edge), allowedIps: "10.218.0.2/32" },
        { publicKey: publicKeyOf(keys.joiner), allowedIps: "10.218.0.3/32" },
      ],
    });
    await startNode(bed, implementation, {
      ns: edgeNs,
      name: `be${tag}`,
      privateKey: keys.edge,
      address: "10.218.0.2/24",
      peers: [{ publicKey: hubPublic, allowedIps: "10.218.0.0/24", endpoint: "10.217.1.1:51820" }],
    });
    bed.spawn(hubNs, "iperf3", "iperf3", ["-s"]);
    await sleep(500);
    await inNs(edgeNs, "ping", ["-c", "2", "-W", "3", "10.218.0.1"]);
    const baseline = await iperf(edgeNs, "10.218.0.1", 4);

    const floodStart = Date.now();
    const flood = execFileAsync("ip", [
      "netns",
      "exec",
      attackerNs,
      process.execPath,
      flooder,
      hubPublic,
      "10.217.2.1",
      "51820",
      String(FLOOD_SECONDS),
      "300",
      String(rate),
      ...(values["plain-flood"] ? ["plain"] : []),
    ]);
    await sleep(1_500);
    const [during, pingText] = await Promise.all([
      iperf(edgeNs, "10.218.0.1", 5),
      inNs(edgeNs, "ping", ["-c", "20", "-i", "0.2", "-W", "2", "10.218.0.1"]).catch(
        (error: { stdout?: string }) => error.stdout ?? "",
      ),
    ]);
    const pings = Number(/(\d+) received/.exec(pingText)?.[1] ?? 0);
    // The new edge: up, then one packet that needs a session; its reply means the handshake.
    const joiner = await startNode(bed, implementation, {
      ns: joinerNs,
      name: `bj${tag}`,
      privateKey: keys.joiner,
      address: "10.218.0.3/24",
      peers: [{ publicKey: hubPublic, allowedIps: "10.218.0.0/24", endpoint: "10.217.3.1:51820" }],
    });
    const joinStart = Date.now();
    const joinDeadlineS = Math.max(12, Math.floor(FLOOD_SECONDS - (joinStart - floodStart) / 1000));
    const joined = await inNs(joinerNs, "ping", [
      "-c",
      "1",
      "-W",
      String(joinDeadlineS),
      "10.218.0.1",
    ])
      .then(() => true)
      .catch(() => false);
    const joinMs = joined ? Date.now() - joinStart : null;
    const flooded = JSON.parse((await flood).stdout) as { sent: number; seconds: number };
    // Recovery: from the flood's end to the first quarter second at 80 % of the baseline.
    const after = await iperf(edgeNs, "10.218.0.1", 4, 0.25);
    const recovered = after.intervals.find((i) => i.mbps >= 0.8 * baseline.mbps);
    const drops =
      implementation === "edgetun"
        ? { hub: await dropsAtExit(hub), joiner: await dropsAtExit(joiner) }
        : null;
    return {
      implementation,
      rate: rate === 0 ? "unpaced" : `${rate / 1000} k/s`,
      sent: flooded.sent,
      achievedPerSecond: flooded.sent / flooded.seconds,
      drops,
      baselineMbps: baseline.mbps,
      floodMbps: during.mbps,
      pings,
      joinMs,
      recoveryMs: recovered ? Math.round(recovered.end * 1000) : null,
    };
  } finally {
    bed.destroy();
  }
}

function table(outcomes: Outcome[]): string {
  const lines = [
    "| flood at the hub | implementation | initiations sent (rate achieved) | TCP kept | pings answered | new peer's handshake | back to 80 % TCP after |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const o of outcomes) {
    const kept = o.baselineMbps > 0 ? Math.round((100 * o.floodMbps) / o.baselineMbps) : 0;
    lines.push(
      `| ${o.rate} | ${o.implementation} | ${o.sent.toLocaleString("en")} (${Math.round(o.achievedPerSecond / 1000)} k/s) | ` +
        `${kept} % (${o.floodMbps.toFixed(0)} of ${o.baselineMbps.toFixed(0)} Mbit/s) | ${o.pings} of 20 | ` +
        `${o.joinMs === null ? "none during the flood" : `${(o.joinMs / 1000).toFixed(1)} s`} | ` +
        `${o.recoveryMs === null ? "not in 4 s" : `${(o.recoveryMs / 1000).toFixed(2)} s`} |`,
    );
  }
  for (const o of outcomes) {
    if (o.drops) lines.push(`\n${o.rate}, ${o.implementation} drops: ${JSON.stringify(o.drops)}`);
  }
  return lines.join("\n");
}

/** Issue 12's targets for each flood rate (null: none at that rate). */
const TCP_KEPT_TARGET: Record<string, number | null> = { "20 k/s": 80, "50 k/s": 50 };
const PINGS_TARGET = 19;
const JOIN_TARGET_MS = 10_000;
const RECOVERY_TARGET_MS = 2_000;

/** Every target's figure, each implementation beside the other, rate by rate. */
function targets(outcomes: Outcome[]): string {
  const lines = [
    `| flood at the hub | target | ${IMPLEMENTATIONS.join(" | ")} |`,
    `|---|---|${IMPLEMENTATIONS.map(() => "---").join("|")}|`,
  ];
  const mark = (met: boolean) => (met ? "met" : "missed");
  for (const rate of [...new Set(outcomes.map((o) => o.rate))]) {
    const rows = IMPLEMENTATIONS.map((i) =>
      outcomes.find((o) => o.rate === rate && o.implementation === i),
    );
    const line = (target: string, figure: (o: Outcome) => string) =>
      lines.push(`| ${rate} | ${target} | ${rows.map((o) => (o ? figure(o) : "-")).join(" | ")} |`);
    const keptTarget = TCP_KEPT_TARGET[rate] ?? null;
    line(`TCP kept${keptTarget === null ? "" : ` ≥ ${keptTarget} %`}`, (o) => {
      const kept = o.baselineMbps > 0 ? Math.round((100 * o.floodMbps) / o.baselineMbps) : 0;
      return keptTarget === null ? `${kept} %` : `${kept} % ${mark(kept >= keptTarget)}`;
    });
    line(`pings ≥ ${PINGS_TARGET} of 20`, (o) => `${o.pings} ${mark(o.pings >= PINGS_TARGET)}`);
    line(`new peer joins within ${JOIN_TARGET_MS / 1000} s`, (o) =>
      o.joinMs === null
        ? "none, missed"
        : `${(o.joinMs / 1000).toFixed(1)} s ${mark(o.joinMs <= JOIN_TARGET_MS)}`,
    );
    line(`back to 80 % TCP within ${RECOVERY_TARGET_MS / 1000} s`, (o) =>
      o.recoveryMs === null
        ? "not in 4 s, missed"
        : `${(o.recoveryMs / 1000).toFixed(2)} s ${mark(o.recoveryMs <= RECOVERY_TARGET_MS)}`,
    );
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("needs root (network namespaces)");
  if (!existsSync(cli) || !existsSync(flooder)) throw new Error("run npm run build first");
  const outcomes: Outcome[] = [];
  for (const rate of RATES) {
    for (const implementation of IMPLEMENTATIONS) {
      process.stderr.write(`${implementation} at ${rate || "unpaced"} ...\n`);
      outcomes.push(await runOne(implementation, rate));
    }
  }
  const [one, five] = loadavg();
  process.stdout.write(
    `${new Date().toISOString()}, ${cpus().length} CPUs (${cpus()[0]?.model ?? "?"}), ` +
      `load average ${one!.toFixed(1)} / ${five!.toFixed(1)}; flood ${FLOOD_SECONDS} s per run` +
      `${values["plain-flood"] ? ", flooder without UDP GSO" : ", flooder with UDP GSO"}\n\n` +
      `${table(outcomes)}\n\nTargets (issue 12):\n\n${targets(outcomes)}\n`,
  );
}

main()
  .catch((error: unknown) => {
    process.stderr.write(`bench:flood: ${(error as Error).message}\n`);
    process.exitCode = 1;
  })
  .finally(() => rmSync(dir, { recursive: true, force: true }));
