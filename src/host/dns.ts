// wg-quick's DNS: the nameservers and search domains go to resolvconf(8) under the interface's
// name while the tunnel is up, and are taken back when it goes down.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import type { DnsConfig } from "./config.js";
import { EdgetunError } from "../core/errors.js";
import type { Logger } from "./log.js";

export class DnsSetupError extends EdgetunError {
  constructor(message: string) {
    super("ERR_DNS_SETUP", message);
  }
}

/** The text resolvconf is given: as wg-quick writes it. */
export function resolvconfInput(dns: DnsConfig): string {
  let text = dns.servers.map((server) => `nameserver ${server}\n`).join("");
  if (dns.search.length > 0) text += `search ${dns.search.join(" ")}\n`;
  return text;
}

/**
 * Debian's resolvconf orders interfaces by /etc/resolvconf/interface-order; wg-quick names
 * its record after the first `prefix*` pattern there (`tun.wg0`) so that it sorts as a tunnel.
 */
export function resolvconfRecordName(interfaceName: string, interfaceOrder: string | null): string {
  for (const line of (interfaceOrder ?? "").split("\n")) {
    const match = /^([A-Za-z0-9-]+)\*$/.exec(line.trim());
    if (match) return `${match[1]}.${interfaceName}`;
  }
  return interfaceName;
}

function recordName(interfaceName: string): string {
  let order: string | null = null;
  try {
    order = readFileSync("/etc/resolvconf/interface-order", "utf8");
  } catch {
    // No ordering file: the plain name, as wg-quick.
  }
  return resolvconfRecordName(interfaceName, order);
}

function resolvconf(args: string[], input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("resolvconf", args, { stdio: ["pipe", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", (error: NodeJS.ErrnoException) =>
      reject(
        new DnsSetupError(
          error.code === "ENOENT"
            ? "resolvconf is not installed"
            : `cannot run resolvconf: ${error.message}`,
        ),
      ),
    );
    child.on("exit", (status) =>
      status === 0
        ? resolve()
        : reject(
            new DnsSetupError(`resolvconf ${args.join(" ")} failed: ${stderr.trim() || status}`),
          ),
    );
    child.stdin.end(input);
  });
}

/**
 * Hands DNS to resolvconf; true when something was set (and must be unset at the end). No
 * resolvconf on this host: a warning, the tunnel comes up without it (wg-quick would stop).
 */
export async function setDns(
  interfaceName: string,
  dns: DnsConfig,
  logger: Logger,
): Promise<boolean> {
  if (dns.servers.length === 0 && dns.search.length === 0) return false;
  try {
    await resolvconf(["-a", recordName(interfaceName), "-m", "0", "-x"], resolvconfInput(dns));
    return true;
  } catch (error) {
    if ((error as Error).message === "resolvconf is not installed") {
      logger.warn("DNS not set: resolvconf is not installed", { interface: interfaceName });
      return false;
    }
    throw error;
  }
}

export async function unsetDns(interfaceName: string, logger: Logger): Promise<void> {
  try {
    await resolvconf(["-d", recordName(interfaceName), "-f"], "");
  } catch (error) {
    logger.warn("could not remove the interface's DNS", { error: (error as Error).message });
  }
}
