// Network namespaces for `edgetun demo`, the tests and the benchmarks. A NetworkLab names its
// namespaces uniquely (a prefix, then an id of its own), joins them with veth pairs, runs
// commands and processes inside them, and removes all of it (its processes by PID, then the
// namespaces, and with them every interface in them) on `destroy()`, which callers put in a
// `finally` or an exit handler. Nothing here touches the host's own network namespace.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { StepError } from "../errors.js";
import {
  COMMAND_TIMEOUT_MS,
  STOP_GRACE_MS,
  endPids,
  nsRun,
  nsSpawn,
  runSync,
  type Proc,
  type RunOptions,
  type SpawnOptions,
} from "./process.js";

/** Where `ip netns add` puts the namespaces it names. */
export const NETNS_DIRECTORY = "/var/run/netns";

export function namespaceExists(name: string): boolean {
  return existsSync(join(NETNS_DIRECTORY, name));
}

/** The namespaces `ip netns list` names. */
export function listNamespaces(): string[] {
  let listing: string;
  try {
    listing = runSync("ip", ["netns", "list"]);
  } catch {
    return [];
  }
  return listing
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter(Boolean);
}

/** The PIDs of the processes inside a namespace (none when it is gone), this one excepted. */
export function namespacePids(ns: string): number[] {
  try {
    return runSync("ip", ["netns", "pids", ns])
      .split(/\s+/)
      .filter(Boolean)
      .map(Number)
      .filter((pid) => Number.isInteger(pid) && pid > 0 && pid !== process.pid);
  } catch {
    return [];
  }
}

export interface Removal {
  /** The namespaces deleted, in the order given. */
  deleted: string[];
  /** What did not go cleanly: processes still inside (ended), namespaces still there. */
  problems: string[];
}

/**
 * Ends every process inside the namespaces (SIGTERM, then SIGKILL after `graceMs`), then
 * deletes them. Only for namespaces the caller owns: what runs inside is then its own too.
 */
export function removeNamespaces(namespaces: string[], graceMs = STOP_GRACE_MS): Removal {
  const problems: string[] = [];
  const owners = new Map<number, string>();
  for (const ns of namespaces) for (const pid of namespacePids(ns)) owners.set(pid, ns);
  const killed = new Set(endPids([...owners.keys()], graceMs));
  for (const [pid, ns] of owners) {
    problems.push(
      `process ${pid} was still running in ${ns}; ${killed.has(pid) ? "killed" : "ended"}`,
    );
  }
  const deleted: string[] = [];
  for (const ns of namespaces) {
    if (!namespaceExists(ns)) continue;
    try {
      runSync("ip", ["netns", "delete", ns]);
      deleted.push(ns);
    } catch (error) {
      problems.push(`could not delete namespace ${ns}: ${(error as Error).message}`);
    }
  }
  for (const ns of namespaces) {
    if (namespaceExists(ns)) problems.push(`namespace ${ns} is still there`);
  }
  return { deleted, problems };
}

export interface LabOptions {
  /** Starts every name the lab makes; lets a later run recognise leftovers. Default "et". */
  prefix?: string;
  /** Follows the prefix; default this process's PID in base 36 and 6 random hex digits. */
  id?: string;
  /** Time limit of a command run by `exec` unless it says otherwise. */
  commandTimeoutMs?: number;
  /** Sysctls (`key=value`) set in every namespace the lab adds. */
  sysctls?: string[];
  /** Processes spawned by the lab in their own process group (default true). */
  ownGroup?: boolean;
}

export interface VethOptions {
  /** Interface names; default `va`/`vb` and 6 random hex digits (15 characters at most). */
  nameA?: string;
  nameB?: string;
  /** Addresses with prefix length (`10.0.0.1/24`); none when left out. */
  addressA?: string;
  addressB?: string;
  mtu?: number;
}

