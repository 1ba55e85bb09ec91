// Processes for `edgetun demo`, the tests and the benchmarks: every short command has a time
// limit and fails with its own stderr, every long-running process is tracked so that whoever
// started it ends it by its PID (and only it), never by name.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, existsSync, readFileSync, statSync } from "node:fs";
import { constants as osConstants } from "node:os";
import { delimiter, join } from "node:path";
import { StepError } from "../errors.js";

/** How long a short command may run unless told otherwise. */
export const COMMAND_TIMEOUT_MS = 10_000;
/** How long a process gets between SIGTERM and SIGKILL unless told otherwise. */
export const STOP_GRACE_MS = 3000;

/** The last characters of a stream, for error messages and reports. */
export class OutputTail {
  private text = "";
  constructor(private readonly limit = 4000) {}
  push(chunk: Buffer | string): void {
    this.text = (this.text + chunk.toString()).slice(-this.limit);
  }
  toString(): string {
    return this.text.trim();
  }
  /** Everything kept, untrimmed. */
  get raw(): string {
    return this.text;
  }
}

/** Synchronous sleep, for the cleanup paths that run inside signal and exit handlers. */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Checks `condition` every `intervalMs` until it holds; resolves with how many milliseconds
 * that took (a bench's figure when the interval is small). After `timeoutMs`, a StepError
 * (`ERR_WAIT_TIMEOUT`) naming `what`.
 */
export async function pollUntil(
  what: string,
  condition: () => boolean,
  timeoutMs: number,
  intervalMs: number,
): Promise<number> {
  const start = performance.now();
  while (!condition()) {
    if (performance.now() - start > timeoutMs) {
      throw new StepError(`timed out waiting for ${what}`, "ERR_WAIT_TIMEOUT");
    }
    await sleep(intervalMs);
  }
  return performance.now() - start;
}

/** The full path of an executable file named `name` on PATH, or null. */
export function findCommand(name: string): string | null {
  for (const directory of (process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(
    delimiter,
  )) {
    if (!directory) continue;
    const path = join(directory, name);
    try {
      accessSync(path, constants.X_OK);
      if (statSync(path).isFile()) return path;
    } catch {
      // not here
    }
  }
  return null;
}

export function commandExists(name: string): boolean {
  return findCommand(name) !== null;
}

export interface RunOptions {
  /** Default {@link COMMAND_TIMEOUT_MS}; the command is killed (SIGKILL) when it runs longer. */
  timeoutMs?: number;
  /** Written to the command's stdin. */
  input?: string;
  /** Largest stdout accepted, in bytes (Node's default is 1 MiB). */
  maxBuffer?: number;
}

/**
 * Runs a short command to completion and returns its stdout. Throws a StepError naming the
 * command, with its stderr, when it fails (`ERR_COMMAND_FAILED`) or runs past its time limit
 * (`ERR_COMMAND_TIMEOUT`).
 */
export function runSync(command: string, args: string[], options: RunOptions = {}): string {
  const timeoutMs = options.timeoutMs ?? COMMAND_TIMEOUT_MS;
  try {
    return execFileSync(command, args, {
      encoding: "utf8",
      stdio: ["pipe", "pipe", "pipe"],
      timeout: timeoutMs,
      killSignal: "SIGKILL",
      ...(options.input !== undefined ? { input: options.input } : {}),
      ...(options.maxBuffer !== undefined ? { maxBuffer: options.maxBuffer } : {}),
    });
  } catch (error) {
    const e = error as { stderr?: string; message: string; signal?: string };
    const timedOut = e.signal === "SIGKILL";
    const why = timedOut ? `timed out after ${timeoutMs} ms` : (e.stderr ?? "").trim();
    throw new StepError(
      `${command} ${args.join(" ")}: ${why || e.message}`,
      timedOut ? "ERR_COMMAND_TIMEOUT" : "ERR_COMMAND_FAILED",
      { cause: error },
    );
  }
}

/** The argument list that runs `command args` inside network namespace `ns` (`ip netns exec`
 * execs, so the PID of a process started this way is the program's own). */
export function inNamespace(ns: string, command: string, args: string[]): string[] {
  return ["netns", "exec", ns, command, ...args];
}

/** {@link runSync} inside a network namespace. */
export function nsRun(
  ns: string,
  command: string,
  args: string[],
  options: RunOptions = {},
): string {
  return runSync("ip", inNamespace(ns, command, args), options);
}

/** True while process `pid` exists and is not a zombie. */
export function processAlive(pid: number): boolean {
  try {
    return (
      existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z ")
    );
  } catch {
    return false;
  }
}

/** A process's command line, words joined by spaces; "" when it is gone. */
export function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
  } catch {
    return "";
  }
}

function signalPid(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false; // gone already
  }
}

/**
 * Ends processes by PID, synchronously: SIGTERM, then SIGKILL for any still there after
 * `graceMs`. Returns the PIDs that needed SIGKILL. Only for PIDs the caller started (or found
 * inside a namespace it created).
 */
