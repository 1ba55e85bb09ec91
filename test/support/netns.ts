// Network namespaces for integration tests: uniquely named, always removed, and a clear reason
// whenever the machine cannot run them (not root, a tool missing).
import type { ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { nativeLoadError } from "../../src/host/native/index.js";
import { NetworkLab } from "../../src/host/toolkit/netns.js";
import { commandExists, pollUntil } from "../../src/host/toolkit/process.js";

export { commandExists };

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

/** A set of namespaces joined by veth pairs; `cleanup()` removes all of it and what it ran.
 * The tests' face of the toolkit's NetworkLab: `spawn` hands back the ChildProcess. */
export class Testbed {
  private readonly lab = new NetworkLab({
    prefix: "et",
    // Tests run wg-quick, iperf3 and the like through `exec`; vitest's own limits end a hang.
    commandTimeoutMs: 120_000,
    // In the test runner's process group: a test run interrupted ends them too.
    ownGroup: false,
  });
  readonly id = `${this.lab.prefix}${this.lab.id}`;

  namespace(label: string): string {
    return this.lab.add(label);
  }

  /** A veth pair between two namespaces, with an address on each end (and an MTU if given). */
  link(a: string, aAddress: string, b: string, bAddress: string, mtu?: number): void {
    this.lab.veth(a, b, {
      addressA: aAddress,
      addressB: bAddress,
      ...(mtu !== undefined ? { mtu } : {}),
    });
  }

  exec(ns: string, command: string, args: string[], input?: string): string {
    return this.lab.exec(ns, command, args, input !== undefined ? { input } : {});
  }

  /** Starts a long-running process inside a namespace; it is ended by PID in cleanup. */
  spawn(ns: string, command: string, args: string[]): ChildProcess {
    return this.lab.spawn(ns, command, command, args, { stdin: true }).child;
  }

  cleanup(): void {
    this.lab.destroy();
  }
}

/** Waits until `condition` holds, polling; throws with `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  condition: () => boolean,
  timeoutMs = 10_000,
): Promise<void> {
  await pollUntil(what, condition, timeoutMs, 50);
}
