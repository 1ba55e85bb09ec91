// Network namespaces for integration tests: uniquely named, always removed, and a clear reason
// whenever the machine cannot run them (not root, a tool missing).
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { nativeLoadError } from "../../src/host/native/index.js";

export function commandExists(name: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${name}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Why namespace tests cannot run here, or null when they can. */
export function netnsUnavailableReason(tools: string[] = []): string | null {
  if (process.getuid?.() !== 0) return "needs root (network namespaces)";
  for (const tool of ["ip", ...tools]) {
    if (!commandExists(tool)) return `needs ${tool} (not installed)`;
  }
  return null;
}

/** Why tests that open TUN devices in namespaces cannot run here, or null when they can. */
export function tunUnavailableReason(tools: string[] = []): string | null {
  const netns = netnsUnavailableReason(tools);
  if (netns) return netns;
  if (!existsSync("/dev/net/tun")) return "needs /dev/net/tun (the kernel's TUN driver)";
  const addon = nativeLoadError();
  return addon ? `needs the native addon (${addon.message})` : null;
}

export function run(command: string, args: string[], input?: string): string {
  return execFileSync(command, args, {
    encoding: "utf8",
    stdio: ["pipe", "pipe", "pipe"],
    ...(input !== undefined ? { input } : {}),
  });
}

/** A set of namespaces joined by veth pairs; `cleanup()` removes all of it and what it ran. */
export class Testbed {
  readonly id = `et${process.pid.toString(36)}${randomBytes(3).toString("hex")}`;
  private readonly namespaces: string[] = [];
  private readonly children: ChildProcess[] = [];

  namespace(label: string): string {
    const name = `${this.id}-${label}`;
    run("ip", ["netns", "add", name]);
    this.namespaces.push(name);
    run("ip", ["-n", name, "link", "set", "lo", "up"]);
    return name;
  }

  /** A veth pair between two namespaces, with an address on each end (and an MTU if given). */
  link(a: string, aAddress: string, b: string, bAddress: string, mtu?: number): void {
    const suffix = randomBytes(3).toString("hex");
    const ifA = `va${suffix}`;
    const ifB = `vb${suffix}`;
    run("ip", ["link", "add", ifA, "netns", a, "type", "veth", "peer", ifB, "netns", b]);
    run("ip", ["-n", a, "addr", "add", aAddress, "dev", ifA]);
    run("ip", ["-n", b, "addr", "add", bAddress, "dev", ifB]);
    if (mtu !== undefined) {
      run("ip", ["-n", a, "link", "set", ifA, "mtu", String(mtu)]);
      run("ip", ["-n", b, "link", "set", ifB, "mtu", String(mtu)]);
    }
    run("ip", ["-n", a, "link", "set", ifA, "up"]);
    run("ip", ["-n", b, "link", "set", ifB, "up"]);
  }

  exec(ns: string, command: string, args: string[], input?: string): string {
    return run("ip", ["netns", "exec", ns, command, ...args], input);
  }

  /** Starts a long-running process inside a namespace; it is ended by PID in cleanup. */
  spawn(ns: string, command: string, args: string[]): ChildProcess {
    const child = spawn("ip", ["netns", "exec", ns, command, ...args], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.children.push(child);
    return child;
  }

  cleanup(): void {
    for (const child of this.children) {
      if (child.exitCode === null && child.signalCode === null && child.pid) {
        try {
          process.kill(child.pid, "SIGTERM");
        } catch {
          // already gone
        }
      }
    }
    for (const ns of this.namespaces.reverse()) {
      try {
        run("ip", ["netns", "del", ns]);
      } catch {
        // removed already
      }
    }
    this.namespaces.length = 0;
  }
}

/** Waits until `condition` holds, polling; throws with `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  condition: () => boolean,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
