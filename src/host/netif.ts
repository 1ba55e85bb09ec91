// Interface set-up around the TUN device, through iproute2: addresses, routes for every
// peer's allowed IPs, and the default-route case done the way wg-quick does it (policy routing
// on the firewall mark, so the tunnel's own UDP packets never loop into the tunnel).
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { promisify } from "node:util";
import { formatCidr } from "../core/ipaddr.js";
import { InterfaceSetupError } from "./errors.js";
import type { Logger } from "./log.js";

const run = promisify(execFile);

async function ip(args: string[]): Promise<string> {
  try {
    const { stdout } = await run("ip", args, { encoding: "utf8" });
    return stdout;
  } catch (error) {
    const detail = (error as { stderr?: string }).stderr?.trim() || (error as Error).message;
    if ((error as { code?: unknown }).code === "ENOENT") {
      throw new InterfaceSetupError("the `ip` command (iproute2) is not installed");
    }
    throw new InterfaceSetupError(`ip ${args.join(" ")}: ${detail}`);
  }
}

export interface Route {
  address: Uint8Array;
  cidr: number;
}

function family(route: Route): "-4" | "-6" {
  return route.address.length === 4 ? "-4" : "-6";
}

/** What `up` changed outside the interface itself, so `down` can undo exactly that. */
export class InterfaceSetup {
  private readonly undo: string[][] = [];

  constructor(
    readonly name: string,
    private readonly logger: Logger,
  ) {}

  async addAddress(text: string, isV6: boolean): Promise<void> {
    // No duplicate address detection on a point-to-point tunnel: the address is usable at once.
    await ip(
      isV6
        ? ["-6", "address", "add", text, "dev", this.name, "nodad"]
        : ["-4", "address", "add", text, "dev", this.name],
    );
  }

  /**
   * A route for one allowed-IPs prefix. /0 becomes policy routing: the default route goes in
   * table `fwmark`, used by every packet not marked with `fwmark` (the tunnel's own UDP
   * socket marks its packets), and the main table keeps everything but its default route.
   */
  async addRoute(route: Route, fwmark: number): Promise<void> {
    const prefix = formatCidr(route.address, route.cidr);
    if (route.cidr === 0) {
      const table = String(fwmark);
      const fam = family(route);
      await ip([fam, "route", "add", prefix, "dev", this.name, "table", table]);
      await ip([fam, "rule", "add", "not", "fwmark", table, "table", table]);
      this.undo.push([fam, "rule", "delete", "not", "fwmark", table, "table", table]);
      await ip([fam, "rule", "add", "table", "main", "suppress_prefixlength", "0"]);
      this.undo.push([fam, "rule", "delete", "table", "main", "suppress_prefixlength", "0"]);
      // Replies to marked packets must pass reverse-path filtering (as wg-quick sets it).
      if (fam === "-4") await enableSourceValidMark();
      return;
    }
    const existing = await ip([family(route), "route", "show", "exact", prefix]);
    if (existing.includes(` dev ${this.name} `) || existing.endsWith(` dev ${this.name}`)) return;
    if (existing.trim() !== "") {
      this.logger.warn("route already exists through another interface; not replaced", {
        route: prefix,
        existing: existing.trim(),
      });
      return;
    }
    // A wider prefix on this interface (the subnet of its own address) already covers it.
    const covering = await ip([family(route), "route", "show", "match", prefix, "dev", this.name]);
    if (covering.trim() !== "") return;
    await ip([family(route), "route", "add", prefix, "dev", this.name]);
  }

  /** Routes vanish with the interface; policy rules do not, so they are removed here. */
  async teardown(): Promise<void> {
    for (const args of this.undo.reverse()) {
      try {
        await ip(args);
      } catch (error) {
        this.logger.warn("could not undo interface set-up", { error: (error as Error).message });
      }
    }
    this.undo.length = 0;
  }
}

async function enableSourceValidMark(): Promise<void> {
  try {
    await writeFile("/proc/sys/net/ipv4/conf/all/src_valid_mark", "1\n");
  } catch {
    // Read-only /proc/sys (some containers): the rule still works without strict rp_filter.
  }
}

/** Routes needed for the allowed IPs of all peers, without duplicates. */
export function routesFor(prefixes: Route[]): Route[] {
  const seen = new Set<string>();
  const routes: Route[] = [];
  for (const route of prefixes) {
    const key = formatCidr(route.address, route.cidr);
    if (seen.has(key)) continue;
    seen.add(key);
    routes.push(route);
  }
  return routes;
}
