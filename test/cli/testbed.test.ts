// The edge testbed's own pieces that run without root: its command line (bad input is a
// usage error, exit 2, before anything is created), impairment levels, the UDP delay relay on
// loopback, and the report (tables laid out as prettier lays them out, SVG that is well formed).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createSocket, type Socket } from "node:dgram";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import * as prettier from "prettier";
import { afterEach, describe, expect, it } from "vitest";
import { parseLevel, type Level } from "../../bench/testbed/impair.js";
import { reach } from "../../bench/testbed/measure.js";
import {
  describeDetail,
  figures,
  loadSummary,
  markdownReport,
  markdownTable,
  type Meta,
  type Result,
} from "../../bench/testbed/report.js";
import {
  SOFTETHER_DIR,
  SoftEtherTunnels,
  clientCommands,
  globalPathsSnapshot,
  parseAccountStatus,
  privatePathsArgs,
  serverCommands,
  softEtherConflict,
  softEtherProcesses,
  softEtherUnavailable,
} from "../../bench/testbed/softether.js";
import {
  TINC_HUB_PODS,
  TincTunnels,
  tincConf,
  tincHostEntries,
  tincUnavailable,
} from "../../bench/testbed/tinc.js";
import {
  NEBULA_HUB_PODS,
  NebulaTunnels,
  nebulaConfig,
  nebulaSignArgs,
  nebulaUnavailable,
} from "../../bench/testbed/nebula.js";
import { readRun } from "../../bench/testbed/render.js";
import { Topology } from "../../bench/testbed/topology.js";
import { Keys, type Tunnel } from "../../bench/testbed/tunnels.js";
import { Testbed, netnsUnavailableReason } from "../support/netns.js";

const dist = fileURLToPath(new URL("../../dist/bench/testbed/", import.meta.url));
const mainJs = `${dist}main.js`;
const relayJs = `${dist}relay.js`;
const built = existsSync(mainJs) && existsSync(relayJs);
const builtReason = "dist/bench/testbed is not built (npm run build)";

describe("impairment levels", () => {
  it.each<[string, Level]>([
    ["none", { kind: "none" }],
    ["loss:1", { kind: "loss", percent: 1 }],
    ["loss:99", { kind: "loss", percent: 99 }],
    ["delay:350", { kind: "delay", ms: 350 }],
    ["rate:100", { kind: "rate", mbit: 100 }],
  ])("reads %s", (text, level) => {
    expect(parseLevel(text)).toEqual(level);
  });

  it.each([
    "loss:2.5",
    "loss:0",
    "loss:100",
    "loss:-1",
    "delay:0",
    "delay:6000",
    "rate:x",
    "jitter:5",
    "none:1",
    "",
  ])("refuses %j with the forms it takes", (text) => {
    expect(() => parseLevel(text)).toThrow(/bad impairment level/);
  });
});

describe.skipIf(!built)(`bench command line (${built ? "built" : builtReason})`, () => {
  function runMain(args: string[]): { status: number | null; stderr: string; stdout: string } {
    const result = spawnSync(process.execPath, [mainJs, ...args], {
      encoding: "utf8",
      timeout: 20_000,
    });
    return { status: result.status, stderr: result.stderr, stdout: result.stdout };
  }

  it.each([
    [["--levels", "loss:2.5"], /whole, 1-99/],
    [["--tunnels", "edgetun,nosuch"], /unknown tunnel "nosuch"/],
    [["--tunnels", ","], /--tunnels names none/],
    [["--time-limit", "0"], /--time-limit wants minutes > 0/],
    [["--bogus"], /--bogus/],
    [["stray"], /unexpected argument "stray"/],
  ])("%j is a usage error (exit 2) that names the problem and prints the usage", (args, why) => {
    const { status, stderr } = runMain(args);
    expect(status).toBe(2);
    expect(stderr).toMatch(why);
    expect(stderr).toContain("usage: npm run bench:testbed");
  });

  it("--help prints the usage and exits 0", () => {
    const { status, stdout } = runMain(["--help"]);
    expect(status).toBe(0);
    expect(stdout).toContain("--quick");
  });
});

