// `edgetun demo` end to end: runDemo makes two namespaces, runs the built daemon in each (from
// dist/, so the build must exist), pings, moves a few megabytes, shows both interfaces and
// removes everything. Checked here: the exit code, what it narrates, and that nothing is left.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { runDemo } from "../../src/cli/demo.js";
import { commandExists, tunUnavailableReason } from "../support/netns.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const builtCli = join(repoRoot, "dist", "src", "cli", "main.js");
const builtDemo = join(repoRoot, "dist", "src", "cli", "demo.js");

function unavailableBecause(): string | null {
  if (!existsSync(builtCli)) return "needs the build (npm run build): the daemons run from dist/";
  return tunUnavailableReason();
}

const skipReason = unavailableBecause();
if (skipReason) console.warn(`edgetun demo tests skipped: ${skipReason}`);

/** A stream that keeps what is written to it. */
function collector(): { out: Writable; text: () => string } {
  const chunks: string[] = [];
  const out = new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return { out, text: () => chunks.join("") };
}

function demoNamespaces(): string[] {
  return execFileSync("ip", ["netns", "list"], { encoding: "utf8" })
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((name) => name.startsWith("edgetun-demo-"));
}

function demoSockets(): string[] {
  try {
    return readdirSync("/var/run/wireguard").filter((file) =>
      /^demo(hub|edge)[0-9a-f]{4}\.sock$/.test(file),
    );
  } catch {
    return [];
  }
}

/** What a successful run must have said, and that it left nothing behind. */
function expectWorkedAndCleanedUp(code: number, text: string): void {
  expect(code, text).toBe(0);
  // Ping replies through the tunnel (from ping or the Node stand-in).
  expect(text).toMatch(/\d+ bytes from 10\.214\.0\.1: (icmp|udp)_seq=1 /);
  expect(text).toMatch(/[1-3] of 3 pings answered through the tunnel/);
  // A throughput figure.
  const rate = /: ([\d.]+) Mbit\/s through the tunnel/.exec(text);
  expect(rate, text).not.toBeNull();
  expect(Number(rate![1])).toBeGreaterThan(0);
  // Both interfaces shown, each with its peer and a handshake.
  const hub = /interface: (demohub[0-9a-f]{4})/.exec(text)?.[1];
  const edge = /interface: (demoedge[0-9a-f]{4})/.exec(text)?.[1];
  expect(hub, text).toBeDefined();
  expect(edge, text).toBeDefined();
  expect(text.match(/^ *peer: /gm)).toHaveLength(2);
  expect(text.match(/latest handshake: /g)).toHaveLength(2);
  expect(text).toContain("done: nothing is left behind.");
  // Nothing left: namespaces, control sockets, pid files, daemons, temp files.
  expect(demoNamespaces()).toEqual([]);
  expect(demoSockets()).toEqual([]);
  for (const name of [hub!, edge!]) {
    expect(existsSync(`/var/run/wireguard/${name}.sock`)).toBe(false);
    expect(existsSync(`/run/edgetun/${name}.pid`)).toBe(false);
  }
  for (const [, pid] of text.matchAll(/\(pid (\d+)\)/g)) {
    expect(existsSync(`/proc/${pid}`), `daemon ${pid} still running`).toBe(false);
  }
  const configDir = /(\/\S*edgetun-demo-[A-Za-z0-9]{6})\/demohub/.exec(text)?.[1];
  expect(configDir, text).toBeDefined();
  expect(existsSync(configDir!)).toBe(false);
}

describe.skipIf(skipReason !== null)(
  `edgetun demo${skipReason ? ` (skipped: ${skipReason})` : ""}`,
  () => {
    it("runs the tunnel end to end and leaves nothing behind", async () => {
      const { out, text } = collector();
      const code = await runDemo({ megabytes: 5, out });
      expectWorkedAndCleanedUp(code, text());
      if (commandExists("ping")) expect(text()).toMatch(/icmp_seq=1 /);
      if (commandExists("iperf3")) expect(text()).toContain("through the tunnel (iperf3)");
    }, 90_000);

    it("uses its own Node stand-ins when ping and iperf3 are not installed", async () => {
      // A PATH with nothing on it but `ip`: the demo must fall back for ping and iperf3.
      const ip = execFileSync("sh", ["-c", "command -v ip"], { encoding: "utf8" }).trim();
      const bin = mkdtempSync(join(tmpdir(), "edgetun-demo-test-path-"));
      symlinkSync(ip, join(bin, "ip"));
      const savedPath = process.env["PATH"];
      process.env["PATH"] = bin;
      const { out, text } = collector();
      try {
        const code = await runDemo({ megabytes: 5, out });
        expect(text()).toContain("UDP echo in Node, as ping is not installed");
        expect(text()).toContain("Node, as iperf3 is not installed");
        expect(text()).toMatch(/udp_seq=1 /);
        expectWorkedAndCleanedUp(code, text());
      } finally {
        process.env["PATH"] = savedPath;
        rmSync(bin, { recursive: true, force: true });
      }
    }, 90_000);
  },
);

describe("edgetun demo refuses what it cannot do", () => {
  it("rejects a bad --megabytes before touching anything", async () => {
    const { out, text } = collector();
    expect(await runDemo({ megabytes: Number.NaN, out })).toBe(1);
    expect(text()).toContain("--megabytes must be a number above 0");
    expect(await runDemo({ megabytes: 0, out })).toBe(1);
  });

  const setprivMissing = !commandExists("setpriv") || process.getuid?.() !== 0;
  it.skipIf(setprivMissing || !existsSync(builtDemo))(
    "says it needs root and exits 2 when not root (needs root, setpriv and the build)",
    () => {
      const script = `import(${JSON.stringify(builtDemo)}).then(async ({ runDemo }) => { process.exitCode = await runDemo({ megabytes: 1 }); });`;
      const result = spawnSync(
        "setpriv",
        ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, "-e", script],
        { encoding: "utf8", timeout: 20_000 },
      );
      expect(result.status, result.stderr).toBe(2);
      expect(result.stdout).toContain("This machine cannot run the demo");
      expect(result.stdout).toContain("root");
      expect(demoNamespaces()).toEqual([]);
    },
  );
});
