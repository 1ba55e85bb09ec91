// Kernel routes for the fleet's edges, many per `ip` process: `ip -batch` takes one command a
// line, so a full load of 5,000 edges is one process, not 15,000 (one per route and check).
import { spawn } from "node:child_process";
import { formatCidr } from "../../core/ipaddr.js";
import type { Logger } from "../log.js";
import { contains, type Prefix } from "./records.js";

export class FleetRoutes {
  constructor(
    private readonly interfaceName: string,
    /** The interface's own subnets: a prefix inside one is routed already. */
    private readonly connected: readonly Prefix[],
    private readonly logger: Logger,
  ) {}

  /** Commands waiting for the `ip` process that runs now, in order. */
  private queued: string[] = [];
  private running: Promise<void> | null = null;

  /**
   * Queues routes to add; they go in with whatever else is queued, in one `ip` process, in
   * order. A change to the peers is in effect before its routes are: the caller does not wait.
   */
  add(prefixes: readonly Prefix[]): void {
    this.queue("add", prefixes);
  }

  remove(prefixes: readonly Prefix[]): void {
    this.queue("del", prefixes);
  }

  /** Resolves when every queued route is in (tests and the bench wait on it). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private queue(verb: "add" | "del", prefixes: readonly Prefix[]): void {
    for (const p of prefixes) {
      if (p.cidr === 0 || !this.needsRoute(p)) continue;
      // No family option: a batch line takes none, and the prefix tells the family anyway.
      this.queued.push(`route ${verb} ${formatCidr(p.address, p.cidr)} dev ${this.interfaceName}`);
    }
    if (!this.running && this.queued.length > 0) this.running = this.drain();
  }

  private async drain(): Promise<void> {
    try {
      while (this.queued.length > 0) {
        const lines = this.queued;
        this.queued = [];
        await this.batch(lines);
      }
    } finally {
      this.running = null;
    }
  }

  private needsRoute(prefix: Prefix): boolean {
    return !this.connected.some((net) => net.cidr <= prefix.cidr && contains(net, prefix.address));
  }

  private async batch(lines: string[]): Promise<void> {
    let failures: Array<{ line: string; error: string }>;
    try {
      failures = await runBatch(lines);
    } catch (error) {
      this.logger.warn("could not run ip for the fleet's routes", {
        error: (error as Error).message,
      });
      return;
    }
    for (const failure of failures) {
      // "File exists": the route is there already, ours or another interface's (left alone,
      // as `up` does); "No such process" on delete: it went with an earlier change.
      const [, verb, route] = failure.line.split(" ");
      this.logger.warn(`could not ${verb === "add" ? "add" : "remove"} a fleet route`, {
        interface: this.interfaceName,
        route,
        error: failure.error,
      });
    }
  }
}

/** Runs `ip -force -batch -`; returns the lines that failed and why. */
function runBatch(lines: string[]): Promise<Array<{ line: string; error: string }>> {
  return new Promise((resolve, reject) => {
    const child = spawn("ip", ["-force", "-batch", "-"], { stdio: ["pipe", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      if (stderr.length < 1_000_000) stderr += chunk;
    });
    child.on("error", reject);
    child.on("close", () => {
      const failures: Array<{ line: string; error: string }> = [];
      // iproute2 writes "Error: <why>" then "Command failed -:<line number>".
      let last = "";
      for (const text of stderr.split("\n")) {
        const failed = /^Command failed -:(\d+)/.exec(text);
        if (failed) {
          const line = lines[Number(failed[1]) - 1];
          if (line) failures.push({ line, error: last || "failed" });
          last = "";
        } else if (text.trim()) {
          last = text.replace(/^Error:\s*/, "").trim();
        }
      }
      resolve(failures);
    });
    child.stdin.end(`${lines.join("\n")}\n`);
  });
}
