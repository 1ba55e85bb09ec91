// `edgetun-go INTERFACE`: edgetun started the way wg-quick, Kilo-style launchers and boringtun
// users start wireguard-go (WG_QUICK_USERSPACE_IMPLEMENTATION=edgetun-go). It creates the TUN
// interface and serves the control socket /var/run/wireguard/INTERFACE.sock, nothing more: no
// file, no key, no addresses, no routes. Whoever started it configures the rest with `wg
// setconf` and `ip`, exactly as for wireguard-go. Without -f it returns once the interface and
// socket exist and keeps running in the background; deleting the interface ends it.
import { spawn } from "node:child_process";
import { closeSync, writeSync } from "node:fs";
import type { LogLevel, Logger } from "../host/log.js";
import {
  DEFAULT_METRICS_PORT,
  parseMetricsListen,
  type MetricsListen,
} from "../host/metrics-listen.js";
import { VERSION } from "./version.js";
// The daemon and what it needs are loaded by the process that runs it (runInForeground): the
// starting process only starts it again in the background and waits for "ready" (issue 14).

export const WGO_USAGE = "Usage: edgetun-go [-f/--foreground] INTERFACE-NAME";

/** The child started in the background reports "ready" or "error <message>" on this fd. */
const READY_FD_VARIABLE = "EDGETUN_READY_FD";

export type WgoCommand =
  | { kind: "run"; foreground: boolean; interfaceName: string }
  | { kind: "version" }
  | { kind: "help" }
  | { kind: "usage-error"; message: string };

/** wg-quick's and the kernel's rule for an interface name. */
export function isValidInterfaceName(name: string): boolean {
  return /^[a-zA-Z0-9_=+.-]{1,15}$/.test(name) && name !== "." && name !== "..";
}

/** wireguard-go's command line: `[-f|--foreground] INTERFACE`, `--version`, `--help`. */
export function parseWgoArguments(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): WgoCommand {
  let foreground = env.WG_PROCESS_FOREGROUND === "1";
  const names: string[] = [];
  for (const arg of argv) {
    if (arg === "-f" || arg === "--foreground") foreground = true;
    else if (arg === "--version" || arg === "-v") return { kind: "version" };
    else if (arg === "-h" || arg === "--help") return { kind: "help" };
    else if (arg.startsWith("-")) return { kind: "usage-error", message: `unknown option ${arg}` };
    else names.push(arg);
  }
  if (names.length !== 1) {
    return {
      kind: "usage-error",
      message: names.length === 0 ? "missing INTERFACE-NAME" : "one INTERFACE-NAME only",
    };
  }
  const interfaceName = names[0]!;
  if (!isValidInterfaceName(interfaceName)) {
    return {
      kind: "usage-error",
      message: `invalid interface name ${JSON.stringify(interfaceName)} (1 to 15 of a-z A-Z 0-9 _ = + . -)`,
    };
  }
  return { kind: "run", foreground, interfaceName };
}

/** wireguard-go's LOG_LEVEL (verbose, error, silent), or one of ours; null: silent. */
export function logLevelFromEnv(value: string | undefined): LogLevel | null {
  switch ((value ?? "").toLowerCase()) {
    case "":
    case "info":
      return "info";
    case "verbose":
    case "debug":
      return "debug";
    case "warn":
      return "warn";
    case "error":
      return "error";
    case "silent":
      return null;
    default:
      return "info";
  }
}

/**
 * EDGETUN_METRICS_LISTEN: where /metrics and the probes go ("off" for none). By default the
 * usual address, given up quietly when taken (several interfaces on one host).
 */
function metricsFromEnv(value: string | undefined): {
  listen: MetricsListen | null;
  optional: boolean;
} {
  if (value === undefined || value === "") {
    return { listen: { host: "127.0.0.1", port: DEFAULT_METRICS_PORT }, optional: true };
  }
  return { listen: parseMetricsListen(value), optional: false };
}

