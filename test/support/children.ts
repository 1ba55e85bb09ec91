// Long-running children of the namespace tests (daemons, wireguard-go, TCP servers): their
// output kept for failures, ended by PID, and the daemon's "interface down" record read back.
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Testbed, waitFor } from "./netns.js";

/** How a child ended. */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A long-running child, its stdout and stderr kept whole. */
export class WatchedChild {
  output = "";
  readonly exited: Promise<ChildExit>;

  constructor(
    readonly label: string,
    readonly child: ChildProcess,
  ) {
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => (this.output += chunk));
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (this.output += chunk));
    this.exited = new Promise((resolve) =>
      child.on("exit", (code, signal) => resolve({ code, signal })),
    );
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  signal(signal: NodeJS.Signals): void {
    process.kill(this.pid, signal);
  }

  /** Resolves with the exit, or null if it did not come within `timeoutMs`. */
  async waitExit(timeoutMs: number): Promise<ChildExit | null> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<null>(
      (resolve) => (timer = setTimeout(() => resolve(null), timeoutMs)),
    );
    try {
      return await Promise.race([this.exited, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM by PID, then SIGKILL if it has not exited after `timeoutMs`. */
  async stop(timeoutMs = 10_000): Promise<ChildExit> {
    if (this.running) this.signal("SIGTERM");
    const exit = await this.waitExit(timeoutMs);
    if (exit) return exit;
    if (this.running) this.signal("SIGKILL");
    return this.exited;
  }

  /** The daemon's "interface down" log line (its drops and data-path counters). */
  interfaceDown<T extends object = Record<string, unknown>>(): T {
    for (const line of this.output.split("\n")) {
      if (!line.startsWith("{")) continue;
      const record = JSON.parse(line) as { msg?: unknown };
      if (record.msg === "interface down") return record as T;
    }
    throw new Error(
      `no "interface down" line in ${this.label}'s output:\n${this.output.slice(-3000)}`,
    );
  }
}

/** What a test (or a group of tests) started; stopped by PID in reverse order. */
export class ChildScope {
  private readonly children: WatchedChild[] = [];

  add<T extends WatchedChild>(child: T): T {
    this.children.push(child);
    return child;
  }

  async stopAll(): Promise<void> {
    for (const child of this.children.reverse()) await child.stop();
    this.children.length = 0;
  }

  /** The tail of every child's output, for a failed case. */
  dump(): void {
    for (const child of this.children) {
      console.log(`--- ${child.label} (pid ${child.pid}) ---\n${child.output.slice(-4000)}`);
    }
  }
}

/** What a finished command printed, and how it ended. */
export interface RunResult extends ChildExit {
  stdout: string;
  stderr: string;
}

/** Runs a command to completion without blocking the event loop; killed by PID on timeout. */
export function runAsync(command: string, args: string[], timeoutMs = 30_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Key material for `wg` (which reads keys from files only), readable by its owner alone. */
export function writeSecretFile(directory: string, name: string, key: string): string {
  const path = join(directory, name);
  writeFileSync(path, `${key}\n`, { mode: 0o600 });
  return path;
}

/** The built `edgetun` command line. */
export const EDGETUN_CLI = join(new URL("../..", import.meta.url).pathname, "dist/src/cli/main.js");

/**
 * `edgetun up FILE --interface NAME` in namespace `ns`, with `env` set for the daemon alone
 * (the namespace helper passes no environment); resolves once it logs "interface up".
 */
export async function startEdgetunUp(
  bed: Testbed,
  scope: ChildScope,
  ns: string,
  options: { file: string; name: string; env?: Record<string, string>; args?: string[] },
): Promise<WatchedChild> {
  const { file, name, env = {}, args = [] } = options;
  const assignments = Object.entries(env).map(([key, value]) => `${key}=${value}`);
  const command = [process.execPath, EDGETUN_CLI, "up", file, "--interface", name, ...args];
  const daemon = scope.add(
    new WatchedChild(`edgetun ${name}`, bed.spawn(ns, "env", [...assignments, ...command])),
  );
  await waitFor(
    `edgetun ${name} to come up`,
    () => {
      if (!daemon.running) throw new Error(`edgetun exited early:\n${daemon.output}`);
      return daemon.output.includes('"interface up"');
    },
    20_000,
  );
  return daemon;
}
