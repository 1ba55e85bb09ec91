// A hub and two edges in namespaces, the fleet in a real etcd beside the hub: `edgetun up
// --peers-from` follows `edgetun fleet add/remove` and hand-written changes while traffic
// flows (pings hub → edge pods, edge → edge through the hub), keeps the fleet's peers through
// a SIGHUP reload, wg syncconf, wg setconf and wg set … remove, reports handshakes that `fleet
// list` shows, skips a malformed record and counts it in its metrics. The operator's commands
// are the real command line.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generatePrivateKey } from "../../../src/core/keys.js";
import { runSync } from "../../../src/host/toolkit/process.js";
import { startEtcdInNamespace } from "../../support/etcd.js";
import { commandExists, Testbed, tunUnavailableReason, waitFor } from "../../support/netns.js";

const cli = new URL("../../../dist/src/cli/main.js", import.meta.url).pathname;
const skip =
  tunUnavailableReason(["ping"]) ??
  (commandExists("etcd") && commandExists("etcdctl")
    ? null
    : "needs etcd and etcdctl (Debian's etcd-server, etcd-client)") ??
  (commandExists("wg") ? null : "needs wg (Debian's wireguard-tools)") ??
  (existsSync(cli) ? null : "needs the build (npm run build)");
if (skip) console.warn(`fleet hub tests skipped: ${skip}`);

const STORE = "etcd://127.0.0.1:2379/fleet";