const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** Starts this program again with -f, detached, and waits until it says it is ready. */
async function startInBackground(interfaceName: string): Promise<number> {
  // As wireguard-go: the background daemon's output goes nowhere unless LOG_LEVEL asks for it.
  const output = process.env.LOG_LEVEL ? "inherit" : "ignore";
  const child = spawn(
    process.execPath,
    [...process.execArgv, process.argv[1]!, "--foreground", interfaceName],
    {
      detached: true,
      stdio: ["ignore", output, output, "pipe"],
      env: { ...process.env, WG_PROCESS_FOREGROUND: "1", [READY_FD_VARIABLE]: "3" },
    },
  );
  const status = await new Promise<string>((resolve) => {
    let text = "";
    const channel = child.stdio[3] as NodeJS.ReadableStream;
    channel.setEncoding("utf8");
    channel.on("data", (chunk: string) => {
      text += chunk;
      if (text.includes("\n")) resolve(text.slice(0, text.indexOf("\n")));
    });
    channel.on("error", () => undefined);
    child.on("exit", (code, signal) =>
      resolve(`error the daemon exited (${signal ?? `status ${code}`}) before it was ready`),
    );
  });
  if (status === "ready") {
    (child.stdio[3] as NodeJS.ReadableStream & { destroy(): void }).destroy();
    child.unref();
    return 0;
  }
  process.stderr.write(`edgetun-go: ${status.replace(/^error /, "")}\n`);
  return 1;
}

function reportToStarter(line: string): void {
  const fd = Number(process.env[READY_FD_VARIABLE]);
  if (!Number.isInteger(fd) || fd < 3) return;
  try {
    writeSync(fd, `${line.replace(/\n/g, " ")}\n`);
    closeSync(fd);
  } catch {
    // The starter is gone; nothing to tell.
  }
  delete process.env[READY_FD_VARIABLE];
}

async function runInForeground(interfaceName: string): Promise<void> {
  const [
    { emptyInterfaceConfig },
    { Daemon },
    { createLogger },
    { formatListen },
    { nativeLoadError },
    { removePidFile, writePidFile },
    { keepYoungGenerationSmall },
  ] = await Promise.all([
    import("../host/config.js"),
    import("../host/daemon.js"),
    import("../host/log.js"),
    import("../host/metrics-listen.js"),
    import("../host/native/index.js"),
    import("./pidfile.js"),
    import("../host/heap.js"),
  ]);
  keepYoungGenerationSmall();
  const level = logLevelFromEnv(process.env.LOG_LEVEL);
  const logger = level ? createLogger({ level }) : silentLogger;
  const addonError = nativeLoadError();
  if (addonError) throw addonError;
  const metrics = metricsFromEnv(process.env.EDGETUN_METRICS_LISTEN);
  let stopping = false;
  const finish = (daemonName: string) => {
    removePidFile(daemonName);
    process.exit(0);
  };
  const daemon = await Daemon.start({
    interfaceName,
    config: emptyInterfaceConfig(),
    logger,
    metrics: metrics.listen,
    metricsOptional: metrics.optional,
    // wg-quick adds the routes itself, after `wg setconf`.
    manageRoutes: false,
    onInterfaceGone: () => {
      stopping = true;
      finish(interfaceName);
    },
  });
  writePidFile(daemon.name);
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info("stopping", { signal });
    daemon.stop().then(
      () => finish(daemon.name),
      (error: unknown) => {
        logger.error("stopping failed", { error: (error as Error).message });
        removePidFile(daemon.name);
        process.exit(1);
      },
    );
  };
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    process.on(signal, () => stop(signal));
  }
  logger.info("waiting for configuration on the control socket", {
    socket: `/var/run/wireguard/${daemon.name}.sock`,
    metrics: metrics.listen ? formatListen(metrics.listen) : "off",
  });
  reportToStarter("ready");
}

/** Runs the command; a negative result means the daemon runs on (do not exit). */
export async function main(argv: readonly string[]): Promise<number> {
  const command = parseWgoArguments(argv);
  switch (command.kind) {
    case "version":
      process.stdout.write(`edgetun-go v${VERSION} (wireguard-go command line)\n`);
      return 0;
    case "help":
      process.stdout.write(`${WGO_USAGE}\n`);
      return 0;
    case "usage-error":
      process.stderr.write(`edgetun-go: ${command.message}\n${WGO_USAGE}\n`);
      return 2;
    case "run":
      if (!command.foreground) return startInBackground(command.interfaceName);
      try {
        await runInForeground(command.interfaceName);
        return -1; // keeps running
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        reportToStarter(`error ${message}`);
        process.stderr.write(`edgetun-go: ${message}\n`);
        return 1;
      }
  }
}
