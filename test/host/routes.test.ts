// Route lifecycle of `edgetun up`, checked against the kernel with iproute2 as the oracle:
// routes for allowed IPs through each path of change (file reload by SIGHUP, `wg set`,
// `wg syncconf`, `edgetun syncconf`), Table = off and Table = N, nothing left after SIGTERM,
// policy rules left by a SIGKILLed daemon removed at the next start, a conflicting route
// refused with a clear error and nothing changed, and a few thousand peers all routed with one
// `wg set` changing one route. Only edgetun runs here (no peer answers): routes are the subject.
// Everything happens in namespaces created here; daemons are ended by PID.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { Testbed, netnsUnavailableReason, waitFor } from "../support/netns.js";

const repoRoot = new URL("../..", import.meta.url).pathname;
const cli = join(repoRoot, "dist/src/cli/main.js");
const skipReason =
  netnsUnavailableReason(["wg"]) ??
  (existsSync("/dev/net/tun") ? null : "needs /dev/net/tun") ??
  (existsSync(cli) ? null : "needs the build (npm run build)");
if (skipReason) console.warn(`route lifecycle tests skipped: ${skipReason}`);

const STATE_DIRECTORY = "/run/edgetun";
const runTag = randomBytes(3).toString("hex");
let counter = 0;
const interfaceName = () => `r${runTag}${counter++}`;

interface PeerSpec {
  publicKey: string;
  allowedIps: string[];
}

function configText(privateKey: string, peers: PeerSpec[], extra: string[] = []): string {
  const lines = ["[Interface]", `PrivateKey = ${privateKey}`, ...extra];
  for (const peer of peers) {
    lines.push("", "[Peer]", `PublicKey = ${peer.publicKey}`);
    if (peer.allowedIps.length > 0) lines.push(`AllowedIPs = ${peer.allowedIps.join(", ")}`);
  }
  return `${lines.join("\n")}\n`;
}

const newPeer = (...allowedIps: string[]): PeerSpec => ({
  publicKey: publicKeyOf(generatePrivateKey()),
  allowedIps,
});

class Daemon {
  output = "";
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => (this.output += chunk));
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (this.output += chunk));
    this.exited = new Promise((resolve) =>
      child.on("exit", (code, signal) => resolve({ code, signal })),
    );
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  signal(signal: NodeJS.Signals): void {
    if (this.running) process.kill(this.child.pid!, signal);
  }

  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.signal("SIGKILL"), 15_000);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }
}