describe.skipIf(!built)(`UDP delay relay on loopback (${built ? "built" : builtReason})`, () => {
  const sockets: Socket[] = [];
  let relay: ReturnType<typeof spawn> | null = null;

  afterEach(() => {
    for (const socket of sockets.splice(0)) socket.close();
    if (relay && relay.exitCode === null) relay.kill("SIGKILL");
    relay = null;
  });

  async function udp(): Promise<Socket> {
    const socket = createSocket("udp4");
    sockets.push(socket);
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
    return socket;
  }

  /** Starts the relay between an "edge" socket and a "hub" socket; resolves once it is ready. */
  async function startRelay(delayMs: number, queueLimit: number) {
    const hub = await udp();
    const edge = await udp();
    // A port for the relay's edge side: bind, read, release (the relay binds it next).
    const probe = await udp();
    const relayPort = probe.address().port;
    probe.close();
    sockets.splice(sockets.indexOf(probe), 1);
    const options = {
      delayMs,
      hub: `127.0.0.1:${hub.address().port}`,
      hubBind: "127.0.0.1",
      listen: [`127.0.0.1:${relayPort}`],
      queueLimit,
    };
    const child = spawn(process.execPath, [relayJs, JSON.stringify(options)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    relay = child;
    let stdout = "";
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("relay did not get ready")), 10_000);
      child.stdout!.on("data", () => {
        if (stdout.includes("ready\n")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once("exit", (code) => reject(new Error(`relay exited ${code}`)));
    });
    const counters = async () => {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
      const line = stdout.split("\n").find((l) => l.startsWith("{"));
      return JSON.parse(line ?? "{}") as { forwarded: number; dropped: number; sendErrors: number };
    };
    return { hub, edge, relayPort, counters };
  }

  it("holds every datagram the delay each way, keeps their order, and answers the edge", async () => {
    const delayMs = 60;
    const { hub, edge, relayPort, counters } = await startRelay(delayMs, 1000);
    // The hub echoes to whoever sent (the relay's hub-side socket for this edge).
    hub.on("message", (data, remote) => hub.send(data, remote.port, remote.address));
    const arrivals: Array<{ n: number; rtt: number }> = [];
    const sentAt = new Map<number, number>();
    const done = new Promise<void>((resolve) => {
      edge.on("message", (data) => {
        const n = data.readUInt32BE(0);
        arrivals.push({ n, rtt: performance.now() - sentAt.get(n)! });
        if (arrivals.length === 20) resolve();
      });
    });
    for (let n = 0; n < 20; n++) {
      const datagram = Buffer.alloc(64);
      datagram.writeUInt32BE(n, 0);
      sentAt.set(n, performance.now());
      edge.send(datagram, relayPort, "127.0.0.1");
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await done;
    expect(arrivals.map((a) => a.n)).toEqual([...Array(20).keys()]);
    for (const { rtt } of arrivals) {
      expect(rtt).toBeGreaterThanOrEqual(2 * delayMs - 1);
      expect(rtt).toBeLessThan(2 * delayMs + 500);
    }
    expect(await counters()).toEqual({ forwarded: 40, dropped: 0, sendErrors: 0 });
  });

  it("drops and counts what arrives at a full queue, and ignores strangers on the hub side", async () => {
    const { hub, edge, relayPort, counters } = await startRelay(300, 5);
    const atHub: number[] = [];
    let relayHubSide: { port: number; address: string } | null = null;
    hub.on("message", (data, remote) => {
      relayHubSide = remote;
      atHub.push(data.readUInt32BE(0));
    });
    const gotEcho = new Promise<void>((resolve) => edge.on("message", () => resolve()));
    for (let n = 0; n < 12; n++) {
      const datagram = Buffer.alloc(16);
      datagram.writeUInt32BE(n, 0);
      edge.send(datagram, relayPort, "127.0.0.1");
    }
    await expect.poll(() => atHub.length, { timeout: 5000 }).toBe(5);
    expect(atHub).toEqual([0, 1, 2, 3, 4]);
    // A datagram to the relay's hub-side socket from anyone but the hub goes nowhere.
    const stranger = await udp();
    const target = relayHubSide!;
    stranger.send(Buffer.from("nope"), target.port, target.address);
    hub.send(Buffer.alloc(4), target.port, target.address);
    await gotEcho;
    const edgeGot: Buffer[] = [];
    edge.on("message", (data) => edgeGot.push(data));
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(edgeGot.some((d) => d.toString() === "nope")).toBe(false);
    expect(await counters()).toEqual({ forwarded: 6, dropped: 7, sendErrors: 0 });
  });
});

describe("testbed report", () => {
  const levels = ["none", "loss 5%"];
  const meta: Meta = {
    runId: "t1",
    startedAt: "2026-11-25T00:00:00.000Z",
    quick: true,
    machine: { cpus: 2, cpuModel: "test", memoryGiB: 1, kernel: "6.0", node: "20.0.0" },
    tunnels: ["edgetun", "wireguard-go"],
    levels: [{ kind: "none" }, { kind: "loss", percent: 5 }],
    settings: {},
  };

  function results(): Result[] {
    const out: Result[] = [];
    for (const [t, tunnel] of ["edgetun", "wireguard-go"].entries()) {
      for (const [l, level] of levels.entries()) {
        const base = {
          tunnel,
          level,
          kind: (l === 0 ? "none" : "loss") as Level["kind"],
          value: l === 0 ? 0 : 5,
        };
        const mbps = 1000 / (t + 1) / (l + 1);
        out.push({ ...base, scenario: "bring-up", values: { firstPacketMs: 100 + t } });
        out.push({ ...base, scenario: "ping", path: "pod-pod", values: { avgMs: 1.5, p99Ms: 3 } });
        for (const scenario of ["tcp1", "tcp4", "udp"] as const) {
          for (const path of ["edge-hub", "pod-pod"] as const) {
            out.push({
              ...base,
              scenario,
              path,
              values: { receivedMbps: mbps, receivedBytes: mbps * 1.25e6, lostPercent: 12.5 },
              cost: { cpuSeconds: 2, peakRssMiB: 60 + t } as Result["cost"],
            });
          }
        }
        for (const concurrency of [1, 100]) {
          out.push({
            ...base,
            scenario: "http",
            concurrency,
            values: {
              requestsPerSecond: 500 * concurrency,
              p50Ms: 2,
              p99Ms: 9.5,
              failureRate: 0.001,
            },
          });
        }
      }
    }
    out.push({
      tunnel: "underlay",
      level: "delay 50 ms",
      kind: "delay",
      value: 50,
      scenario: "skipped",
      values: {},
      message: "no UDP to relay",
    });
    return out;
  }

  it("writes Markdown tables that prettier leaves as they are", async () => {
    const table = markdownTable(
      ["tunnel", "TCP×1 e→h"],
      [
        ["edgetun", "1,833"],
        ["wg", "–"],
      ],
    );
    expect(await prettier.format(table, { parser: "markdown" })).toBe(`${table}\n`);
    const report = markdownReport(meta, results(), 165);
    expect(await prettier.format(report, { parser: "markdown", printWidth: 100 })).toBe(
      report.endsWith("\n") ? report : `${report}\n`,
    );
  });

  it("puts each tunnel and level on a row with its figures, and lists what was skipped", () => {
    const report = markdownReport(meta, results(), 165);
    expect(report).toContain("took 165 s");
    const rows = report.split("\n").filter((line) => line.startsWith("| edgetun "));
    // two levels × (throughput table + service-call table)
    expect(rows).toHaveLength(4);
    expect(rows[0]).toMatch(/\| edgetun\s+\| none\s+\| 100\s+\| 1\.50 \/ 3\.00\s+\| 1,000\s+\|/);
    // 6 runs × 1.25e9 B × 8 bit / 12 CPU s = 5 Gbit per CPU second
    expect(rows[0]).toMatch(/\| 12\.0\s+\| 60\s+\| 5\.00\s+\|$/);
    expect(report).toContain("| 50,000 · 2.0/9.5 · 0.10 %");
    expect(report).toContain("- underlay, delay 50 ms: no UDP to relay");
  });

  it("states the machine's load at the cases' starts, and reads it back from a run's lines", () => {
    expect(loadSummary([], 2)).toBe("");
    expect(loadSummary([12.5, 3.25, 20.04], 2)).toBe(
      "Load average (1 min) at the start of each case: 3.3–20.0, median 12.5, on 2 cores.",
    );
    const lines = [
      { type: "run", ...meta },
      { type: "load", tunnel: "edgetun", level: "none", loadAverage1m: 7.5 },
      ...results().map((r) => ({ type: "result", ...r })),
      { type: "load", tunnel: "underlay", level: "none", loadAverage1m: 2 },
      { type: "end", durationS: 165, complete: true },
    ];
    const run = readRun(lines.map((l) => JSON.stringify(l)).join("\n"));
    expect(run.loads).toEqual([7.5, 2]);
    expect(run.results).toHaveLength(results().length);
    const report = markdownReport(run.meta, run.results, run.durationS, run.loads);
    expect(report).toContain("Load average (1 min) at the start of each case: 2.0–7.5, median 7.5");
    expect(markdownReport(meta, results(), 165)).not.toContain("Load average");
  });

  it("draws well-formed SVG with one line per tunnel", () => {
    const svgs = figures(meta, results());
    expect(svgs.map((f) => f.name)).toEqual(["loss", "concurrency"]);
    for (const { svg } of svgs) {
      expect(svg.startsWith("<svg")).toBe(true);
      expect(svg).toContain("edgetun");
      expect(svg).toContain("wireguard-go");
      // Every element that opens closes, in order.
      const stack: string[] = [];
      for (const [, closing, name, selfClosing] of svg.matchAll(/<(\/?)([a-zA-Z]+)[^>]*?(\/?)>/g)) {
        if (selfClosing) continue;
        if (closing) expect(stack.pop()).toBe(name);
        else stack.push(name!);
      }
      expect(stack).toEqual([]);
    }
  });
});

describe("tinc configuration", () => {
  const topo = new Topology();
  const [e1, e2] = topo.edges as [(typeof topo.edges)[0], (typeof topo.edges)[0]];

  it("makes the hub a router-mode TunnelServer on its underlay address, and each edge its client", () => {
    const hub = tincConf(topo.hub, topo.hub, "tun-h");
    expect(hub).toContain("Name = hub\n");
    expect(hub).toContain("Mode = router\n");
    expect(hub).toContain("TunnelServer = yes\n");
    expect(hub).toContain(`BindToAddress = ${topo.hub.underlayAddress}\n`);
    expect(hub).toContain("Interface = tun-h\n");
    expect(hub).not.toContain("ConnectTo");
    const edge = tincConf(e1, topo.hub, "tun-1");
    expect(edge).toContain("Name = e1\n");
    expect(edge).toContain("ConnectTo = hub\n");
    expect(edge).toContain("Mode = router\n");
    expect(edge).not.toContain("TunnelServer");
    // No cipher, digest or compression line: tinc's defaults are what is measured.
    expect(`${hub}${edge}`).not.toMatch(/Cipher|Digest|Compression|MACLength/);
  });

  it("gives each edge its pod CIDR and tunnel address as Subnets, and the hub every pod", () => {
    const hub = tincHostEntries(topo.hub, topo.hub);
    expect(hub).toContain(`Address = ${topo.hub.underlayAddress}\nPort = 51820\n`);
    expect(hub).toContain(`Subnet = ${TINC_HUB_PODS}\n`);
    expect(hub).toContain(`Subnet = ${topo.hub.tunnelAddress}/32\n`);
    for (const edge of [e1, e2]) {
      const text = tincHostEntries(edge, topo.hub);
      expect(text.match(/^Subnet = .*$/gm)).toEqual([
        `Subnet = ${edge.tunnelAddress}/32`,
        `Subnet = ${edge.podCidr}`,
      ]);
      // An edge is reached through the hub, never at an address of its own.
      expect(text).not.toContain("Address =");
    }
  });
});

describe("Nebula configuration", () => {
  const topo = new Topology();
  const e1 = topo.edges[0]!;
  const pki = (label: string) => ({
    ca: "/k/ca.crt",
    cert: `/k/${label}.crt`,
    key: `/k/${label}.key`,
  });
  type Config = {
    pki: object;
    static_host_map: Record<string, string[]>;
    lighthouse: { am_lighthouse: boolean; hosts?: string[] };
    listen: { host: string; port: number };
    tun: { dev: string; mtu: number; unsafe_routes: Array<{ route: string; via: string }> };
    firewall: { inbound: object[]; outbound: object[] };
  } & Record<string, unknown>;
  const read = (text: string) => JSON.parse(text) as Config;

  it("signs the hub for every pod and each edge for its own pod CIDR, at its tunnel address", () => {
    expect(nebulaSignArgs(topo.hub, topo.hub)).toEqual([
      "-name",
      "hub",
      "-ip",
      `${topo.hub.tunnelAddress}/24`,
      "-subnets",
      NEBULA_HUB_PODS,
    ]);
    expect(nebulaSignArgs(e1, topo.hub)).toEqual([
      "-name",
      "e1",
      "-ip",
      `${e1.tunnelAddress}/24`,
      "-subnets",
      e1.podCidr,
    ]);
  });

  it("makes the hub the lighthouse on its underlay port, routing each edge's pods to that edge", () => {
    const hub = read(nebulaConfig(topo.hub, topo, "neb-h", pki("hub"), "unused:1"));
    expect(hub.pki).toEqual(pki("hub"));
    expect(hub.lighthouse).toEqual({ am_lighthouse: true, interval: 60 });
    expect(hub.listen).toEqual({ host: topo.hub.underlayAddress, port: 51820 });
    expect(hub.static_host_map).toEqual({});
    expect(hub.tun).toMatchObject({ dev: "neb-h", mtu: 1420 });
    expect(hub.tun.unsafe_routes).toEqual(
      topo.edges.map((edge) => ({ route: edge.podCidr, via: edge.tunnelAddress })),
    );
    // No cipher line: Nebula's default (AES-256-GCM) is what is measured.
    expect(hub).not.toHaveProperty("cipher");
  });

  it("points an edge at the hub's endpoint (its relay under delay) and routes every pod there", () => {
    const edge = read(nebulaConfig(e1, topo, "neb-1", pki("e1"), "10.77.1.1:40000"));
    expect(edge.static_host_map).toEqual({ [topo.hub.tunnelAddress]: ["10.77.1.1:40000"] });
    expect(edge.lighthouse).toMatchObject({
      am_lighthouse: false,
      hosts: [topo.hub.tunnelAddress],
    });
    expect(edge.listen).toEqual({ host: "0.0.0.0", port: 0 });
    expect(edge.tun.unsafe_routes).toEqual([
      { route: NEBULA_HUB_PODS, via: topo.hub.tunnelAddress },
    ]);
    expect(edge.punchy).toEqual({ punch: false });
    expect(edge.firewall.inbound).toEqual([{ port: "any", proto: "any", host: "any" }]);
  });
});

describe("SoftEther configuration", () => {
  const topo = new Topology();
  const e1 = topo.edges[0]!;

  it("sets the admin password first, listens on the hub port only, and gives each edge a user", () => {
    const commands = serverCommands(topo, "ADMIN", (edge) => `pw-${edge.label}`);
    expect(commands[0]).toBe("ServerPasswordSet ADMIN");
    expect(commands).toContain("ListenerCreate 51820");
    for (const port of [443, 992, 1194]) expect(commands).toContain(`ListenerDelete ${port}`);
    // The session running these came in on 5555: that listener goes last.
    expect(commands[commands.length - 1]).toBe("ListenerDelete 5555");
    for (const off of ["VpnAzureSetEnable no", "KeepDisable", "SstpEnable no"]) {
      expect(commands).toContain(off);
    }
    for (const edge of topo.edges) {
      expect(commands).toContain(`UserCreate ${edge.label} /GROUP:none /REALNAME:none /NOTE:none`);
      expect(commands).toContain(`UserPasswordSet ${edge.label} /PASSWORD:pw-${edge.label}`);
    }
    expect(commands.filter((c) => c.startsWith("BridgeCreate"))).toEqual([
      "BridgeCreate DEFAULT /DEVICE:etb /TAP:yes",
    ]);
  });

  it("connects a client to the hub's server with its own user and adapter", () => {
    expect(clientCommands(e1, "10.77.0.2:51820", "secret")).toEqual([
      "NicCreate etb",
      "AccountCreate hub /SERVER:10.77.0.2:51820 /HUB:DEFAULT /USERNAME:e1 /NICNAME:etb",
      "AccountPasswordSet hub /PASSWORD:secret /TYPE:standard",
      "AccountConnect hub",
    ]);
  });

  it("reads the transport from AccountStatusGet, and nothing from other text", () => {
    const status = [
      "Item                                      |Value",
      "------------------------------------------+------",
      "Session Status                            |Connection Completed (Session Established)",
      "Port Number                               |TCP Port 51820",
      "Number of TCP Connections                 |2",
      "Encryption                                |Enabled (Algorithm: TLS_AES_256_GCM_SHA384)",
      "Use of Compression                        |No (No Compression)",
      "UDP Acceleration is Supported             |Yes",
      "UDP Acceleration is Active                |No",
    ].join("\n");
    expect(parseAccountStatus(status)).toEqual({
      tcpConnections: 2,
      encryption: "Enabled (Algorithm: TLS_AES_256_GCM_SHA384)",
      compression: "No (No Compression)",
      udpAccelerationActive: false,
    });
    expect(parseAccountStatus("Error occurred. (Error code: 1)")).toBeNull();
    expect(describeDetail({ udpAccelerationActive: true, tcpConnections: 2 })).toBe(
      "udpAccelerationActive true, tcpConnections 2",
    );
  });
});

/**
 * Runs `check` on a new topology with its keys and one kind of tunnel over it; the tunnel is
 * taken down, the namespaces removed and the keys deleted afterwards, whatever `check` did.
 */
async function withTunnels<T extends Tunnel>(
  makeTunnels: (topo: Topology, keys: Keys) => T,
  check: (tunnel: T, topo: Topology, keys: Keys) => Promise<void>,
): Promise<void> {
  const topo = new Topology();
  const keys = new Keys(topo);
  const tunnel = makeTunnels(topo, keys);
  try {
    topo.create();
    await check(tunnel, topo, keys);
  } finally {
    await tunnel.down();
    topo.destroy();
    keys.remove();
  }
}

/** Runs `check` with a new empty directory, removed afterwards. */
function withEmptyDirectory<T>(prefix: string, check: (directory: string) => T): T {
  const directory = mkdtempSync(join(tmpdir(), prefix));
  try {
    return check(directory);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

/** Runs `check` with a new empty directory as the whole PATH, put back afterwards. */
function withEmptyPath<T>(prefix: string, check: () => T): T {
  return withEmptyDirectory(prefix, (empty) => {
    const path = process.env["PATH"];
    process.env["PATH"] = empty;
    try {
      return check();
    } finally {
      process.env["PATH"] = path;
    }
  });
}

describe("skip reasons when a tunnel is missing", () => {
  it("names the SoftEther package whose program is missing", () => {
    withEmptyDirectory("etb-nosoftether-", (empty) => {
      expect(softEtherUnavailable(empty)).toBe(
        `${join(empty, "vpnserver", "vpnserver")} is missing (apt-get install softether-vpnserver)`,
      );
    });
  });

  it("names the nebula package when nebula is not on the PATH", () => {
    withEmptyPath("etb-nonebula-", () => {
      expect(nebulaUnavailable()).toBe("nebula is not installed (apt-get install nebula)");
    });
  });

  it("names the tinc package when tincd is not on the PATH", () => {
    withEmptyPath("etb-notinc-", () => {
      expect(tincUnavailable()).toBe("tincd is not installed (apt-get install tinc)");
    });
  });
});

const reachSkip = netnsUnavailableReason(["ping"]);

describe.skipIf(reachSkip !== null)(
  `waiting for a target to answer (${reachSkip ?? "root, ping"})`,
  () => {
    // A pinger and a router that answers "unreachable" for the target's network, as tinc does
    // before an edge's meta connection is up, until the target is put behind it.
    let bed: Testbed | null = null;
    const target = "198.51.100.1";
    const setup = (): { pinger: string; router: string } => {
      bed = new Testbed();
      const pinger = bed.namespace("pinger");
      const router = bed.namespace("router");
      bed.link(pinger, "192.0.2.1/24", router, "192.0.2.2/24");
      bed.exec(pinger, "ip", ["route", "add", "198.51.100.0/24", "via", "192.0.2.2"]);
      bed.exec(router, "sysctl", ["-qw", "net.ipv4.ip_forward=1"]);
      bed.exec(router, "ip", ["route", "add", "unreachable", "198.51.100.0/24"]);
      return { pinger, router };
    };

    afterEach(() => {
      bed?.cleanup();
      bed = null;
    });

    it(
      "keeps asking through ICMP errors until the target answers",
      { timeout: 30_000 },
      async () => {
        const { pinger, router } = setup();
        const began = performance.now();
        const waiting = reach(pinger, target, 15);
        waiting.catch(() => undefined); // awaited below; not unhandled while the route changes
        await new Promise((resolve) => setTimeout(resolve, 1000));
        bed!.exec(router, "ip", ["route", "del", "unreachable", "198.51.100.0/24"]);
        bed!.exec(router, "ip", ["addr", "add", `${target}/32`, "dev", "lo"]);
        await waiting;
        expect(performance.now() - began).toBeGreaterThanOrEqual(1000);
      },
    );

    it("gives up after its time, not at the first ICMP error", { timeout: 30_000 }, async () => {
      const { pinger } = setup();
      const began = performance.now();
      await expect(reach(pinger, target, 2)).rejects.toThrow(
        /198\.51\.100\.1 does not answer from .* within 2 s \(ping: .*Unreachable/,
      );
      expect(performance.now() - began).toBeGreaterThanOrEqual(1900);
    });
  },
);

const softEtherSkip = netnsUnavailableReason(["unshare", "mount"]) ?? softEtherUnavailable();
const tincSkip = netnsUnavailableReason(["ping"]) ?? tincUnavailable();

describe.skipIf(softEtherSkip !== null)(
  `SoftEther's global paths (${softEtherSkip ?? "root, softether installed"})`,
  () => {
    let holder: ChildProcess | null = null;
    let state: string | null = null;

    afterEach(() => {
      if (holder?.pid && holder.exitCode === null) holder.kill("SIGKILL");
      holder = null;
      if (state) rmSync(state, { recursive: true, force: true });
      state = null;
    });

    it("gives a SoftEther program the node's own directories in place of the machine's", () => {
      state = mkdtempSync(join(tmpdir(), "etb-softether-state-"));
      const before = globalPathsSnapshot();
      const script = "echo probe > /var/lib/softether/probe && echo run > /run/softether/probe";
      const result = spawnSync("unshare", privatePathsArgs(state, "sh", ["-c", script]), {
        encoding: "utf8",
        timeout: 10_000,
      });
      expect(result.stderr).toBe("");
      expect(result.status).toBe(0);
      expect(readFileSync(join(state, "lib", "probe"), "utf8")).toBe("probe\n");
      expect(readFileSync(join(state, "run", "probe"), "utf8")).toBe("run\n");
      expect(globalPathsSnapshot()).toBe(before);
    });

    it("refuses a run while another SoftEther program is running, naming its pid", async () => {
      state = mkdtempSync(join(tmpdir(), "etb-softether-state-"));
      // vpncmd waiting at its first prompt: a SoftEther program that is not the bench's own.
      holder = spawn("unshare", privatePathsArgs(state, `${SOFTETHER_DIR}/vpncmd/vpncmd`, []), {
        stdio: ["pipe", "ignore", "ignore"],
      });
      const pid = holder.pid!;
      const deadline = Date.now() + 10_000;
      while (!softEtherProcesses().some((p) => p.pid === pid) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(softEtherConflict()).toContain(`${pid} (${SOFTETHER_DIR}/vpncmd/vpncmd)`);
      if (built) {
        const out = mkdtempSync(join(tmpdir(), "etb-softether-out-"));
        try {
          const run = spawnSync(
            process.execPath,
            [mainJs, "--tunnels", "softether", "--levels", "none", "--out", out],
            { encoding: "utf8", timeout: 30_000 },
          );
          expect(run.status).toBe(2);
          expect(run.stderr).toMatch(/cannot run softether: another SoftEther is running \(.*\d+/);
        } finally {
          rmSync(out, { recursive: true, force: true });
        }
      }
    });

    it(
      "runs a server and a client on private paths, carries pod traffic, and leaves no trace",
      { timeout: 120_000 },
      async () => {
        const before = globalPathsSnapshot();
        await withTunnels(
          (topo, keys) => new SoftEtherTunnels(topo, keys),
          async (tunnel, topo, keys) => {
            const [e1] = topo.edges;
            await tunnel.upHub();
            await tunnel.upEdge(e1!);
            await reach(e1!.podNs, topo.hub.podAddress, 40);
            expect(await tunnel.transport()).toMatchObject({ compression: "No (No Compression)" });
            const pids = tunnel.daemons().map((d) => d.pid);
            // Server and client, each a watcher and its worker.
            expect(pids).toHaveLength(4);
            expect(existsSync(join(keys.dir, "softether", "hub", "lib", "vpn_server.config"))).toBe(
              true,
            );
            await tunnel.down();
            const left = softEtherProcesses().filter((p) => pids.includes(p.pid));
            expect(left).toEqual([]);
          },
        );
        expect(globalPathsSnapshot()).toBe(before);
      },
    );
  },
);

describe.skipIf(tincSkip !== null)(
  `tinc hub and edge (${tincSkip ?? "root, tinc installed"})`,
  () => {
    it(
      "carries an edge pod's traffic to the hub's pod and ends its daemons",
      { timeout: 120_000 },
      async () => {
        await withTunnels(
          (topo, keys) => new TincTunnels(topo, keys),
          async (tunnel, topo) => {
            const [e1] = topo.edges;
            await tunnel.upHub();
            await tunnel.upEdge(e1!);
            await reach(e1!.podNs, topo.hub.podAddress, 40);
            const pids = tunnel.daemons().map((d) => d.pid);
            expect(pids).toHaveLength(2);
            await tunnel.down();
            for (const pid of pids) expect(existsSync(`/proc/${pid}`)).toBe(false);
            expect(tunnel.supports({ kind: "delay", ms: 50 })).toMatch(/TCP meta connection/);
            expect(tunnel.supports({ kind: "loss", percent: 5 })).toBeNull();
          },
        );
      },
    );
  },
);

const nebulaSkip = netnsUnavailableReason(["ping"]) ?? nebulaUnavailable();

describe.skipIf(nebulaSkip !== null)(
  `Nebula hub and edges (${nebulaSkip ?? "root, nebula installed"})`,
  () => {
    it(
      "carries edge pods' traffic to the hub's pod and across the hub, and ends its daemons",
      { timeout: 120_000 },
      async () => {
        await withTunnels(
          (topo, keys) => new NebulaTunnels(topo, keys),
          async (tunnel, topo) => {
            const [e1, e2] = topo.edges;
            const none: Level = { kind: "none" };
            await tunnel.upHub(none);
            await tunnel.upEdge(e1!, none);
            await tunnel.upEdge(e2!, none);
            await reach(e1!.podNs, topo.hub.podAddress, 40);
            // Pod to pod: out of Nebula at the hub, through its kernel, and in again.
            await reach(e1!.podNs, e2!.podAddress, 40);
            const transfer = tunnel.hubTransfer();
            expect(transfer?.rxBytes).toBeGreaterThan(0);
            expect(transfer?.txBytes).toBeGreaterThan(0);
            const pids = tunnel.daemons().map((d) => d.pid);
            expect(pids).toHaveLength(3);
            expect(tunnel.deadDaemon()).toBeNull();
            await tunnel.down();
            for (const pid of pids) expect(existsSync(`/proc/${pid}`)).toBe(false);
            expect(tunnel.supports({ kind: "delay", ms: 50 })).toBeNull();
          },
        );
      },
    );
  },
);