export function endPids(pids: number[], graceMs = STOP_GRACE_MS): number[] {
  const live = pids.filter((pid) => pid > 0 && pid !== process.pid && processAlive(pid));
  for (const pid of live) signalPid(pid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (live.some(processAlive) && Date.now() < deadline) sleepSync(20);
  const stubborn = live.filter(processAlive);
  for (const pid of stubborn) signalPid(pid, "SIGKILL");
  return stubborn;
}

export interface SpawnOptions {
  /** Added to this process's environment. */
  env?: Record<string, string>;
  /** stdout and stderr: pipes (kept, see `stdout`/`stderr`) or a file descriptor. */
  output?: "pipe" | number;
  /** A pipe to the process's stdin; default none. */
  stdin?: boolean;
  /** Its own process group (default): a Ctrl-C then reaches only us, and we end it in order. */
  ownGroup?: boolean;
  /** How many characters of stdout to keep; default 64,000 (stderr keeps 4,000). */
  stdoutLimit?: number;
}

/** Every process started here that has not exited yet: what {@link endAllSync} ends. */
const running = new Set<Proc>();

/** A long-running process started by us, ended only by its PID. */
export class Proc {
  readonly stdout: OutputTail;
  readonly stderr = new OutputTail();
  /** Resolves once the process has exited and its pipes are closed (or it never started). */
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  /** Resolves once the process itself has exited; its pipes may stay open in a child of it. */
  private readonly gone: Promise<void>;
  private readonly lines: Array<(line: string) => void> = [];
  private partial = "";

  constructor(
    readonly label: string,
    readonly child: ChildProcess,
    stdoutLimit = 64_000,
  ) {
    this.stdout = new OutputTail(stdoutLimit);
    child.stdout?.on("data", (chunk: Buffer | string) => {
      this.stdout.push(chunk);
      this.partial += chunk.toString();
      const parts = this.partial.split("\n");
      this.partial = parts.pop() ?? "";
      for (const line of parts) for (const listener of this.lines) listener(line);
    });
    child.stderr?.on("data", (chunk: Buffer | string) => this.stderr.push(chunk));
    running.add(this);
    this.gone = new Promise((resolve) => {
      child.once("exit", () => resolve());
      child.once("error", () => {
        if (child.pid === undefined) resolve();
      });
    });
    this.exited = new Promise((resolve) => {
      child.on("close", (code, signal) => {
        running.delete(this);
        resolve({ code, signal });
      });
      // "error" alone (no "close") when the program could not be started at all.
      child.on("error", (error) => {
        this.stderr.push(`${error.message}\n`);
        if (child.pid === undefined) {
          running.delete(this);
          resolve({ code: null, signal: null });
        }
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return (
      this.child.pid !== undefined && this.child.exitCode === null && this.child.signalCode === null
    );
  }

  /** "exit code N" or "signal SIGxxx", for messages. */
  get exitDescription(): string {
    return this.child.signalCode
      ? `signal ${this.child.signalCode}`
      : `exit code ${this.child.exitCode}`;
  }

  onLine(listener: (line: string) => void): void {
    this.lines.push(listener);
  }

  /** Resolves with the first stdout line that matches, rejects on exit or after `timeoutMs`. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new StepError(
              `${this.label}: no "${pattern.source}" within ${timeoutMs} ms`,
              "ERR_PROCESS_NOT_READY",
            ),
          ),
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
        reject(
          new StepError(
            `${this.label} exited (${code ?? signal}): ${this.stderr}`,
            "ERR_PROCESS_EXITED",
          ),
        );
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

  /**
   * SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited: true when it
   * ended within the grace time (or was gone already), false when it had to be killed.
   */
  async end(graceMs = 5000): Promise<boolean> {
    if (!this.running || !signalPid(this.pid, "SIGTERM")) return true;
    let killed = false;
    const timer = setTimeout(() => {
      killed = this.kill();
    }, graceMs);
    await this.gone;
    clearTimeout(timer);
    return !killed;
  }

  /** SIGTERM now and SIGKILL in 3 s if still running, without waiting. */
  stop(): void {
    if (!this.running) return;
    signalPid(this.pid, "SIGTERM");
    setTimeout(() => this.kill(), STOP_GRACE_MS).unref();
  }

  private kill(): boolean {
    return this.running && signalPid(this.pid, "SIGKILL");
  }
}

/** Starts a long-running process, tracked until it exits. */
export function spawnProcess(
  label: string,
  command: string,
  args: string[],
  options: SpawnOptions = {},
): Proc {
  const output = options.output ?? "pipe";
  const child = spawn(command, args, {
    stdio: [options.stdin ? "pipe" : "ignore", output, output],
    detached: options.ownGroup ?? true,
    env: { ...process.env, ...options.env },
  });
  return new Proc(label, child, options.stdoutLimit);
}

/** Starts a process inside a network namespace, tracked until it exits. */
export function nsSpawn(
  ns: string,
  label: string,
  command: string,
  args: string[],
  env: Record<string, string> = {},
  options: Omit<SpawnOptions, "env"> = {},
): Proc {
  return spawnProcess(label, "ip", inNamespace(ns, command, args), { ...options, env });
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

/** Ends every process started here that has not exited, by PID. Synchronous. */
export function endAllSync(graceMs = STOP_GRACE_MS): void {
  endPids(
    [...running].filter((proc) => proc.running).map((proc) => proc.pid),
    graceMs,
  );
}

/**
 * Makes `cleanup` run once, whichever comes first: a call of the function returned, the
 * process's exit, or SIGINT, SIGTERM or SIGHUP (after which the process exits 128 + the
 * signal's number, as a shell reports it). `cleanup` must be synchronous: exit handlers cannot
 * wait (see `endAllSync`, `NetworkLab.destroy`).
 */
export function cleanUpOnExit(cleanup: () => void): () => void {
  let done = false;
  const once = () => {
    if (done) return;
    done = true;
    cleanup();
  };
  process.on("exit", once);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      once();
      process.exit(128 + osConstants.signals[signal]);
    });
  }
  return once;
}