describe.skipIf(skipReason !== null)("routes for allowed IPs (netlink, wg-quick's rules)", () => {
  let bed: Testbed;
  let ns: string;
  let directory: string;
  const daemons: Daemon[] = [];

  beforeAll(() => {
    bed = new Testbed();
    ns = bed.namespace("routes");
    directory = mkdtempSync(join(tmpdir(), "edgetun-routes-"));
  });

  afterEach(async () => {
    for (const daemon of daemons.splice(0)) await daemon.stop();
  });

  afterAll(() => {
    bed?.cleanup();
    if (directory) rmSync(directory, { recursive: true, force: true });
  });

  /** Starts `edgetun up` on a file; resolves once it logged "interface up" (or exited). */
  async function up(name: string, text: string): Promise<{ daemon: Daemon; file: string }> {
    const file = join(directory, `${name}.conf`);
    writeFileSync(file, text, { mode: 0o600 });
    const child = spawn(
      "ip",
      ["netns", "exec", ns, process.execPath, cli, "up", file, "--metrics-listen", "off"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    const daemon = new Daemon(child);
    daemons.push(daemon);
    await waitFor(
      `${name} up`,
      () => daemon.output.includes('"interface up"') || !daemon.running,
      60_000,
    );
    return { daemon, file };
  }

  function ip(...args: string[]): string {
    return bed.exec(ns, "ip", args);
  }

  /** Every route through `name` in every table, minus the kernel's own (local, multicast, …). */
  function routesOf(name: string): string[] {
    const lines = [
      ...ip("-4", "route", "show", "table", "all").split("\n"),
      ...ip("-6", "route", "show", "table", "all").split("\n"),
    ];
    return lines
      .filter((line) => new RegExp(` dev ${name}( |$)`).test(line))
      .filter((line) => !/^(local|broadcast|multicast|anycast) /.test(line))
      .filter((line) => !line.startsWith("fe80::/64") && !line.includes("proto kernel"))
      .map((line) => line.replace(/ (scope link|metric \d+|pref medium)/g, "").trim())
      .sort();
  }

  function rules(): string {
    return ip("-4", "rule", "show") + ip("-6", "rule", "show");
  }

  function wg(...args: string[]): { status: number | null; output: string } {
    const result = spawnSync("ip", ["netns", "exec", ns, "wg", ...args], { encoding: "utf8" });
    return { status: result.status, output: `${result.stdout}${result.stderr}` };
  }

  function expectRoutes(name: string, expected: string[], table = ""): void {
    const suffix = table ? ` table ${table}` : "";
    expect(routesOf(name)).toEqual(
      expected.map((prefix) => `${prefix} dev ${name}${suffix}`).sort(),
    );
  }

  it("every path of change installs and removes exactly the difference; SIGTERM leaves nothing", async () => {
    const name = interfaceName();
    const key = generatePrivateKey();
    const a = newPeer("10.90.0.2/32", "10.91.1.0/24", "fd91:1::/64");
    const b = newPeer("10.90.0.3/32", "10.91.2.0/24");
    const address = ["Address = 10.90.0.1/24, fd90::1/64"];
    const rulesBefore = rules();
    const { daemon, file } = await up(name, configText(key, [a, b], address));
    // The peers' /32s are inside the interface's own subnet: its kernel route covers them.
    expectRoutes(name, ["10.91.1.0/24", "10.91.2.0/24", "fd91:1::/64"]);

    // wg set: a's prefixes replaced (one goes, one comes), a new peer c.
    const c = newPeer("10.91.3.0/24");
    expect(
      wg("set", name, "peer", a.publicKey, "allowed-ips", "10.91.1.0/24,10.91.4.0/24").status,
    ).toBe(0);
    expect(wg("set", name, "peer", c.publicKey, "allowed-ips", c.allowedIps.join(",")).status).toBe(
      0,
    );
    expectRoutes(name, ["10.91.1.0/24", "10.91.2.0/24", "10.91.3.0/24", "10.91.4.0/24"]);

    // wg set … remove: the peer's routes go.
    expect(wg("set", name, "peer", b.publicKey, "remove").status).toBe(0);
    expectRoutes(name, ["10.91.1.0/24", "10.91.3.0/24", "10.91.4.0/24"]);

    // A prefix moving from one peer to another keeps its one route.
    expect(
      wg("set", name, "peer", c.publicKey, "allowed-ips", "10.91.3.0/24,10.91.4.0/24").status,
    ).toBe(0);
    expectRoutes(name, ["10.91.1.0/24", "10.91.3.0/24", "10.91.4.0/24"]);

    // SIGHUP reload: the file wins (a's prefixes as written, b back with a new one, c gone).
    b.allowedIps = ["10.91.5.0/24"];
    writeFileSync(file, configText(key, [a, b], address));
    daemon.signal("SIGHUP");
    await waitFor("the reload", () => daemon.output.includes('"source":"reload"'));
    expect(daemon.output).toMatch(
      /"source":"reload","peersAdded":1,"peersRemoved":1,"peersChanged":1,"routesAdded":2,"routesRemoved":2/,
    );
    expectRoutes(name, ["10.91.1.0/24", "10.91.5.0/24", "fd91:1::/64"]);

    // edgetun syncconf: only a changes.
    a.allowedIps = ["10.90.0.2/32", "10.91.6.0/24"];
    writeFileSync(file, configText(key, [a, b], address));
    const sync = spawnSync(
      "ip",
      ["netns", "exec", ns, process.execPath, cli, "syncconf", name, file],
      {
        encoding: "utf8",
      },
    );
    expect(sync.status, sync.stderr).toBe(0);
    // Only a is in the request, so only a changes.
    await waitFor("the syncconf in the log", () =>
      /"source":"control socket","peersAdded":0,"peersRemoved":0,"peersChanged":1,"routesAdded":1,"routesRemoved":2/.test(
        daemon.output,
      ),
    );
    expectRoutes(name, ["10.91.5.0/24", "10.91.6.0/24"]);

    // wg syncconf (a stripped file, as wg-quick's strip gives it): b goes, d comes.
    const d = newPeer("10.91.7.0/24", "fd91:7::/64");
    const stripped = join(directory, `${name}.stripped`);
    writeFileSync(stripped, configText(key, [a, d]), { mode: 0o600 });
    const result = wg("syncconf", name, stripped);
    expect(result.status, result.output).toBe(0);
    expectRoutes(name, ["10.91.6.0/24", "10.91.7.0/24", "fd91:7::/64"]);

    expect(await daemon.stop()).toEqual({ code: 0, signal: null });
    expect(routesOf(name)).toEqual([]);
    expect(rules()).toBe(rulesBefore);
  }, 120_000);

  it("Table = off installs no route; Table = 1234 puts every prefix there, /0 too, without rules", async () => {
    const rulesBefore = rules();
    const off = interfaceName();
    const peer = newPeer("10.92.1.0/24", "0.0.0.0/0");
    const first = await up(
      off,
      configText(generatePrivateKey(), [peer], ["Table = off", "Address = 10.92.0.1/24"]),
    );
    expect(routesOf(off)).toEqual([]);
    expect(wg("set", off, "peer", peer.publicKey, "allowed-ips", "10.92.2.0/24").status).toBe(0);
    expect(routesOf(off)).toEqual([]);
    expect(rules()).toBe(rulesBefore);
    expect(await first.daemon.stop()).toEqual({ code: 0, signal: null });

    const numbered = interfaceName();
    await up(
      numbered,
      configText(generatePrivateKey(), [peer], ["Table = 1234", "Address = 10.93.0.1/24"]),
    );
    expectRoutes(numbered, ["10.92.1.0/24", "default"], "1234");
    expect(ip("-4", "route", "show", "table", "main")).not.toContain(`dev ${numbered} scope`);
    expect(rules()).toBe(rulesBefore);
    expect(wg("set", numbered, "peer", peer.publicKey, "allowed-ips", "10.92.3.0/24").status).toBe(
      0,
    );
    expectRoutes(numbered, ["10.92.3.0/24"], "1234");
  }, 120_000);

  it("a SIGKILLed daemon's policy rules are removed by the next start of the same interface", async () => {
    const rulesBefore = rules();
    const name = interfaceName();
    const key = generatePrivateKey();
    const first = await up(name, configText(key, [newPeer("0.0.0.0/0", "::/0")]));
    expect(rules()).toMatch(/not from all fwmark 0xca6c lookup 51820/);
    first.daemon.signal("SIGKILL");
    await first.daemon.exited;
    // The interface went with the process, its routes with it; the rules stay behind.
    await waitFor("the interface to go", () => !ip("link", "show").includes(`${name}:`));
    expect(routesOf(name)).toEqual([]);
    expect(rules()).not.toBe(rulesBefore);
    expect(existsSync(join(STATE_DIRECTORY, `${name}.rules.json`))).toBe(true);

    const second = await up(name, configText(key, [newPeer("10.94.1.0/24")]));
    expect(second.daemon.output).toMatch(/removed policy rules left behind by an earlier instance/);
    expect(rules()).toBe(rulesBefore);
    expect(await second.daemon.stop()).toEqual({ code: 0, signal: null });
    expect(existsSync(join(STATE_DIRECTORY, `${name}.rules.json`))).toBe(false);
  }, 120_000);

  it("a route already there through another interface: refused with EEXIST, nothing changes", async () => {
    const other = `d${runTag}`;
    ip("link", "add", other, "type", "veth", "peer", "name", `${other}p`);
    ip("link", "set", other, "up");
    ip("route", "add", "10.95.9.0/24", "dev", other);

    // At start: a clear error, and no interface left behind.
    const name = interfaceName();
    const refused = await up(
      name,
      configText(generatePrivateKey(), [newPeer("10.95.1.0/24", "10.95.9.0/24")]),
    );
    expect(await refused.daemon.exited).toEqual({ code: 1, signal: null });
    expect(refused.daemon.output).toMatch(
      /route 10\.95\.9\.0\/24 table main: EEXIST \(a route for this prefix is already in that table/,
    );
    expect(ip("link", "show")).not.toContain(`${name}:`);

    // At a change: wg set is refused as a whole (10.95.2.0/24 does not go in either).
    const running = interfaceName();
    const peer = newPeer("10.95.1.0/24");
    const { daemon } = await up(running, configText(generatePrivateKey(), [peer]));
    const before = wg("show", running, "allowed-ips").output;
    const result = wg(
      "set",
      running,
      "peer",
      peer.publicKey,
      "allowed-ips",
      "10.95.2.0/24,10.95.9.0/24",
    );
    expect(result.status).not.toBe(0);
    expect(result.output).toMatch(/File exists/);
    expect(wg("show", running, "allowed-ips").output).toBe(before);
    expectRoutes(running, ["10.95.1.0/24"]);
    expect(ip("route", "show", "10.95.9.0/24")).toContain(`dev ${other}`);
    await waitFor("the refusal in the log", () =>
      /configuration change refused; the running configuration is unchanged.*ERR_RECONFIGURE_ROUTES/.test(
        daemon.output,
      ),
    );
  }, 120_000);

  it("3,000 peers: every prefix routed through the interface; one wg set changes one route", async () => {
    const name = interfaceName();
    const peers: PeerSpec[] = [];
    for (let i = 0; i < 3000; i++) {
      peers.push(
        newPeer(`10.${96 + (i >> 8)}.${i & 255}.1/32`, `172.${16 + (i >> 8)}.${i & 255}.0/24`),
      );
    }
    const privateKey = generatePrivateKey();
    const { daemon } = await up(name, configText(privateKey, peers, ["Address = 10.200.0.1/16"]));
    const before = routesOf(name);
    expect(before).toHaveLength(6000);
    // The kernel's choice for an address in every prefix: this interface.
    const lookups = peers
      .flatMap((peer) => peer.allowedIps)
      .map(
        (prefix) =>
          `route get ${prefix.replace(/\.0\/24$|\/32$/, (m) => (m === "/32" ? "" : ".9"))}`,
      );
    const answers = bed.exec(ns, "ip", ["-batch", "-"], `${lookups.join("\n")}\n`);
    expect(answers.split("\n").filter((line) => line.includes(` dev ${name} `))).toHaveLength(6000);

    const target = peers[1234]!;
    expect(
      wg(
        "set",
        name,
        "peer",
        target.publicKey,
        "allowed-ips",
        `${target.allowedIps[0]},10.250.0.0/24`,
      ).status,
    ).toBe(0);
    const after = routesOf(name);
    expect(before.filter((route) => !after.includes(route))).toEqual([
      `${target.allowedIps[1]} dev ${name}`,
    ]);
    expect(after.filter((route) => !before.includes(route))).toEqual([`10.250.0.0/24 dev ${name}`]);

    // wg syncconf sends all 3,000 peers, each replacing its allowed IPs: one peer's differ,
    // so one route goes, one comes, and the other 2,999 peers are untouched.
    const synced = peers.map((peer, i) =>
      i === 77 ? { ...peer, allowedIps: [peer.allowedIps[0]!, "10.251.0.0/24"] } : peer,
    );
    synced[1234] = { ...target, allowedIps: [target.allowedIps[0]!, "10.250.0.0/24"] };
    const syncFile = join(directory, `${name}.sync.conf`);
    writeFileSync(syncFile, configText(privateKey, synced), { mode: 0o600 });
    // Peer lines only: the first line is the interface's (a file without ListenPort may move it).
    const peerLines = () => wg("show", name, "dump").output.trim().split("\n").slice(1);
    const dumpBefore = peerLines();
    expect(wg("syncconf", name, syncFile).status).toBe(0);
    const afterSync = routesOf(name);
    expect(after.filter((route) => !afterSync.includes(route))).toEqual([
      `${peers[77]!.allowedIps[1]} dev ${name}`,
    ]);
    expect(afterSync.filter((route) => !after.includes(route))).toEqual([
      `10.251.0.0/24 dev ${name}`,
    ]);
    const dumpAfter = peerLines();
    expect(dumpAfter).toHaveLength(3000);
    expect(dumpAfter.filter((line) => !dumpBefore.includes(line))).toEqual([
      `${peers[77]!.publicKey}\t(none)\t(none)\t${peers[77]!.allowedIps[0]},10.251.0.0/24\t0\t0\t0\toff`,
    ]);
    await waitFor("the syncconf summary in the log", () =>
      /"source":"control socket","peersAdded":0,"peersRemoved":0,"peersChanged":3000,"routesAdded":1,"routesRemoved":1/.test(
        daemon.output,
      ),
    );
  }, 300_000);
});
