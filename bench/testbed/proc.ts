// Processes for the testbed: every command has a time limit, every long-running process is
// registered so that cleanup ends it by its PID (and only it), and the cost of a daemon is read
// from /proc.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";

/** The last bytes of a stream, for error messages. */
class Tail {
  private text = "";
  constructor(private readonly limit = 4000) {}
  push(chunk: Buffer | string): void {
    this.text = (this.text + chunk.toString()).slice(-this.limit);
  }
  toString(): string {
    return this.text.trim();
  }
}

export class StepError extends Error {}

/** Synchronous sleep, for the cleanup paths that run inside signal and exit handlers. */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs a short command to completion; throws with its stderr on failure or after `timeoutMs`. */
export function runSync(
  command: string,
  args: string[],
  timeoutMs = 10_000,
  input?: string,
): string {
  try {
    return execFileSync(command, args, {
      encoding: "utf8",
      stdio: ["pipe", "pipe", "pipe"],
      timeout: timeoutMs,
      killSignal: "SIGKILL",
      ...(input !== undefined ? { input } : {}),
    });
  } catch (error) {
    const e = error as { stderr?: string; message: string; signal?: string };
    const why =
      e.signal === "SIGKILL" ? `timed out after ${timeoutMs} ms` : (e.stderr ?? "").trim();
    throw new StepError(`${command} ${args.join(" ")}: ${why || e.message}`);
  }
}

/** `runSync` inside a network namespace. */
export function nsRun(ns: string, command: string, args: string[], timeoutMs = 10_000): string {
  return runSync("ip", ["netns", "exec", ns, command, ...args], timeoutMs);
}

export function processAlive(pid: number): boolean {
  return existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z ");
}

export function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
  } catch {
    return "";
  }
}

/** Ends processes by PID: SIGTERM, then SIGKILL for any still there after `graceMs`. */
export function endPids(pids: number[], graceMs = 3000): void {
  const signal = (pid: number, name: NodeJS.Signals) => {
    try {
      process.kill(pid, name);
    } catch {
      // gone already
    }
  };
  const live = pids.filter((pid) => pid > 0 && existsSync(`/proc/${pid}`));
  for (const pid of live) signal(pid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (live.some((pid) => safeAlive(pid)) && Date.now() < deadline) sleepSync(20);
  for (const pid of live) if (safeAlive(pid)) signal(pid, "SIGKILL");
}

function safeAlive(pid: number): boolean {
  try {
    return processAlive(pid);
  } catch {
    return false;
  }
}

/** A process started by the testbed, usually in a namespace (`ip netns exec` execs, so the PID
 * is the program's own). */
export class Proc {
  readonly stdout = new Tail(64_000);
  readonly stderr = new Tail();
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  private lines: Array<(line: string) => void> = [];
  private partial = "";

  constructor(
    readonly label: string,
    readonly child: ChildProcess,
  ) {
    child.stdout?.on("data", (chunk: Buffer) => {
      this.stdout.push(chunk);
      this.partial += chunk.toString();
      const parts = this.partial.split("\n");
      this.partial = parts.pop() ?? "";
      for (const line of parts) for (const listener of this.lines) listener(line);
    });
    child.stderr?.on("data", (chunk: Buffer) => this.stderr.push(chunk));
    this.exited = new Promise((resolve) => {
      child.on("close", (code, signal) => {
        registry.delete(this);
        resolve({ code, signal });
      });
      child.on("error", (error) => {
        this.stderr.push(error.message);
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  onLine(listener: (line: string) => void): void {
    this.lines.push(listener);
  }

  /** Resolves with the first stdout line that matches, rejects on exit or after `timeoutMs`. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new StepError(`${this.label}: no "${pattern.source}" within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.onLine((line) => {
        if (pattern.test(line)) {
          clearTimeout(timer);
          resolve(line);
        }
      });
      void this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new StepError(`${this.label} exited (${code ?? signal}): ${this.stderr}`));
      });
    });
  }

  /** Waits for the process to end by itself; ends it (by PID) after `timeoutMs`. */
  async finish(timeoutMs: number): Promise<{ code: number | null; timedOut: boolean }> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.stop();
    }, timeoutMs);
    const { code } = await this.exited;
    clearTimeout(timer);
    return { code, timedOut };
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  async end(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    try {
      process.kill(this.pid, "SIGTERM");
    } catch {
      return;
    }
    const timer = setTimeout(() => this.kill(), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  stop(): void {
    if (!this.running) return;
    try {
      process.kill(this.pid, "SIGTERM");
    } catch {
      // gone
    }
    setTimeout(() => this.kill(), 3000).unref();
  }

  private kill(): void {
    if (!this.running) return;
    try {
      process.kill(this.pid, "SIGKILL");
    } catch {
      // gone
    }
  }
}

const registry = new Set<Proc>();

/** Starts a process inside a namespace, registered for cleanup. Its own process group, so a
 * Ctrl-C reaches the testbed only, and the testbed ends its processes in order. */
export function nsSpawn(
  ns: string,
  label: string,
  command: string,
  args: string[],
  env: Record<string, string> = {},
): Proc {
  const child = spawn("ip", ["netns", "exec", ns, command, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
    env: { ...process.env, ...env },
  });
  const proc = new Proc(label, child);
  registry.add(proc);
  return proc;
}

/** Ends every process the testbed started and has not seen exit. Synchronous. */
export function endAllSync(): void {
  endPids([...registry].filter((p) => p.running).map((p) => p.pid));
}

/** Runs a command in a namespace to completion, with a time limit; resolves whatever its exit. */
export async function nsExec(
  ns: string,
  label: string,
  command: string,
  args: string[],
  timeoutMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean }> {
  const proc = nsSpawn(ns, label, command, args);
  const { code, timedOut } = await proc.finish(timeoutMs);
  return { code, stdout: proc.stdout.toString(), stderr: proc.stderr.toString(), timedOut };
}

// --- cost of a daemon --------------------------------------------------------------------

let clockTicks = 0;

function ticksPerSecond(): number {
  if (clockTicks === 0) {
    try {
      clockTicks = Number(runSync("getconf", ["CLK_TCK"]).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** User + system CPU seconds of a process (all its threads), or NaN when it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
  } catch {
    return Number.NaN;
  }
}

/**
 * CPU time of a process (all its threads) in nanoseconds, from the scheduler's own accounting
 * (/proc/PID/task/TID/schedstat): fine enough for the idle cost of a daemon, where the clock
 * ticks of `cpuSeconds` (10 ms each) would read a whole second of idling as 0 or 10 ms.
 * NaN when the process is gone.
 */
export function cpuNanoseconds(pid: number): number {
  try {
    let total = 0;
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ")[0]);
      } catch {
        // the thread ended between the listing and the read
      }
    }
    return total;
  } catch {
    return Number.NaN;
  }
}

/** Peak resident set (VmHWM) in MiB, or NaN. */
export function peakRssMiB(pid: number): number {
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Resets VmHWM to the current RSS (clear_refs 5), so that the next peak is this scenario's. */
export function resetPeakRss(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
  } catch {
    // an older kernel: the peak then counts from the daemon's start
  }
}
