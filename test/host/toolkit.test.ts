// The process and namespace toolkit that `edgetun demo`, the tests and the benchmarks share:
// commands fail with their stderr and a stable code, processes are ended by PID only, and a
// NetworkLab's namespaces go away with everything in them, whatever was left running.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { StepError } from "../../src/host/errors.js";
import { NetworkLab, namespaceExists, namespacePids } from "../../src/host/toolkit/netns.js";
import {
  commandExists,
  findCommand,
  pollUntil,
  processAlive,
  runSync,
  spawnProcess,
} from "../../src/host/toolkit/process.js";
import { netnsUnavailableReason } from "../support/netns.js";

function stepErrorOf(action: () => unknown): StepError {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(StepError);
    return error as StepError;
  }
  throw new Error("expected a StepError");
}

describe("commands and processes", () => {
  it("a failed command is a StepError naming it, with its stderr and a stable code", () => {
    const failed = stepErrorOf(() => runSync("sh", ["-c", "echo nope >&2; exit 3"]));
    expect(failed.code).toBe("ERR_COMMAND_FAILED");
    expect(failed.message).toBe("sh -c echo nope >&2; exit 3: nope");
    const late = stepErrorOf(() => runSync("sleep", ["5"], { timeoutMs: 200 }));
    expect(late.code).toBe("ERR_COMMAND_TIMEOUT");
    expect(late.message).toContain("timed out after 200 ms");
    expect(runSync("cat", [], { input: "through stdin" })).toBe("through stdin");
  });

  it("finds commands on PATH only", () => {
    expect(findCommand("sh")).toMatch(/\/sh$/);
    expect(commandExists("edgetun-no-such-command")).toBe(false);
  });

  it("end() says whether SIGTERM was enough, and kills what ignores it", async () => {
    const polite = spawnProcess("sleep", "sleep", ["30"]);
    const stubborn = spawnProcess("stubborn", "sh", [
      "-c",
      'trap "" TERM; echo ready; exec sleep 30',
    ]);
    await stubborn.waitForLine(/ready/, 10_000);
    expect(await polite.end(5000)).toBe(true);
    expect(await stubborn.end(300)).toBe(false);
    expect(processAlive(polite.pid)).toBe(false);
    expect(processAlive(stubborn.pid)).toBe(false);
    // Gone already: nothing to signal, and no other process is touched.
    expect(await polite.end(100)).toBe(true);
  }, 20_000);

  it("waitForLine fails with the process's stderr when it exits first", async () => {
    const quitter = spawnProcess("quitter", "sh", ["-c", "echo broken >&2; exit 1"]);
    const failure = await quitter.waitForLine(/ready/, 10_000).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(StepError);
    expect((failure as StepError).code).toBe("ERR_PROCESS_EXITED");
    expect((failure as StepError).message).toBe("quitter exited (1): broken");
  });

  it("pollUntil checks until the condition holds, and names what it waited for when it gives up", async () => {
    let checks = 0;
    const took = await pollUntil("the third check", () => ++checks === 3, 10_000, 1);
    expect(checks).toBe(3);
    expect(took).toBeGreaterThan(0);
    const failure = await pollUntil("nothing", () => false, 30, 5).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(StepError);
    expect((failure as StepError).code).toBe("ERR_WAIT_TIMEOUT");
    expect((failure as StepError).message).toBe("timed out waiting for nothing");
  });

  // In a process of its own (the built module), as it hooks that process's exit and signals.
  const builtToolkit = new URL("../../dist/src/host/toolkit/process.js", import.meta.url);
  it.skipIf(!existsSync(fileURLToPath(builtToolkit)))(
    "cleanUpOnExit cleans up once: when called, at exit, or on a signal (then exits 128 + its number)",
    async () => {
      const run = (then: string) =>
        spawnProcess("cleanup", process.execPath, [
          "--input-type=module",
          "-e",
          `import { cleanUpOnExit } from ${JSON.stringify(builtToolkit.href)};
           const cleanup = cleanUpOnExit(() => process.stdout.write("cleaned\\n"));
           process.stdout.write("ready\\n");
           ${then}`,
        ]);
      const called = run("cleanup(); cleanup();");
      expect(await called.finish(10_000)).toEqual({ code: 0, timedOut: false });
      expect(called.stdout.toString()).toBe("ready\ncleaned");
      const exited = run("process.exitCode = 3;");
      expect(await exited.finish(10_000)).toEqual({ code: 3, timedOut: false });
      expect(exited.stdout.toString()).toBe("ready\ncleaned");
      const signalled = run("setInterval(() => {}, 1000);");
      await signalled.waitForLine(/ready/, 10_000);
      process.kill(signalled.pid, "SIGTERM");
      expect(await signalled.finish(10_000)).toEqual({ code: 143, timedOut: false });
      expect(signalled.stdout.toString()).toBe("ready\ncleaned");
    },
    30_000,
  );
});

const skipReason = netnsUnavailableReason();
if (skipReason) console.warn(`toolkit namespace tests skipped: ${skipReason}`);

describe.skipIf(skipReason !== null)(
  `NetworkLab${skipReason ? ` (skipped: ${skipReason})` : ""}`,
  () => {
    it("removes its namespaces and everything running in them, tracked or not", async () => {
      const lab = new NetworkLab({ prefix: "ettk" });
      try {
        const a = lab.add("a");
        const b = lab.add("b");
        expect(a).toBe(`ettk${lab.id}-a`);
        const [ifA, ifB] = lab.veth(a, b, { addressA: "10.219.0.1/30", addressB: "10.219.0.2/30" });
        expect(lab.exec(a, "ip", ["-o", "addr", "show", "dev", ifA])).toContain("10.219.0.1/30");
        expect(lab.exec(b, "ping", ["-c", "1", "-W", "5", "10.219.0.1"])).toContain("1 received");
        const tracked = lab.spawn(b, "sleeper", "sleep", ["60"]);
        // Started inside the namespace, but not through the lab: found there and ended too.
        const untracked = Number(
          lab.exec(a, "sh", ["-c", "setsid sleep 60 >/dev/null 2>&1 & echo $!"]).trim(),
        );
        expect(namespacePids(a)).toContain(untracked);
        const removal = lab.destroy(2000);
        expect(removal.deleted.sort()).toEqual([a, b].sort());
        expect(removal.problems).toEqual([`process ${untracked} was still running in ${a}; ended`]);
        expect(namespaceExists(a) || namespaceExists(b)).toBe(false);
        expect(processAlive(untracked)).toBe(false);
        await tracked.exited;
        expect(tracked.running).toBe(false);
        expect(ifB).toMatch(/^vb[0-9a-f]{6}$/);
        // Removed: nothing can be added any more.
        expect(stepErrorOf(() => lab.add("c")).code).toBe("ERR_LAB_CLOSED");
      } finally {
        lab.destroy();
      }
    }, 30_000);

    it("never takes over a namespace it did not make", () => {
      const mine = new NetworkLab({ prefix: "ettk" });
      const other = new NetworkLab({ prefix: "ettk", id: mine.id });
      try {
        const name = mine.add("x");
        // The same name from another lab: refused, and not taken into that lab's removal.
        expect(stepErrorOf(() => other.add("x")).message).toMatch(/exists/i);
        expect(other.destroy().deleted).toEqual([]);
        expect(existsSync(`/var/run/netns/${name}`)).toBe(true);
        expect(new NetworkLab({ prefix: "ettk" }).id).not.toBe(mine.id);
      } finally {
        mine.destroy();
        other.destroy();
      }
    });
  },
);
