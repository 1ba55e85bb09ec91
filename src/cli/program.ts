// The `edgetun` command line, parsed with commander: every command, its options and their
// parsers. main.ts (the entry) loads this for everything but a plain `edgetun show`.
import { readFileSync, rmSync, existsSync } from "node:fs";
import { Command, InvalidArgumentError, Option } from "commander";
// Only what every command needs, or what parsing the options needs, is imported up front:
// the daemon, metrics server, fleet store client, demo, show and syncconf are loaded by the
// command that uses them, so `edgetun up` starts without prom-client's neighbours it does not
// use and `edgetun --version`, `show` or `genkey` without the data path (issue 14).
import { EXIT_STATUS_HELP, UsageError, exitWithReport, optionValue } from "./exit-status.js";
import { decodeKey } from "../core/key-text.js";
import { isLogLevel, type LogLevel } from "../host/log.js";
import {
  DEFAULT_METRICS_PORT,
  DEFAULT_PEER_SERIES,
  parseMetricsListen,
  parsePeerSeries,
  type MetricsListen,
  type PeerSeries,
} from "../host/metrics-listen.js";
import { addUpFleetOptions, registerFleetCommands } from "./fleet.js";

import { SHOW_FIELDS, isShowField } from "./show-fields.js";
import type { UpOptions } from "./up.js";
import { VERSION } from "./version.js";
import { conciseUsageErrors } from "./usage.js";

function parseLogLevel(text: string): LogLevel {
  if (!isLogLevel(text)) throw new InvalidArgumentError("use debug, info, warn or error");
  return text;
}

function parseMetricsListenOption(text: string): MetricsListen | null {
  return optionValue(() => parseMetricsListen(text));
}

function parsePeerSeriesOption(text: string): PeerSeries {
  return optionValue(() => parsePeerSeries(text));
}

/** A number above 0 (the demo checks its upper bound). */
function parseMegabytes(text: string): number {
  const megabytes = Number(text);
  if (text.trim() === "" || !Number.isFinite(megabytes) || megabytes <= 0) {
    throw new InvalidArgumentError("use a number of megabytes above 0");
  }
  return megabytes;
}

function collectReadyPeer(text: string, previous: string[] = []): string[] {
  optionValue(() => decodeKey(text, "a ready peer's public key"));
  return [...previous, text.trim()];
}

async function down(name: string): Promise<void> {
  const { isEdgetunProcess, pidFile } = await import("./pidfile.js");
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

async function show(
  target: string | undefined,
  field: string | undefined,
  options: { json?: boolean },
  command: Command,
): Promise<void> {
  if (field !== undefined && !isShowField(field)) {
    command.error(`unknown field "${field}"; one of ${SHOW_FIELDS.join(", ")}`);
  }
  const { runShow } = await import("./show.js");
  await runShow(target, field, options.json ?? false);
}

async function syncconf(name: string, file: string): Promise<void> {
  const [{ readConfigFile, resolveEndpoint }, { uapiGet, uapiRequest }, { syncRequest }] =
    await Promise.all([
      import("../host/config.js"),
      import("../host/uapi-client.js"),
      import("./syncconf.js"),
    ]);
  const config = readConfigFile(file);
  for (const warning of config.warnings) process.stderr.write(`edgetun: warning: ${warning}\n`);
  const endpoints = await Promise.all(
    config.peers.map((peer) => (peer.endpoint ? resolveEndpoint(peer.endpoint) : null)),
  );
  const current = await uapiGet(name);
  await uapiRequest(name, syncRequest(config, current, endpoints));
}

const program = new Command()
  .name("edgetun")
  .description(
    "Userspace WireGuard-compatible tunnel for container edge nodes.\n" +
      "Speaks the WireGuard protocol; manage a running interface with edgetun or wg.",
  )
  .version(VERSION)
  .addHelpText("after", EXIT_STATUS_HELP);

const upCommand = program
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
  .action(async (file: string, options: UpOptions, command: Command) => {
    const { up } = await import("./up.js");
    await up(file, {
      ...options,
      metricsListenIsDefault: command.getOptionValueSource("metricsListen") === "default",
    });
  });
addUpFleetOptions(upCommand);
registerFleetCommands(program);

program
  .command("down")
  .description("stop the daemon serving an interface and wait until it is gone")
  .argument("<name>", "interface name")
  .action(down);

program
  .command("show")
  .description("show interfaces, peers, endpoints, allowed IPs, handshakes and transfer")
  .argument("[name]", "an interface, all (the default) or interfaces (their names)")
  .argument("[field]", `one field, as wg show prints it: ${SHOW_FIELDS.join(", ")}`)
  .option("--json", "machine-readable output")
  .action(show);

program
  .command("syncconf")
  .description("apply a changed configuration file; unchanged peers keep their sessions")
  .argument("<name>", "interface name")
  .argument("<file.conf>", "configuration file")
  .action(syncconf);

program
  .command("strip")
  .description(
    "print a file as wg setconf/syncconf take it (wg-quick keys out, PrivateKeyFile resolved)",
  )
  .argument("<file.conf>", "configuration file")
  .action(async (file: string) => {
    const { stripConfig } = await import("./strip.js");
    process.stdout.write(stripConfig(file));
  });

program
  .command("version")
  .description("print the version")
  .action(() => {
    process.stdout.write(`edgetun v${VERSION}\n`);
  });

program
  .command("demo")
  .description(
    "see it work (root): two namespaces, a hub and an edge, a ping and a transfer, then cleanup",
  )
  .option("--megabytes <n>", "how much to send through the tunnel", parseMegabytes, 100)
  .option("--keep", "leave the namespaces and daemons running for a look around")
  .action(async (options: { megabytes: number; keep?: boolean }) => {
    const { runDemo } = await import("./demo.js");
    process.exitCode = await runDemo({
      megabytes: options.megabytes,
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

conciseUsageErrors(program);
program.parseAsync().catch(exitWithReport);
