#!/usr/bin/env node
// The `edgetun` command.
import { mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { Command, InvalidArgumentError, Option } from "commander";
// Only what every command needs, or what parsing the options needs, is imported up front:
// the daemon, metrics server, demo and show/syncconf are loaded by the command that uses them,
// so `edgetun --version`, `show` and `genkey` start without the data path and prom-client.
import { decodeKey } from "../core/key-text.js";
import { EdgetunError } from "../core/errors.js";
import { EXIT_STATUS_HELP, reportOf } from "./exit-status.js";
import { UapiClientError } from "../host/errors.js";
import type { InterfaceFileConfig } from "../host/config.js";
import { isLogLevel, type LogLevel } from "../host/log.js";
import {
  DEFAULT_METRICS_PORT,
  parseMetricsListen,
  type MetricsListen,
} from "../host/metrics-listen.js";
import type { InterfaceState } from "./show.js";
// Peer-series options are parsed from metrics.ts itself (new on main; not yet split out).
import { DEFAULT_PEER_SERIES, parsePeerSeries, type PeerSeries } from "../host/metrics.js";

const PID_DIRECTORY = "/run/edgetun";
const VERSION = "0.1.0";

/** A mistake in how the command was used, found after commander's own checks. */
class UsageError extends EdgetunError {
  constructor(message: string) {
    super("ERR_USAGE", message);
  }
}

function fail(error: unknown): never {
  const { status, text } = reportOf(error);
  process.stderr.write(`edgetun: ${text}\n`);
  process.exit(status);
}

function pidFile(name: string): string {
  return `${PID_DIRECTORY}/${name}.pid`;
}

function parseLogLevel(text: string): LogLevel {
  if (!isLogLevel(text)) throw new InvalidArgumentError("use debug, info, warn or error");
  return text;
}

function parseMetricsListenOption(text: string): MetricsListen | null {
  try {
    return parseMetricsListen(text);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

function parsePeerSeriesOption(text: string): PeerSeries {
  try {
    return parsePeerSeries(text);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

function collectReadyPeer(text: string, previous: string[] = []): string[] {
  try {
    decodeKey(text, "a ready peer's public key");
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
  return [...previous, text.trim()];
}

/** Keys the log must never show: the private key and every pre-shared key of `config`. */
function addSecrets(secrets: { add(secret: Uint8Array): void }, config: InterfaceFileConfig): void {
  secrets.add(config.privateKey);
  for (const peer of config.peers) if (peer.presharedKey) secrets.add(peer.presharedKey);
}

async function up(
  file: string,
  options: {
    interface?: string;
    logLevel: LogLevel;
    metricsListen: MetricsListen | null;
    metricsPeers: PeerSeries;
    readyPeer?: string[];
    metricsListenIsDefault?: boolean;
  },
): Promise<void> {
  const [{ Secrets, createLogger }, { interfaceNameFromPath, readConfigFile }, { Daemon }] =
    await Promise.all([
      import("../host/log.js"),
      import("../host/config.js"),
      import("../host/daemon.js"),
    ]);
  const { nativeLoadError } = await import("../host/native/index.js");
  const secrets = new Secrets();
  const logger = createLogger({ level: options.logLevel, secrets });
  const config = readConfigFile(file);
  addSecrets(secrets, config);
  for (const warning of config.warnings) logger.warn(warning);
  const name = options.interface ?? interfaceNameFromPath(file);
  if (name.length > 15)
    throw new UsageError(`interface name "${name}" is longer than 15 characters`);
  const addonError = nativeLoadError();
  if (addonError) throw addonError;
  if (process.getuid?.() !== 0) {
    logger.warn("not running as root: creating the interface needs CAP_NET_ADMIN");
  }
  const metrics = options.metricsListen
    ? {
        ...options.metricsListen,
        readyPeers: options.readyPeer ?? [],
        peerSeries: options.metricsPeers,
      }
    : null;
  const daemon = await Daemon.start({
    interfaceName: name,
    config,
    logger,
    metrics,
    metricsOptional: options.metricsListenIsDefault ?? false,
  });
  mkdirSync(PID_DIRECTORY, { recursive: true, mode: 0o755 });
  writeFileSync(pidFile(daemon.name), `${process.pid}\n`);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info("stopping", { signal });
    daemon
      .stop()
      .then(() => {
        rmSync(pidFile(daemon.name), { force: true });
        process.exit(0);
      })
      .catch(fail);
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGHUP", () => {
    try {
      const changed = readConfigFile(file);
      addSecrets(secrets, changed);
      for (const warning of changed.warnings) logger.warn(warning);
      // The reconfiguration queue logs the outcome, applied or refused, itself.
      daemon.applyConfig(changed, "reload").catch(() => undefined);
    } catch (error) {
      logger.error("reload failed; the running configuration is unchanged", {
        error: (error as Error).message,
      });
    }
  });
}

function isEdgetunProcess(pid: number): boolean {
  try {
    return (
      readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("edgetun") ||
      readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("cli/main.js")
    );
  } catch {
    return false;
  }
}

async function down(name: string): Promise<void> {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile(name), "utf8").trim());
  } catch {
    throw new UsageError(`no edgetun daemon serves ${name} (no ${pidFile(name)})`);
  }
  if (!Number.isInteger(pid) || pid <= 0 || !isEdgetunProcess(pid)) {
    rmSync(pidFile(name), { force: true });
    throw new UsageError(`no edgetun daemon serves ${name} (stale pid file removed)`);
  }
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + 15_000;
  while (existsSync(`/proc/${pid}`)) {
    if (Date.now() > deadline)
      throw new UsageError(`the daemon for ${name} (pid ${pid}) did not stop in 15 s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function show(name: string | undefined, options: { json?: boolean }): Promise<void> {
  const { formatState, listInterfaces, readInterfaceState } = await import("./show.js");
  const names = name ? [name] : listInterfaces();
  const states: InterfaceState[] = [];
  let failures = 0;
  for (const each of names) {
    try {
      states.push(await readInterfaceState(each));
    } catch (error) {
      if (name) throw error;
      // Listing all: a socket nobody listens on is a crashed daemon's, not an interface; `wg
      // show` passes over it too. Any other failure is reported and the rest still shown.
      if (error instanceof UapiClientError && error.code === "ERR_NO_INTERFACE") continue;
      process.stderr.write(`edgetun: ${reportOf(error).text}\n`);
      failures++;
    }
  }
  if (failures > 0) process.exitCode = 1;
  if (options.json) {
    process.stdout.write(`${JSON.stringify(name ? states[0] : states, null, 2)}\n`);
    return;
  }
  process.stdout.write(states.map((state) => formatState(state)).join("\n"));
}

async function syncconf(name: string, file: string): Promise<void> {
  const [{ readConfigFile, resolveEndpoint }, { uapiRequest }, { parseRunningState, syncRequest }] =
    await Promise.all([import("../host/config.js"), import("./show.js"), import("./syncconf.js")]);
  const config = readConfigFile(file);
  for (const warning of config.warnings) process.stderr.write(`edgetun: warning: ${warning}\n`);
  const endpoints = await Promise.all(
    config.peers.map((peer) => (peer.endpoint ? resolveEndpoint(peer.endpoint) : null)),
  );
  const current = parseRunningState(await uapiRequest(name, "get=1\n\n"));
  await uapiRequest(name, syncRequest(config, current, endpoints));
}

const program = new Command()
  .name("edgetun")
  .description(
    "Userspace WireGuard-compatible tunnel for container edge nodes.\n" +
      "Speaks the WireGuard protocol; manage a running interface with edgetun or wg.",
  )
  .version(VERSION)
  .addHelpText("after", EXIT_STATUS_HELP)
  .showHelpAfterError();

program
  .command("up")
  .description("run the tunnel described by a wg-quick style file, in the foreground")
  .argument(
    "<file.conf>",
    "configuration file; the interface is named after it (edge0.conf → edge0)",
  )
  .option("-i, --interface <name>", "interface name instead of the file's base name")
  .option("--log-level <level>", "debug, info, warn or error", parseLogLevel, "info")
  .addOption(
    new Option("--metrics-listen <host:port>", "serve /metrics, /healthz and /readyz; off: none")
      .argParser(parseMetricsListenOption)
      .default(
        { host: "127.0.0.1", port: DEFAULT_METRICS_PORT },
        `127.0.0.1:${DEFAULT_METRICS_PORT}`,
      ),
  )
  .addOption(
    new Option(
      "--metrics-peers <all|none|N>",
      "which peers get /metrics series of their own: all, none (interface totals only), or the N busiest",
    )
      .argParser(parsePeerSeriesOption)
      .default(DEFAULT_PEER_SERIES),
  )
  .option(
    "--ready-peer <public-key>",
    "/readyz needs a session with this peer (repeatable; default: any one peer)",
    collectReadyPeer,
  )
  .action((file: string, options: Parameters<typeof up>[1], command: Command) =>
    up(file, {
      ...options,
      metricsListenIsDefault: command.getOptionValueSource("metricsListen") === "default",
    }),
  );

program
  .command("down")
  .description("stop the daemon serving an interface and wait until it is gone")
  .argument("<name>", "interface name")
  .action(down);

program
  .command("show")
  .description("show interfaces, peers, endpoints, allowed IPs, handshakes and transfer")
  .argument("[name]", "one interface (default: all)")
  .option("--json", "machine-readable output")
  .action(show);

program
  .command("syncconf")
  .description("apply a changed configuration file; unchanged peers keep their sessions")
  .argument("<name>", "interface name")
  .argument("<file.conf>", "configuration file")
  .action(syncconf);

program
  .command("demo")
  .description(
    "see it work (root): two namespaces, a hub and an edge, a ping and a transfer, then cleanup",
  )
  .option("--megabytes <n>", "how much to send through the tunnel", "100")
  .option("--keep", "leave the namespaces and daemons running for a look around")
  .action(async (options: { megabytes: string; keep?: boolean }) => {
    const { runDemo } = await import("./demo.js");
    process.exitCode = await runDemo({
      megabytes: Number(options.megabytes),
      out: process.stdout,
      keep: options.keep ?? false,
    });
  });

program
  .command("genkey")
  .description("print a new private key (base64), as `wg genkey` does")
  .action(async () => {
    const { generatePrivateKey } = await import("../core/keys.js");
    process.stdout.write(`${generatePrivateKey()}\n`);
  });

program
  .command("pubkey")
  .description("read a private key on stdin and print its public key, as `wg pubkey` does")
  .action(async () => {
    const { publicKeyOf } = await import("../core/keys.js");
    process.stdout.write(`${publicKeyOf(readFileSync(0, "utf8"))}\n`);
  });

program
  .command("genpsk")
  .description("print a new pre-shared key (base64), as `wg genpsk` does")
  .action(async () => {
    const { generatePresharedKey } = await import("../core/keys.js");
    process.stdout.write(`${generatePresharedKey()}\n`);
  });

program.parseAsync().catch(fail);