describe.skipIf(skip !== null)("a hub on the fleet, in namespaces", () => {
  const bed = new Testbed();
  const dir = mkdtempSync(join(tmpdir(), "edgetun-fleet-"));
  const wgConf = join(dir, "hub0-wg.conf");
  let hub = "";
  let hubLog = "";
  let hubPid = 0;
  const edges: Record<string, string> = {};

  const inNs = (ns: string, args: string[]) =>
    spawnSync("ip", ["netns", "exec", ns, ...args], { encoding: "utf8", timeout: 30_000 });
  const edgetun = (args: string[]) => {
    const result = inNs(hub, [process.execPath, cli, ...args]);
    if (result.status !== 0) throw new Error(`edgetun ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  };
  const etcdctl = (args: string[]) => {
    const result = inNs(hub, ["etcdctl", "--endpoints", "127.0.0.1:2379", ...args]);
    if (result.status !== 0) throw new Error(`etcdctl ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  };
  const pings = (ns: string, address: string) =>
    inNs(ns, ["ping", "-c", "1", "-W", "1", address]).status === 0;
  const eventuallyPings = async (ns: string, address: string) => {
    const deadline = Date.now() + 20_000;
    while (!pings(ns, address)) {
      if (Date.now() > deadline) throw new Error(`${ns} cannot ping ${address}\n${hubLog}`);
    }
  };
  const metrics = () =>
    inNs(hub, [
      process.execPath,
      "-e",
      "fetch('http://127.0.0.1:9586/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))",
    ]).stdout;

  /** `fleet add`, then the edge runs the config it printed, with a pod address on its lo. */
  const addEdge = async (name: string, podCidr: string, podAddress: string) => {
    const config = edgetun(["fleet", "add", name, "--pod-cidr", podCidr, "--store", STORE]);
    const file = join(dir, `${name}.conf`);
    writeFileSync(file, config, { mode: 0o600 });
    const ns = bed.namespace(name);
    runSync("ip", [
      "link",
      "add",
      `v${bed.id.slice(-6)}${name}`,
      "netns",
      ns,
      "type",
      "veth",
      "peer",
      `h${name}`,
      "netns",
      hub,
    ]);
    const inside = `v${bed.id.slice(-6)}${name}`;
    runSync("ip", ["-n", ns, "link", "set", inside, "name", "eth0"]);
    runSync("ip", [
      "-n",
      ns,
      "addr",
      "add",
      `192.168.77.${10 + Object.keys(edges).length}/24`,
      "dev",
      "eth0",
    ]);
    runSync("ip", ["-n", ns, "link", "set", "eth0", "up"]);
    runSync("ip", ["-n", hub, "link", "set", `h${name}`, "master", "br0", "up"]);
    runSync("ip", ["-n", ns, "addr", "add", `${podAddress}/32`, "dev", "lo"]);
    const child = bed.spawn(ns, process.execPath, [cli, "up", file, "--metrics-listen", "off"]);
    child.stderr!.resume();
    await waitFor(`${name} up`, () => inNs(ns, ["ip", "link", "show", name]).status === 0, 20_000);
    edges[name] = ns;
    return config;
  };

  beforeAll(async () => {
    hub = bed.namespace("hub");
    runSync("ip", ["-n", hub, "link", "add", "br0", "type", "bridge"]);
    runSync("ip", ["-n", hub, "addr", "add", "192.168.77.1/24", "dev", "br0"]);
    runSync("ip", ["-n", hub, "link", "set", "br0", "up"]);
    // Edge to edge goes through the hub's kernel: forwarding on, as on any router.
    inNs(hub, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
    await startEtcdInNamespace(
      (command, args) => bed.spawn(hub, command, args),
      hub,
      join(dir, "etcd"),
    );
    const hubConf = join(dir, "hub0.conf");
    const hubInterface = `[Interface]\nPrivateKey = ${generatePrivateKey()}\nListenPort = 51820\n`;
    writeFileSync(hubConf, `${hubInterface}Address = 10.99.0.1/24\n`, { mode: 0o600 });
    // What `wg syncconf` and `wg setconf` get: the same interface, no peers (wg takes no Address).
    writeFileSync(wgConf, hubInterface, { mode: 0o600 });
    const daemon = bed.spawn(hub, process.execPath, [
      cli,
      "up",
      hubConf,
      "--peers-from",
      STORE,
      "--advertise-endpoint",
      "192.168.77.1:51820",
      "--advertise-name",
      "hub",
      "--advertise-allowed-ips",
      "10.244.0.0/16",
      "--metrics-listen",
      "127.0.0.1:9586",
      "--log-level",
      "debug",
      "--fleet-status-interval",
      "1",
    ]);
    hubPid = daemon.pid!;
    daemon.stderr!.setEncoding("utf8");
    daemon.stderr!.on("data", (chunk: string) => {
      if (hubLog.length < 200_000) hubLog += chunk;
    });
    // Generous: on a loaded 2-core machine Node alone may take many seconds to start.
    await waitFor("hub recorded", () => hubLog.includes("hub recorded in the fleet"), 60_000).catch(
      (error: Error) => {
        throw new Error(`${error.message}; the hub's log:\n${hubLog.slice(-4000)}`);
      },
    );
  }, 120_000);

  afterAll(() => {
    bed.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("adds, changes and removes edges while traffic flows; skips and counts a malformed record", async () => {
    await addEdge("e1", "10.244.1.0/24", "10.244.1.1");
    await eventuallyPings(hub, "10.244.1.1"); // hub → e1's pod, over the route the fleet added
    await eventuallyPings(edges.e1!, "10.99.0.1");

    await addEdge("e2", "10.244.2.0/24", "10.244.2.1");
    await eventuallyPings(edges.e1!, "10.244.2.1"); // e1 → e2's pod, through the hub
    expect(runSync("ip", ["-n", hub, "route", "show", "10.244.2.0/24"])).toContain("dev hub0");

    // A change by hand: e2's pods move to 10.244.22.0/24. One edge, one peer changed.
    const record = JSON.parse(etcdctl(["get", "/fleet/edges/e2", "--print-value-only"])) as {
      podCidrs: string[];
    };
    record.podCidrs = ["10.244.22.0/24"];
    runSync("ip", ["-n", edges.e2!, "addr", "add", "10.244.22.1/32", "dev", "lo"]);
    etcdctl(["put", "/fleet/edges/e2", JSON.stringify(record)]);
    await eventuallyPings(hub, "10.244.22.1");
    await waitFor(
      "old route gone",
      () => runSync("ip", ["-n", hub, "route", "show", "10.244.2.0/24"]) === "",
    );
    expect(pings(edges.e1!, "10.244.22.1")).toBe(true);

    // Reloading the hub's file (SIGHUP) leaves the fleet's peers alone: the file has none.
    process.kill(hubPid, "SIGHUP");
    await waitFor("reloaded", () =>
      /"msg":"configuration applied","interface":"hub0","source":"reload"/.test(hubLog),
    );
    expect(pings(hub, "10.244.22.1")).toBe(true);
    expect(pings(edges.e1!, "10.99.0.1")).toBe(true);
    // So do the stock tools: wg syncconf and wg setconf of a file without them, and wg set …
    // remove of one; each says in the log that it left the fleet's peers as they were.
    const fleetPeers = () =>
      inNs(hub, ["wg", "show", "hub0", "peers"]).stdout.trim().split("\n").sort();
    const before = fleetPeers();
    expect(before).toHaveLength(2);
    for (const command of [
      ["wg", "syncconf", "hub0", wgConf],
      ["wg", "setconf", "hub0", wgConf],
      ["wg", "set", "hub0", "peer", before[0]!, "remove"],
    ]) {
      const result = inNs(hub, command);
      expect(result.status, `${command.join(" ")}: ${result.stderr}`).toBe(0);
      expect(fleetPeers()).toEqual(before);
    }
    await waitFor(
      "skips logged",
      () => hubLog.split("peers owned by another source left as they are").length - 1 >= 3,
    );
    expect(pings(hub, "10.244.22.1")).toBe(true);

    // The hub reports its edges' handshakes; fleet list shows them.
    await waitFor("handshakes listed", () =>
      /^edge\s+e1\s+\S+\s+10\.99\.0\.\d+\s+\d+ s ago\s/m.test(
        edgetun(["fleet", "list", "--store", STORE]),
      ),
    );

    // A malformed record: logged, counted, not applied; the others keep working.
    etcdctl(["put", "/fleet/edges/broken", '{"publicKey": "not a key"}']);
    await waitFor("malformed counted", () =>
      /edgetun_fleet_records_rejected_total\{interface="hub0",reason="malformed"\} 1/.test(
        metrics(),
      ),
    );
    // (The log arrives through a pipe that the synchronous commands above kept us from reading.)
    await waitFor("malformed logged", () =>
      /fleet record skipped: malformed.*edges\/broken/.test(hubLog),
    );
    expect(pings(hub, "10.244.1.1")).toBe(true);

    // Remove e1: gone from the hub, its route too; e2 unaffected.
    edgetun(["fleet", "remove", "e1", "--store", STORE]);
    await waitFor(
      "e1 route gone",
      () => runSync("ip", ["-n", hub, "route", "show", "10.244.1.0/24"]) === "",
    );
    expect(pings(hub, "10.244.1.1")).toBe(false);
    expect(pings(hub, "10.244.22.1")).toBe(true);
    const text = metrics();
    expect(text).toMatch(/edgetun_fleet_edges\{interface="hub0"\} 1/);
    expect(text).toMatch(/edgetun_fleet_store_connected\{interface="hub0"\} 1/);
    expect(text).toMatch(/edgetun_peers\{interface="hub0"\} 1/);
    // No key material in the hub's log.
    expect(hubLog).not.toMatch(/PrivateKey|presharedKey"\s*:/);
  }, 120_000);
});