/** A set of network namespaces this process made, and the processes it runs in them. */
export class NetworkLab {
  readonly prefix: string;
  readonly id: string;
  private readonly commandTimeoutMs: number;
  private readonly sysctls: string[];
  private readonly ownGroup: boolean;
  private readonly namespaces: string[] = [];
  private readonly procs: Proc[] = [];
  private closed = false;

  constructor(options: LabOptions = {}) {
    this.prefix = options.prefix ?? "et";
    this.id = options.id ?? `${process.pid.toString(36)}${randomBytes(3).toString("hex")}`;
    this.commandTimeoutMs = options.commandTimeoutMs ?? COMMAND_TIMEOUT_MS;
    this.sysctls = options.sysctls ?? [];
    this.ownGroup = options.ownGroup ?? true;
  }

  /** The full name of this lab's namespace for `role`. */
  name(role: string): string {
    return `${this.prefix}${this.id}-${role}`;
  }

  /** The namespaces made so far, in order. */
  get created(): readonly string[] {
    return this.namespaces;
  }

  private open(): void {
    if (this.closed) throw new StepError("the namespaces are being removed", "ERR_LAB_CLOSED");
  }

  /** Adds the namespace for `role`, its loopback up; fails if that name exists already. */
  add(role: string): string {
    this.open();
    const name = this.name(role);
    runSync("ip", ["netns", "add", name]);
    this.namespaces.push(name);
    runSync("ip", ["-n", name, "link", "set", "lo", "up"]);
    if (this.sysctls.length) nsRun(name, "sysctl", ["-qw", ...this.sysctls]);
    return name;
  }

  /** A veth pair, one end in namespace `a` and the other in `b`, both up. Nothing appears in
   * the host's namespace: both ends are created inside theirs. Returns the two names. */
  veth(a: string, b: string, options: VethOptions = {}): [string, string] {
    this.open();
    const suffix = randomBytes(3).toString("hex");
    const ifA = options.nameA ?? `va${suffix}`;
    const ifB = options.nameB ?? `vb${suffix}`;
    const mtu = options.mtu === undefined ? [] : ["mtu", `${options.mtu}`];
    runSync("ip", [
      ...["-n", a, "link", "add", ifA, ...mtu, "type", "veth"],
      ...["peer", "name", ifB, ...mtu, "netns", b],
    ]);
    if (options.addressA) runSync("ip", ["-n", a, "addr", "add", options.addressA, "dev", ifA]);
    if (options.addressB) runSync("ip", ["-n", b, "addr", "add", options.addressB, "dev", ifB]);
    runSync("ip", ["-n", a, "link", "set", ifA, "up"]);
    runSync("ip", ["-n", b, "link", "set", ifB, "up"]);
    return [ifA, ifB];
  }

  /** Runs a short command inside `ns` to completion; its stdout. Throws a StepError. */
  exec(ns: string, command: string, args: string[], options: RunOptions = {}): string {
    return nsRun(ns, command, args, { timeoutMs: this.commandTimeoutMs, ...options });
  }

  /** Starts a long-running process inside `ns`; `destroy()` ends it by PID. */
  spawn(
    ns: string,
    label: string,
    command: string,
    args: string[],
    options: SpawnOptions = {},
  ): Proc {
    this.open();
    const { env, ...rest } = options;
    const proc = nsSpawn(ns, label, command, args, env, { ownGroup: this.ownGroup, ...rest });
    this.procs.push(proc);
    return proc;
  }

  /**
   * Ends the lab's processes and anything else inside its namespaces (by PID: SIGTERM, SIGKILL
   * after `graceMs`), then deletes the namespaces, last made first. Synchronous, so that it
   * runs in exit and signal handlers; safe to call more than once. Nothing can be added once
   * it has begun.
   */
  destroy(graceMs = STOP_GRACE_MS): Removal {
    this.closed = true;
    endPids(
      this.procs.filter((proc) => proc.running).map((proc) => proc.pid),
      graceMs,
    );
    this.procs.length = 0;
    const removal = removeNamespaces([...this.namespaces].reverse(), graceMs);
    this.namespaces.length = 0;
    return removal;
  }
}
