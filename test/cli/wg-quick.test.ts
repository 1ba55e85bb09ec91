// edgetun as a drop-in for WireGuard operators: Debian's own wg-quick brings an unmodified
// wg-quick file up and down with edgetun-go as its userspace implementation
// (WG_QUICK_USERSPACE_IMPLEMENTATION), and `edgetun up` does the same with the same file:
// addresses, DNS through resolvconf, PreUp/PostUp/PreDown/PostDown hooks (the private key set by
// "PostUp = wg set %i private-key …"), SaveConfig, routes; pings through the tunnel to a
// wireguard-go peer; nothing left behind after down. Also: a failing PreUp stops `up` before
// anything changes, and deleting the interface under a running daemon ends it cleanly; with
// `MTU = 8920` (set by wg-quick after the daemon started) jumbo pings pass unfragmented.
//
// resolvconf: the real one rewrites this machine's /etc/resolv.conf (namespaces do not
// separate files), so a recording stand-in is first on PATH for both wg-quick and edgetun;
// what they hand it is compared. Underlay 10.63.0.0/24 (edgetun .1, wireguard-go .2); tunnel
// 10.61.0.0/24 and fd61::/64; 10.62.0.0/24 behind wireguard-go (needs a route).
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { Testbed, tunUnavailableReason, waitFor } from "../support/netns.js";

const repoRoot = new URL("../..", import.meta.url).pathname;
const cli = join(repoRoot, "dist/src/cli/main.js");
const wgoEntry = join(repoRoot, "dist/src/cli/wgo-entry.js");

const skipReason =
  tunUnavailableReason(["wg-quick", "wg", "wireguard-go", "nft", "ping", "bash"]) ??
  (existsSync(cli) && existsSync(wgoEntry) ? null : "needs the build (npm run build)");
