// bench:latency's pieces that run without root: the 64-byte request/response tool on loopback
// (real sockets, a real round trip per sample) and the command line refusing bad input
// before it creates anything.
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";

const echoJs = fileURLToPath(new URL("../../dist/bench/testbed/echo.js", import.meta.url));
const latencyJs = fileURLToPath(new URL("../../dist/bench/latency.js", import.meta.url));
const built = existsSync(echoJs) && existsSync(latencyJs);
if (!built) console.warn("bench:latency tests skipped: dist/bench is not built (npm run build)");

describe.skipIf(!built)("bench:latency", () => {
  const servers: Array<ReturnType<typeof spawn>> = [];
  afterEach(() => {
    for (const server of servers.splice(0)) if (server.pid) process.kill(server.pid, "SIGTERM");
  });

  it("measures 64-byte request/response round trips on loopback", async () => {
    const server = spawn(process.execPath, [echoJs, "server", "0", "127.0.0.1"]);
    servers.push(server);
    const port = await new Promise<number>((resolve, reject) => {
      let text = "";
      server.stdout.setEncoding("utf8").on("data", (chunk: string) => {
        text += chunk;
        const match = /^listening (\d+)/.exec(text);
        if (match) resolve(Number(match[1]));
      });
      server.on("exit", () => reject(new Error(`echo server exited: ${text}`)));
    });
    const client = spawnSync(
      process.execPath,
      [echoJs, "client", "127.0.0.1", `${port}`, "0.5", "64"],
      { encoding: "utf8", timeout: 20_000 },
    );
    expect(client.status, client.stderr).toBe(0);
    const report = JSON.parse(client.stdout.trim()) as Record<string, number>;
    expect(report["count"]).toBeGreaterThan(10);
    expect(report["p50Us"]).toBeGreaterThan(0);
    expect(report["p99Us"]).toBeGreaterThanOrEqual(report["p50Us"]!);
    expect(report["meanUs"]).toBeGreaterThan(0);
    expect(report["perSecond"]).toBeCloseTo(report["count"]! / 0.5, 5);
  }, 30_000);

  it("refuses a bad --sets or an unknown option with exit 2, before anything is created", () => {
    for (const args of [["--sets", "0"], ["--sets", "many"], ["--bogus"]]) {
      const result = spawnSync(process.execPath, [latencyJs, ...args], {
        encoding: "utf8",
        timeout: 20_000,
      });
      expect(result.status, `${args.join(" ")}: ${result.stderr}`).toBe(2);
      expect(result.stderr).toMatch(/bench:latency/);
    }
  });
});
