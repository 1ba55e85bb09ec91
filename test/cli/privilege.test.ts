// Faults and privilege: the daemon runs as an unprivileged user holding only CAP_NET_ADMIN (as
// systemd's User= with AmbientCapabilities= starts it), given its runtime directories the way
// systemd's RuntimeDirectory= makes them; without them it says what to do and leaves nothing
// behind; and a pid file and control socket left by a killed instance do not stop the next.
// The runtime directories are private tmpfs mounts in a mount namespace of the test's own, so
// the host's /run is never touched.
import { execFile } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { Testbed, tunUnavailableReason, waitFor } from "../support/netns.js";

const execFileAsync = promisify(execFile);
const root = new URL("../..", import.meta.url).pathname;
const cli = join(root, "dist/src/cli/main.js");
const NOBODY = 65534;
const skipReason =
  tunUnavailableReason(["ping", "setpriv", "unshare", "mount"]) ??
  (existsSync(cli) ? null : "needs the build (npm run build)");
if (skipReason) console.warn(`privilege tests skipped: ${skipReason}`);

function output(child: ChildProcess): () => string {
  let text = "";
  child.stdout?.on("data", (chunk: Buffer) => (text += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (text += chunk.toString()));
  return () => text;
}

/** Shell-quotes one argument. */
function quote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

describe.skipIf(skipReason !== null)("privilege and leftovers", () => {
  const bed = new Testbed();
  const dir = mkdtempSync(join(tmpdir(), "edgetun-priv-"));
  chmodSync(dir, 0o755);
  afterAll(() => {
    bed.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  const hubKey = generatePrivateKey();
  const edgeKey = generatePrivateKey();
  const tag = bed.id.slice(-6);

  /**
   * Runs `edgetun up` in `ns` as nobody with CAP_NET_ADMIN alone, in a mount namespace where
   * the runtime directories are fresh tmpfs mounts owned by nobody (when `runtimeDirectories`).
   * The shell prints its pid first; `exec` keeps it for the daemon.
   */
  function upAsNobody(ns: string, config: string, name: string, runtimeDirectories: boolean) {
    const mounts = runtimeDirectories
      ? ["/run/wireguard", "/run/edgetun"].map(
          (path) =>
            `mkdir -p ${path} && mount -t tmpfs -o mode=0755,uid=${NOBODY},gid=${NOBODY} tmpfs ${path} && `,
        )
      : [];
    const script =
      mounts.join("") +
      `echo pid=$$ && exec setpriv --reuid=${NOBODY} --regid=${NOBODY} --clear-groups ` +
      `--inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin --bounding-set=-all,+net_admin ` +
      `${quote(process.execPath)} ${quote(cli)} up ${quote(config)} --interface ${name} ` +
      `--metrics-listen off`;
    return bed.spawn(ns, "unshare", ["--mount", "--propagation", "private", "sh", "-c", script]);
  }

  it("runs as nobody with only CAP_NET_ADMIN, given its runtime directories", async () => {
    const hubNs = bed.namespace("hub");
    const edgeNs = bed.namespace("edge");
    bed.link(hubNs, "10.219.1.1/24", edgeNs, "10.219.1.2/24");
    const hubName = `ph${tag}`;
    const edgeName = `pe${tag}`;
    writeFileSync(
      join(dir, "hub.conf"),
      `[Interface]\nPrivateKey = ${hubKey}\nListenPort = 51820\nAddress = 10.220.0.1/24\n` +
        `[Peer]\nPublicKey = ${publicKeyOf(edgeKey)}\nAllowedIPs = 10.220.0.2/32\n`,
      { mode: 0o600 },
    );
    const edgeConf = join(dir, "edge.conf");
    writeFileSync(
      edgeConf,
      `[Interface]\nPrivateKey = ${edgeKey}\nAddress = 10.220.0.2/24\n` +
        `[Peer]\nPublicKey = ${publicKeyOf(hubKey)}\nEndpoint = 10.219.1.1:51820\n` +
        `AllowedIPs = 10.220.0.0/24\nPersistentKeepalive = 1\n`,
      { mode: 0o600 },
    );
    chownSync(edgeConf, NOBODY, NOBODY);
    const hub = bed.spawn(hubNs, process.execPath, [
      cli,
      "up",
      join(dir, "hub.conf"),
      "--interface",
      hubName,
      "--metrics-listen",
      "off",
    ]);
    const hubLog = output(hub);
    const edgeLog = output(upAsNobody(edgeNs, edgeConf, edgeName, true));
    await waitFor(
      "both daemons",
      () => hubLog().includes('"interface up"') && edgeLog().includes('"interface up"'),
      15_000,
    );
    const pid = Number(/pid=(\d+)/.exec(edgeLog())?.[1]);
    const { stdout: status } = await execFileAsync("cat", [`/proc/${pid}/status`]);
    expect(status).toMatch(new RegExp(`^Uid:\\s+${NOBODY}\\s+${NOBODY}`, "m"));
    // Effective capabilities: CAP_NET_ADMIN (bit 12) and nothing else.
    expect(/^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1]).toBe("0000000000001000");
    // From the unprivileged edge, which knows the hub's endpoint: its first packet waits for the
    // handshake it starts, where a ping from the hub could beat the edge's first handshake
    // (the hub has no endpoint for the edge until then) and be dropped.
    await execFileAsync("ip", [
      "netns",
      "exec",
      edgeNs,
      "ping",
      "-c",
      "3",
      "-W",
      "5",
      "10.220.0.1",
    ]);
    expect(edgeLog()).not.toContain("without CAP_NET_ADMIN");
  }, 60_000);

  it("without its runtime directories, says what to do, logs no 'interface up', leaves no link", async () => {
    const ns = bed.namespace("bare");
    const name = `pb${tag}`;
    const conf = join(dir, "bare.conf");
    writeFileSync(conf, `[Interface]\nPrivateKey = ${edgeKey}\nAddress = 10.221.0.1/24\n`, {
      mode: 0o600,
    });
    chownSync(conf, NOBODY, NOBODY);
    const child = upAsNobody(ns, conf, name, false);
    const log = output(child);
    const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    expect(code).toBe(1);
    expect(log()).toMatch(
      /cannot use \/var\/run\/wireguard \(EACCES\).*RuntimeDirectory=wireguard/,
    );
    expect(log()).not.toContain('"interface up"');
    expect(bed.exec(ns, "ip", ["-o", "link", "show"])).not.toContain(name);
  }, 30_000);

  it("starts over a pid file and control socket left by a killed instance", async () => {
    const ns = bed.namespace("stale");
    const name = `ps${tag}`;
    const conf = join(dir, "stale.conf");
    writeFileSync(conf, `[Interface]\nPrivateKey = ${edgeKey}\nAddress = 10.222.0.1/24\n`, {
      mode: 0o600,
    });
    const start = () => {
      const child = bed.spawn(ns, process.execPath, [
        cli,
        "up",
        conf,
        "--interface",
        name,
        "--metrics-listen",
        "off",
      ]);
      return { child, log: output(child) };
    };
    const first = start();
    await waitFor("the first instance", () => first.log().includes('"interface up"'), 15_000);
    const pidFile = `/run/edgetun/${name}.pid`;
    const socket = `/var/run/wireguard/${name}.sock`;
    expect(existsSync(pidFile) && existsSync(socket)).toBe(true);
    // SIGKILL: nothing is cleaned up; the TUN device goes with the process.
    const { stdout: pgrep } = await execFileAsync("cat", [pidFile]);
    process.kill(Number(pgrep.trim()), "SIGKILL");
    await new Promise<void>((resolve) => first.child.on("exit", () => resolve()));
    expect(existsSync(pidFile) && existsSync(socket)).toBe(true);

    const second = start();
    await waitFor("the second instance", () => second.log().includes('"interface up"'), 15_000);
    const { stdout: pid } = await execFileAsync("cat", [pidFile]);
    expect(Number(pid.trim())).not.toBe(Number(pgrep.trim()));
    second.child.kill("SIGTERM");
    await new Promise<void>((resolve) => second.child.on("exit", () => resolve()));
    expect(existsSync(pidFile) || existsSync(socket)).toBe(false);
  }, 60_000);
});
