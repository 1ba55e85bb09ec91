// The container image (scripts/build-image.sh) run as the Kubernetes manifests run it: as uid
// 10001, every capability dropped but NET_ADMIN, /dev/net/tun the only device, a read-only root
// with an in-memory /run, the configuration mounted read-only. Podman joins a namespace this
// test creates (--network ns:…); edgetun in the container brings the interface up from the
// file and pings pass through the tunnel to Debian's wireguard-go in a second namespace. A
// stop (SIGTERM) ends it with exit 0 and the interface gone.
//
// Runs where the image was built (podman, the image edgetun:<version>); CI does not build it.
// crun refuses hosts with cgroup controllers on both hierarchies ("cgroups in hybrid mode not
// supported"), so runc is used when installed; the container's rlimits are set below the
// host's own hard limits, which podman's defaults exceed on some hosts.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { runSync as run } from "../../src/host/toolkit/process.js";
import { Testbed, commandExists, netnsUnavailableReason, waitFor } from "../support/netns.js";

const version = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  }
).version;
const image = `localhost/edgetun:${version}`;
const imageUid = 10001;

function imageExists(): boolean {
  try {
    run("podman", ["image", "exists", image]);
    return true;
  } catch {
    return false;
  }
}

const skipReason =
  netnsUnavailableReason(["podman", "wireguard-go", "wg", "ping"]) ??
  (existsSync("/dev/net/tun") ? null : "needs /dev/net/tun") ??
  (imageExists() ? null : `needs the image ${image} (scripts/build-image.sh builds it)`);
if (skipReason) console.warn(`container image test skipped: ${skipReason}`);

describe.skipIf(skipReason !== null)("the container image", () => {
  const bed = new Testbed();
  const tmp = mkdtempSync(join(tmpdir(), "edgetun-image-"));
  const container = `edgetun-test-${randomBytes(4).toString("hex")}`;
  const wgName = `wi${randomBytes(3).toString("hex")}`;
  const edgePrivate = generatePrivateKey();
  const peerPrivate = generatePrivateKey();
  let edgeNs = "";
  let peerNs = "";
  let exit: Promise<number | null> = Promise.resolve(null);
  let output = "";

  beforeAll(async () => {
    edgeNs = bed.namespace("ct");
    peerNs = bed.namespace("wg");
    bed.link(edgeNs, "10.66.0.1/24", peerNs, "10.66.0.2/24");
    const peerKey = join(tmp, "peer.key");
    writeFileSync(peerKey, `${peerPrivate}\n`, { mode: 0o600 });
    bed.spawn(peerNs, "wireguard-go", ["-f", wgName]);
    await waitFor("wireguard-go's socket", () => existsSync(`/var/run/wireguard/${wgName}.sock`));
    bed.exec(peerNs, "wg", [
      "set",
      wgName,
      "private-key",
      peerKey,
      "listen-port",
      "51820",
      "peer",
      publicKeyOf(edgePrivate),
      "allowed-ips",
      "10.67.0.1/32",
    ]);
    bed.exec(peerNs, "ip", ["address", "add", "10.67.0.2/24", "dev", wgName]);
    bed.exec(peerNs, "ip", ["link", "set", wgName, "up"]);

    // Readable by the image's user only, as the README asks of a mounted configuration.
    const configDir = join(tmp, "etc");
    run("mkdir", ["-m", "0750", configDir]);
    const config = join(configDir, "edge0.conf");
    writeFileSync(
      config,
      [
        "[Interface]",
        `PrivateKey = ${edgePrivate}`,
        "Address = 10.67.0.1/24",
        "",
        "[Peer]",
        `PublicKey = ${publicKeyOf(peerPrivate)}`,
        "Endpoint = 10.66.0.2:51820",
        "AllowedIPs = 10.67.0.2/32",
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    chownSync(configDir, imageUid, imageUid);
    chownSync(config, imageUid, imageUid);

    const child = spawn(
      "podman",
      [
        "run",
        "--rm",
        "--name",
        container,
        ...(commandExists("runc") ? ["--runtime", "runc"] : []),
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
        "--network",
        `ns:/run/netns/${edgeNs}`,
        "--cap-drop=all",
        "--cap-add=NET_ADMIN",
        "--device",
        "/dev/net/tun",
        "--user",
        `${imageUid}:${imageUid}`,
        "--read-only",
        "--read-only-tmpfs=false",
        "--tmpfs",
        "/run:rw,mode=0777",
        "-e",
        "EDGETUN_METRICS_LISTEN=off",
        "-v",
        `${configDir}:/etc/edgetun:ro`,
        image,
        "up",
        "/etc/edgetun/edge0.conf",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    exit = new Promise((resolve) => child.on("close", (code) => resolve(code)));
    await waitFor(
      "the container's interface",
      () => {
        try {
          return bed
            .exec(edgeNs, "ip", ["-brief", "address", "show", "dev", "edge0"])
            .includes("10.67.0.1/24");
        } catch {
          return false;
        }
      },
      90_000,
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}; podman said: ${output}`);
    });
  }, 120_000);

  afterAll(() => {
    try {
      run("podman", ["rm", "--force", "--time", "2", container]);
    } catch {
      // gone already
    }
    bed.cleanup();
    rmSync(`/var/run/wireguard/${wgName}.sock`, { force: true });
    rmSync(tmp, { recursive: true, force: true });
  }, 30_000);

  it("runs as uid 10001 with NET_ADMIN as its only capability", () => {
    const pid = run("podman", ["inspect", "--format", "{{.State.Pid}}", container]).trim();
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    expect(status).toMatch(/^Uid:\s+10001\s+10001\s+10001\s+10001$/m);
    const netAdmin = (1n << 12n).toString(16).padStart(16, "0");
    for (const set of ["CapEff", "CapPrm", "CapBnd"]) {
      expect(status).toMatch(new RegExp(`^${set}:\\s+${netAdmin}$`, "m"));
    }
  });

  it("passes pings through the tunnel to wireguard-go both ways", () => {
    expect(bed.exec(edgeNs, "ping", ["-c", "3", "-W", "5", "10.67.0.2"])).toContain("3 received");
    expect(bed.exec(peerNs, "ping", ["-c", "3", "-W", "5", "10.67.0.1"])).toContain("3 received");
  }, 60_000);

  it("stops cleanly: exit 0 and the interface gone", async () => {
    run("podman", ["stop", "--time", "10", container]);
    expect(await exit, output).toBe(0);
    expect(() => bed.exec(edgeNs, "ip", ["link", "show", "dev", "edge0"])).toThrow();
  }, 60_000);
});
