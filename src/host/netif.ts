// Interface set-up around the TUN device, through rtnetlink (src/host/native/netlink.ts):
// addresses, and routes for the peers' allowed IPs kept exactly as wg-quick keeps them.
//
// Route lifecycle. The daemon knows which routes it installed (and nothing else is ever
// touched): a change of allowed IPs installs and removes exactly the difference, in one
// netlink batch, and whatever it installed goes at stop. `Table` decides where:
// - `auto` (the default): the main table; a prefix already covered by the subnet of one of the
//   interface's own addresses gets no route (the kernel's route for that subnet goes through
//   the interface already); a /0 becomes policy routing as wg-quick does it: the default route
//   in table `fwmark` (51820 unless one is set), the rule `not fwmark M table M` so that the
//   tunnel's own marked UDP packets still leave by the underlay, and `table main
//   suppress_prefixlength 0` so that the main table's specific routes keep working;
// - `N` (a number or `main`): every prefix, /0 included, as a plain route in table N;
// - `off`: no routes at all (a routing daemon or the operator provides them).
//
// Routes go with the interface when it is deleted, even when the daemon is killed. Policy rules
// do not: they are recorded in `<stateDirectory>/<interface>.rules.json` before they are added,
// and the next start of the same interface removes any that a killed instance left.
import { readFileSync, renameSync, rmSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { constants } from "node:os";
import { formatCidr } from "../core/ipaddr.js";
import { InterfaceSetupError } from "./errors.js";
import type { Logger } from "./log.js";
import {
  NetlinkBatch,
  RT_TABLE_MAIN,
  describeRule,
  type NetlinkResult,
  type PolicyRule,
} from "./native/netlink.js";

export interface Route {
  address: Uint8Array;
  cidr: number;
}

/** wg-quick's `Table`: where the routes for allowed IPs go. */
export type RouteTable = { kind: "off" } | { kind: "auto" } | { kind: "table"; id: number };

/** The firewall mark (and table) wg-quick picks for a default route when none is set. */
export const DEFAULT_ROUTE_FWMARK = 51820;
export const DEFAULT_STATE_DIRECTORY = "/run/edgetun";

const prefixKey = (route: Route): string => formatCidr(route.address, route.cidr);

function errnoText(errno: number): string {
  const names = constants.errno as Record<string, number>;
  const name = Object.keys(names).find((key) => names[key] === -errno);
  return name ?? `errno ${-errno}`;
}

/** What to say about a refused request: EEXIST on a route is the usual operator question. */
function describeFailure(result: NetlinkResult): string {
  const reason = errnoText(result.errno);
  if (result.errno === -constants.errno.EEXIST && result.what.startsWith("route")) {
    return `${result.what}: ${reason} (a route for this prefix is already in that table, through another interface or added by hand; edgetun does not replace routes it did not install)`;
  }
  return `${result.what}: ${reason}`;
}

interface RulesRecord {
  /** The network namespace the rules live in (inode of /proc/self/ns/net). */
  netns: number;
  pid: number;
  rules: PolicyRule[];
}

/** A plan of route changes: computed first, applied all or nothing by {@link commit}. */
export interface RoutePlan {
  readonly add: Route[];
  readonly remove: Route[];
  /** The fwmark a newly routed /0 needs, when the interface has none yet. */
  readonly needsFwmark: number | null;
}

/**
 * What `up` changed outside the interface itself (addresses aside: they go with it), so that
 * changes and `down` undo exactly that.
 */
export class InterfaceSetup {
  /** Prefix text → route installed by this daemon (/0 included: its route in the mark table). */
  readonly #installed = new Map<string, { route: Route; table: number }>();
  /** Policy rules added, in order. */
  #rules: PolicyRule[] = [];
  readonly #rulesFile: string;
  #ifindex = 0;
  /** The own addresses' subnets: prefixes inside them need no route of their own. */
  #subnets: Route[] = [];

  constructor(
    readonly name: string,
    private readonly logger: Logger,
    readonly table: RouteTable = { kind: "auto" },
    stateDirectory = DEFAULT_STATE_DIRECTORY,
  ) {
    this.#rulesFile = join(stateDirectory, `${name}.rules.json`);
  }

  /** The interface exists from here on (the TUN device is open). */
  attach(ifindex: number): void {
    this.#ifindex = ifindex;
  }

  /** Routes this daemon installed, as prefix text; for tests and `routes` diagnostics. */
  get installedRoutes(): string[] {
    return [...this.#installed.keys()];
  }

  /**
   * A default route is in place through policy routing on the fwmark: a reload without FwMark
   * must not take the mark away (wg-quick sets it for the same reason).
   */
  get routesDefaultThroughMark(): boolean {
    return this.#rules.length > 0;
  }

  /**
   * Removes the policy rules that an earlier instance of this interface recorded and did not
   * remove (it was killed). Safe only once this process owns the interface name, i.e. after
   * the TUN device opened: no live instance can own those rules then.
   */
  removeLeftovers(): void {
    let record: RulesRecord;
    try {
      record = JSON.parse(readFileSync(this.#rulesFile, "utf8")) as RulesRecord;
    } catch {
      return;
    }
    if (record.netns !== currentNetns()) return; // the same name in another namespace
    const batch = new NetlinkBatch();
    for (const rule of record.rules) batch.deleteRule(rule, describeRule(rule));
    const results = batch.send();
    const removed = results.filter((r) => r.errno === 0).map((r) => r.what);
    rmSync(this.#rulesFile, { force: true });
    if (removed.length > 0) {
      this.logger.warn(
        "removed policy rules left behind by an earlier instance that did not stop",
        {
          interface: this.name,
          pid: record.pid,
          rules: removed,
        },
      );
    }
  }

  /** Adds the interface's addresses in one batch. */
  addAddresses(addresses: Route[]): void {
    const batch = new NetlinkBatch();
    for (const address of addresses) {
      batch.addAddress(this.#ifindex, address, `address ${prefixKey(address)} on ${this.name}`);
    }
    throwOnFailure(batch.send());
    this.#subnets = addresses.filter((a) => a.cidr < a.address.length * 8);
  }

  /**
   * The route changes for prefixes that `appearing` start and `disappearing` stop being in
   * the allowed IPs (of any peer). Proportional to the change; nothing is touched yet.
   */
  plan(appearing: Iterable<Route>, disappearing: Iterable<Route>, fwmark: number): RoutePlan {
    const add: Route[] = [];
    const remove: Route[] = [];
    let needsFwmark: number | null = null;
    if (this.table.kind === "off") return { add, remove, needsFwmark };
    for (const route of disappearing) {
      if (this.#installed.has(prefixKey(route))) remove.push(route);
    }
    for (const route of appearing) {
      if (this.#installed.has(prefixKey(route)) || this.#coveredBySubnet(route)) continue;
      add.push(route);
      if (this.table.kind === "auto" && route.cidr === 0 && fwmark === 0) {
        needsFwmark = DEFAULT_ROUTE_FWMARK;
      }
    }
    return { add, remove, needsFwmark };
  }

  /**
   * Installs the plan's new routes (and a /0's rules) in one batch, all or nothing: if the
   * kernel refuses any, those that went in are taken out again and an InterfaceSetupError says
   * which and why. The old routes stay until {@link retire}, so traffic never lacks a route.
   */
  install(plan: RoutePlan, fwmark: number): void {
    if (plan.add.length === 0) return;
    const batch = new NetlinkBatch();
    const added: Array<{ route: Route; table: number }> = [];
    const rules: PolicyRule[] = [];
    for (const route of plan.add) {
      const table = this.#tableFor(route, fwmark);
      batch.addRoute(this.#ifindex, route, table, () => routeText(route, table));
      added.push({ route, table });
      if (this.table.kind === "auto" && route.cidr === 0) {
        const family = route.address.length === 4 ? 4 : 6;
        for (const rule of defaultRouteRules(family, fwmark)) {
          rules.push(rule);
        }
      }
    }
    // Recorded before they exist, so that a kill between here and the file write cannot
    // leave a rule nobody knows about (deleting a rule that is not there is harmless).
    if (rules.length > 0) this.#recordRules([...this.#rules, ...rules]);
    for (const rule of rules) batch.addRule(rule, describeRule(rule));
    let results: NetlinkResult[];
    try {
      results = batch.send();
    } catch (error) {
      this.#recordRules(this.#rules);
      throw error;
    }
    const failures = results.filter((r) => r.errno !== 0);
    if (failures.length > 0) {
      const undo = new NetlinkBatch();
      added.forEach(({ route, table }, i) => {
        if (results[i]!.errno === 0)
          undo.deleteRoute(this.#ifindex, route, table, () => routeText(route, table));
      });
      rules.forEach((rule, i) => {
        if (results[added.length + i]!.errno === 0) undo.deleteRule(rule, describeRule(rule));
      });
      const undone = undo.send().filter((r) => r.errno !== 0);
      this.#recordRules(this.#rules);
      if (undone.length > 0) {
        this.logger.error("could not take back routes of a refused change", {
          interface: this.name,
          failures: undone.map(describeFailure),
        });
      }
      const conflict = failures.some((f) => f.errno === -constants.errno.EEXIST);
      throw new InterfaceSetupError(
        failures.map(describeFailure).join("; "),
        conflict ? "ERR_ROUTE_CONFLICT" : "ERR_INTERFACE_SETUP",
        failures[0]!.errno,
      );
    }
    for (const entry of added) this.#installed.set(prefixKey(entry.route), entry);
    this.#rules.push(...rules);
    if (rules.some((rule) => rule.family === 4)) void enableSourceValidMark();
  }

  /**
   * Removes the plan's routes that are no longer wanted (and a /0's rules), in one batch. A
   * route somebody else deleted already is simply forgotten; other refusals are logged.
   */
  retire(plan: RoutePlan): void {
    if (plan.remove.length === 0) return;
    const batch = new NetlinkBatch();
    const rules: PolicyRule[] = [];
    for (const route of plan.remove) {
      const entry = this.#installed.get(prefixKey(route));
      if (!entry) continue;
      batch.deleteRoute(this.#ifindex, entry.route, entry.table, () =>
        routeText(route, entry.table),
      );
      this.#installed.delete(prefixKey(route));
      if (route.cidr === 0) {
        const family = route.address.length === 4 ? 4 : 6;
        rules.push(...this.#rules.filter((rule) => rule.family === family));
      }
    }
    for (const rule of rules) batch.deleteRule(rule, describeRule(rule));
    this.#rules = this.#rules.filter((rule) => !rules.includes(rule));
    this.#warnFailures(batch.send(), "could not remove a route of a removed allowed IP");
    this.#recordRules(this.#rules);
  }

  /**
   * At stop: the policy rules go (routes go with the interface when the TUN closes; those in
   * other tables too, since they name the interface).
   */
  teardown(): void {
    if (this.#rules.length > 0) {
      const batch = new NetlinkBatch();
      for (const rule of [...this.#rules].reverse()) batch.deleteRule(rule, describeRule(rule));
      try {
        this.#warnFailures(batch.send(), "could not remove a policy rule");
      } catch (error) {
        this.logger.warn("could not remove policy rules", { error: (error as Error).message });
        return; // the record stays, for the next start to clean up
      }
      this.#rules = [];
    }
    this.#installed.clear();
    rmSync(this.#rulesFile, { force: true });
  }

  #tableFor(route: Route, fwmark: number): number {
    if (this.table.kind === "table") return this.table.id;
    return route.cidr === 0 ? fwmark : RT_TABLE_MAIN;
  }

  #coveredBySubnet(route: Route): boolean {
    if (this.table.kind === "table" && this.table.id !== RT_TABLE_MAIN) return false;
    return this.#subnets.some((subnet) => contains(subnet, route));
  }

  #recordRules(rules: PolicyRule[]): void {
    if (rules.length === 0) {
      rmSync(this.#rulesFile, { force: true });
      return;
    }
    const record: RulesRecord = { netns: currentNetns(), pid: process.pid, rules };
    mkdirSync(join(this.#rulesFile, ".."), { recursive: true, mode: 0o755 });
    const temporary = `${this.#rulesFile}.${process.pid}.tmp`;
    writeFileSync(temporary, `${JSON.stringify(record)}\n`, { mode: 0o644 });
    renameSync(temporary, this.#rulesFile);
  }

  #warnFailures(results: NetlinkResult[], message: string): void {
    const failures = results.filter(
      (r) =>
        r.errno !== 0 && r.errno !== -constants.errno.ESRCH && r.errno !== -constants.errno.ENOENT,
    );
    if (failures.length > 0) {
      this.logger.warn(message, { interface: this.name, failures: failures.map(describeFailure) });
    }
  }
}

function defaultRouteRules(family: 4 | 6, fwmark: number): PolicyRule[] {
  return [
    { kind: "not-fwmark", family, mark: fwmark },
    { kind: "main-suppress-default", family },
  ];
}

function routeText(route: Route, table: number): string {
  return `route ${prefixKey(route)} table ${table === RT_TABLE_MAIN ? "main" : table}`;
}

/** Whether `outer` (a subnet) contains `inner` (same family, at least as long). */
function contains(outer: Route, inner: Route): boolean {
  if (outer.address.length !== inner.address.length || outer.cidr > inner.cidr) return false;
  for (let bit = 0; bit < outer.cidr; bit++) {
    const mask = 0x80 >>> (bit & 7);
    if ((outer.address[bit >>> 3]! & mask) !== (inner.address[bit >>> 3]! & mask)) return false;
  }
  return true;
}

function currentNetns(): number {
  try {
    return statSync("/proc/self/ns/net").ino;
  } catch {
    return 0;
  }
}

function throwOnFailure(results: NetlinkResult[]): void {
  const failures = results.filter((r) => r.errno !== 0);
  if (failures.length > 0) {
    throw new InterfaceSetupError(
      failures.map(describeFailure).join("; "),
      "ERR_INTERFACE_SETUP",
      failures[0]!.errno,
    );
  }
}

async function enableSourceValidMark(): Promise<void> {
  try {
    // Replies to marked packets must pass reverse-path filtering (as wg-quick sets it).
    await writeFile("/proc/sys/net/ipv4/conf/all/src_valid_mark", "1\n");
  } catch {
    // Read-only /proc/sys (some containers): the rule still works without strict rp_filter.
  }
}