if (skipReason) console.warn(`wg-quick drop-in tests skipped: ${skipReason}`);

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runAsync(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
  timeoutMs = 60_000,
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function processAlive(pid: number): boolean {
  return existsSync(`/proc/${pid}`);
}

describe.skipIf(skipReason !== null)("edgetun as a drop-in for wg-quick", () => {
  const bed = new Testbed();
  const tmp = mkdtempSync(join(tmpdir(), "edgetun-wgquick-"));
  const tag = randomBytes(3).toString("hex");
  let counter = 0;
  const nextName = () => `q${tag}${counter++}`;
  const namesUsed: string[] = [];
  let etNs = "";
  let wgNs = "";
  const wgName = `w${tag}`;
  const etPrivate = generatePrivateKey();
  const wgPrivate = generatePrivateKey();
  const etKeyFile = join(tmp, "edgetun.key");
  const binDir = join(tmp, "bin");
  const resolvconfLog = join(tmp, "resolvconf.log");
  const implementation = join(binDir, "edgetun-go");
  let env: NodeJS.ProcessEnv = {};

  beforeAll(async () => {
    etNs = bed.namespace("et");
    wgNs = bed.namespace("wg");
    // Jumbo frames below, so that the MTU test's 8920-byte tunnel packets fit unfragmented.
    bed.link(etNs, "10.63.0.1/24", wgNs, "10.63.0.2/24", 9000);
    writeFileSync(etKeyFile, `${etPrivate}\n`, { mode: 0o600 });
    const wgKeyFile = join(tmp, "wg.key");
    writeFileSync(wgKeyFile, `${wgPrivate}\n`, { mode: 0o600 });
    // The userspace implementation as an operator installs it: an executable on a path.
    execWrite(binDir, "edgetun-go", `#!/bin/sh\nexec "${process.execPath}" "${wgoEntry}" "$@"\n`);
    execWrite(
      binDir,
      "resolvconf",
      `#!/bin/sh\n{ echo "resolvconf $*"; cat; } >> "${resolvconfLog}"\n`,
    );
    env = {
      ...process.env,
      PATH: `${binDir}:${process.env.PATH}`,
      WG_QUICK_USERSPACE_IMPLEMENTATION: implementation,
      EDGETUN_METRICS_LISTEN: "off",
    };
    // The far side: Debian's wireguard-go, configured with wg.
    bed.spawn(wgNs, "wireguard-go", ["-f", wgName]);
    await waitFor("wireguard-go's socket", () => existsSync(`/var/run/wireguard/${wgName}.sock`));
    bed.exec(wgNs, "wg", [
      "set",
      wgName,
      "private-key",
      wgKeyFile,
      "listen-port",
      "51820",
      "peer",
      publicKeyOf(etPrivate),
      "allowed-ips",
      "10.61.0.1/32,fd61::1/128",
    ]);
    for (const address of ["10.61.0.2/24", "fd61::2/64", "10.62.0.1/24"]) {
      bed.exec(wgNs, "ip", ["address", "add", address, "dev", wgName]);
    }
    bed.exec(wgNs, "ip", ["link", "set", wgName, "up"]);
  }, 60_000);

  afterAll(() => {
    bed.cleanup();
    for (const name of [...namesUsed, wgName]) {
      rmSync(`/var/run/wireguard/${name}.sock`, { force: true });
      rmSync(`/run/edgetun/${name}.pid`, { force: true });
    }
    rmSync(tmp, { recursive: true, force: true });
  }, 30_000);

  function execWrite(dir: string, name: string, text: string): void {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, name), text);
    chmodSync(join(dir, name), 0o755);
  }

  /** An unmodified wg-quick file: no PrivateKey (a hook sets it), hooks, DNS, SaveConfig. */
  function writeConfig(name: string, extra: string[] = []): { file: string; hookLog: string } {
    const hookLog = join(tmp, `${name}.hooks`);
    const file = join(tmp, `${name}.conf`);
    const text = [
      "[Interface]",
      "Address = 10.61.0.1/24, fd61::1/64",
      "DNS = 10.61.0.53, corp.example",
      `PreUp = echo "pre-up %i" >> ${hookLog}`,
      `PostUp = wg set %i private-key ${etKeyFile}`,
      "PostUp = nft add table inet hook_%i",
      `PostUp = echo "post-up %i" >> ${hookLog}`,
      `PreDown = echo "pre-down %i" >> ${hookLog}`,
      "PostDown = nft delete table inet hook_%i",
      `PostDown = echo "post-down %i" >> ${hookLog}`,
      "SaveConfig = true",
      ...extra,
      "",
      "[Peer]",
      `PublicKey = ${publicKeyOf(wgPrivate)}`,
      "Endpoint = 10.63.0.2:51820",
      "AllowedIPs = 10.61.0.2/32, fd61::2/128, 10.62.0.0/24",
      "PersistentKeepalive = 25",
      "",
    ].join("\n");
    writeFileSync(file, text, { mode: 0o600 });
    namesUsed.push(name);
    return { file, hookLog };
  }

  function nftTables(): string {
    return bed.exec(etNs, "nft", ["list", "tables"]);
  }

  function linkExists(name: string): boolean {
    try {
      bed.exec(etNs, "ip", ["link", "show", "dev", name]);
      return true;
    } catch {
      return false;
    }
  }

  /** What both ways of bringing the file up must show. */
  async function expectUp(name: string): Promise<number> {
    const addresses = bed.exec(etNs, "ip", ["-brief", "address", "show", "dev", name]);
    expect(addresses).toContain("10.61.0.1/24");
    expect(addresses).toContain("fd61::1/64");
    expect(bed.exec(etNs, "ip", ["route", "show", "dev", name])).toContain("10.62.0.0/24");
    expect(nftTables()).toContain(`hook_${name}`);
    expect(bed.exec(etNs, "wg", ["show", name, "public-key"]).trim()).toBe(publicKeyOf(etPrivate));
    // Traffic: through the tunnel to the peer's address and to the prefix behind it.
    for (const target of ["10.61.0.2", "10.62.0.1", "fd61::2"]) {
      const ping = await runAsync("ip", [
        "netns",
        "exec",
        etNs,
        "ping",
        "-c",
        "2",
        "-W",
        "5",
        target,
      ]);
      expect(ping.code, `ping ${target}: ${ping.stdout}${ping.stderr}`).toBe(0);
    }
    const pid = Number(readFileSync(`/run/edgetun/${name}.pid`, "utf8"));
    expect(processAlive(pid)).toBe(true);
    return pid;
  }

  async function expectNothingLeft(name: string, pid: number): Promise<void> {
    await waitFor(`the daemon (pid ${pid}) to exit`, () => !processAlive(pid), 15_000);
    expect(linkExists(name)).toBe(false);
    expect(existsSync(`/var/run/wireguard/${name}.sock`)).toBe(false);
    expect(existsSync(`/run/edgetun/${name}.pid`)).toBe(false);
    expect(nftTables()).not.toContain(`hook_${name}`);
  }

  function expectSaved(file: string, name: string): void {
    const saved = readFileSync(file, "utf8");
    expect(saved).toContain("Address = 10.61.0.1/24");
    expect(saved).toContain("SaveConfig = true");
    expect(saved).toContain("PostUp = nft add table inet hook_%i");
    expect(saved).toContain(`PrivateKey = ${etPrivate}`);
    expect(saved).toContain(`PublicKey = ${publicKeyOf(wgPrivate)}`);
    expect(saved).toContain("Endpoint = 10.63.0.2:51820");
    expect(saved).toMatch(/AllowedIPs = .*10\.62\.0\.0\/24/);
    expect(saved).toContain("PersistentKeepalive = 25");
    expect(name).not.toBe("");
  }

  const hookSequence = (name: string) => [
    `pre-up ${name}`,
    `post-up ${name}`,
    `pre-down ${name}`,
    `post-down ${name}`,
  ];

  /** What was set and removed; wg-quick's SaveConfig also lists the record (`-l`) to save it. */
  const resolvconfCalls = () =>
    existsSync(resolvconfLog)
      ? readFileSync(resolvconfLog, "utf8")
          .split("\n")
          .filter((line) => !line.startsWith("resolvconf -l "))
          .join("\n")
      : "";

  it("wg-quick up and down with WG_QUICK_USERSPACE_IMPLEMENTATION=edgetun-go", async () => {
    const name = nextName();
    const { file, hookLog } = writeConfig(name);
    rmSync(resolvconfLog, { force: true });
    const upResult = await runAsync("ip", ["netns", "exec", etNs, "wg-quick", "up", file], env);
    expect(upResult.code, upResult.stderr).toBe(0);
    expect(upResult.stderr).toContain(`${implementation} ${name}`);
    const pid = await expectUp(name);
    const downResult = await runAsync("ip", ["netns", "exec", etNs, "wg-quick", "down", file], env);
    expect(downResult.code, downResult.stderr).toBe(0);
    await expectNothingLeft(name, pid);
    expect(readFileSync(hookLog, "utf8").trim().split("\n")).toEqual(hookSequence(name));
    expect(resolvconfCalls()).toBe(
      `resolvconf -a ${name} -m 0 -x\nnameserver 10.61.0.53\nsearch corp.example\n` +
        `resolvconf -d ${name} -f\n`,
    );
    expectSaved(file, name);
  }, 90_000);

  it("wg-quick with MTU = 8920: jumbo pings pass, and edgetun-go follows the link's MTU", async () => {
    const name = nextName();
    const { file } = writeConfig(name, ["MTU = 8920"]);
    const linkMtu = (ns: string, link: string) =>
      Number(/ mtu (\d+) /.exec(bed.exec(ns, "ip", ["link", "show", "dev", link]))?.[1]);
    bed.exec(wgNs, "ip", ["link", "set", wgName, "mtu", "8920"]);
    try {
      // wg-quick starts the daemon (the default 1420), then `ip link set mtu 8920 up`.
      const upResult = await runAsync("ip", ["netns", "exec", etNs, "wg-quick", "up", file], env);
      expect(upResult.code, upResult.stderr).toBe(0);
      expect(linkMtu(etNs, name)).toBe(8920);
      // 8828-byte packets that may not be fragmented (-M do): each way through the tunnel.
      for (const [ns, target] of [
        [etNs, "10.61.0.2"],
        [wgNs, "10.61.0.1"],
      ] as const) {
        const ping = await runAsync("ip", [
          ...["netns", "exec", ns, "ping", "-c", "2", "-W", "5", "-M", "do", "-s", "8800", target],
        ]);
        expect(ping.code, `ping -s 8800 ${target}: ${ping.stdout}${ping.stderr}`).toBe(0);
      }
      // Beyond what its buffers hold, the daemon sets the link back to its maximum.
      bed.exec(etNs, "ip", ["link", "set", name, "mtu", "9200"]);
      await waitFor("the daemon to set the MTU back to 9000", () => linkMtu(etNs, name) === 9000);
    } finally {
      const downResult = await runAsync(
        "ip",
        ["netns", "exec", etNs, "wg-quick", "down", file],
        env,
      );
      bed.exec(wgNs, "ip", ["link", "set", wgName, "mtu", "1420"]);
      expect(downResult.code, downResult.stderr).toBe(0);
    }
  }, 90_000);

  it("edgetun up and down with the same file: the same hooks, DNS, traffic and saved file", async () => {
    const name = nextName();
    const { file, hookLog } = writeConfig(name);
    rmSync(resolvconfLog, { force: true });
    const daemon = spawn(
      "ip",
      ["netns", "exec", etNs, process.execPath, cli, "up", file, "--metrics-listen", "off"],
      { stdio: ["ignore", "pipe", "pipe"], env },
    );
    let output = "";
    daemon.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    daemon.stderr.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    const exited = new Promise<number | null>((resolve) => daemon.on("exit", resolve));
    try {
      await waitFor(
        "the post-up hook",
        () => existsSync(hookLog) && readFileSync(hookLog, "utf8").includes("post-up"),
        20_000,
      );
      await waitFor("the pid file", () => existsSync(`/run/edgetun/${name}.pid`));
      const pid = await expectUp(name);
      // `edgetun show NAME FIELD` prints what `wg show NAME FIELD` prints, and `all` likewise.
      for (const field of [
        "public-key",
        "listen-port",
        "fwmark",
        "peers",
        "endpoints",
        "allowed-ips",
        "persistent-keepalive",
      ]) {
        const ours = await runAsync(process.execPath, [cli, "show", name, field], env);
        expect(ours.code, ours.stderr).toBe(0);
        expect(ours.stdout, field).toBe(bed.exec(etNs, "wg", ["show", name, field]));
        const ourAll = await runAsync(process.execPath, [cli, "show", "all", field], env);
        const theirAll = bed.exec(etNs, "wg", ["show", "all", field]);
        const mine = (text: string) =>
          text.split("\n").filter((line) => line.startsWith(`${name}\t`));
        expect(mine(ourAll.stdout), `all ${field}`).toEqual(mine(theirAll));
        expect(mine(ourAll.stdout).length, `all ${field}`).toBeGreaterThan(0);
      }
      const bad = await runAsync(process.execPath, [cli, "show", name, "nonsense"], env);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain("Usage: edgetun show");
      const down = await runAsync(process.execPath, [cli, "down", name], env);
      expect(down.code, down.stderr).toBe(0);
      expect(await exited).toBe(0);
      await expectNothingLeft(name, pid);
      expect(readFileSync(hookLog, "utf8").trim().split("\n")).toEqual(hookSequence(name));
      expect(resolvconfCalls()).toBe(
        `resolvconf -a ${name} -m 0 -x\nnameserver 10.61.0.53\nsearch corp.example\n` +
          `resolvconf -d ${name} -f\n`,
      );
      expectSaved(file, name);
    } catch (error) {
      console.log(output);
      throw error;
    } finally {
      if (daemon.exitCode === null && daemon.pid) process.kill(daemon.pid, "SIGTERM");
    }
  }, 180_000);

  it("a failing PreUp stops edgetun up before anything changes", async () => {
    const name = nextName();
    const { file, hookLog } = writeConfig(name, ["PreUp = false"]);
    const result = await runAsync(
      "ip",
      ["netns", "exec", etNs, process.execPath, cli, "up", file, "--metrics-listen", "off"],
      env,
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("PreUp hook failed (exit status 1): false");
    // The first PreUp ran, nothing after it.
    expect(readFileSync(hookLog, "utf8").trim()).toBe(`pre-up ${name}`);
    expect(linkExists(name)).toBe(false);
    expect(existsSync(`/var/run/wireguard/${name}.sock`)).toBe(false);
    expect(nftTables()).not.toContain(`hook_${name}`);
  }, 30_000);

  it("wg syncconf takes `edgetun strip` of a file with PrivateKeyFile (wg-quick strip refuses it to wg)", async () => {
    const name = nextName();
    namesUsed.push(name);
    const file = join(tmp, `${name}.conf`);
    writeFileSync(
      file,
      [
        "[Interface]",
        `PrivateKeyFile = ${etKeyFile}`,
        "Address = 10.65.0.1/24",
        "PostUp = true",
        "ListenPort = 51999",
        "",
        "[Peer]",
        `PublicKey = ${publicKeyOf(wgPrivate)}`,
        "AllowedIPs = 10.65.0.2/32",
        "",
      ].join("\n"),
    );
    const stripped = await runAsync(process.execPath, [cli, "strip", file], env);
    expect(stripped.code, stripped.stderr).toBe(0);
    expect(stripped.stdout).toContain(`PrivateKey = ${etPrivate}`);
    expect(stripped.stdout).not.toMatch(/PrivateKeyFile|Address|PostUp/);
    const started = await runAsync("ip", ["netns", "exec", etNs, implementation, name], env);
    expect(started.code, started.stderr).toBe(0);
    const pid = Number(readFileSync(`/run/edgetun/${name}.pid`, "utf8"));
    try {
      const strippedFile = join(tmp, `${name}.stripped`);
      writeFileSync(strippedFile, stripped.stdout, { mode: 0o600 });
      const sync = await runAsync(
        "ip",
        ["netns", "exec", etNs, "wg", "syncconf", name, strippedFile],
        env,
      );
      expect(sync.code, sync.stderr).toBe(0);
      expect(bed.exec(etNs, "wg", ["show", name, "public-key"]).trim()).toBe(
        publicKeyOf(etPrivate),
      );
      expect(bed.exec(etNs, "wg", ["show", name, "listen-port"]).trim()).toBe("51999");
      // The unstripped file is what wg refuses.
      const raw = await runAsync("ip", ["netns", "exec", etNs, "wg", "syncconf", name, file], env);
      expect(raw.code).not.toBe(0);
      expect(raw.stderr).toContain("Line unrecognized");
    } finally {
      bed.exec(etNs, "ip", ["link", "delete", "dev", name]);
      await waitFor("edgetun-go to exit", () => !processAlive(pid), 15_000);
    }
  }, 40_000);

  for (const how of ["edgetun up", "edgetun-go"] as const) {
    it(`deleting the interface under ${how} ends it: status 0, socket and pid file gone`, async () => {
      const name = nextName();
      namesUsed.push(name);
      const file = join(tmp, `${name}.conf`);
      writeFileSync(file, `[Interface]\nPrivateKey = ${etPrivate}\nAddress = 10.64.0.1/24\n`);
      const args =
        how === "edgetun up"
          ? [cli, "up", file, "--metrics-listen", "off"]
          : [wgoEntry, "--foreground", name];
      const daemon = spawn("ip", ["netns", "exec", etNs, process.execPath, ...args], {
        stdio: ["ignore", "pipe", "pipe"],
        env,
      });
      let output = "";
      daemon.stderr.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
      const exited = new Promise<number | null>((resolve) => daemon.on("exit", resolve));
      try {
        await waitFor("the pid file", () => existsSync(`/run/edgetun/${name}.pid`), 20_000);
        await sleep(200);
        bed.exec(etNs, "ip", ["link", "delete", "dev", name]);
        const code = await Promise.race([exited, sleep(15_000).then(() => "timeout")]);
        expect(code, output).toBe(0);
        expect(output).not.toContain("Unknown system error");
        expect(existsSync(`/var/run/wireguard/${name}.sock`)).toBe(false);
        expect(existsSync(`/run/edgetun/${name}.pid`)).toBe(false);
      } finally {
        if (daemon.exitCode === null && daemon.pid) process.kill(daemon.pid, "SIGTERM");
      }
    }, 40_000);
  }
});
