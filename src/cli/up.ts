// `edgetun up FILE`: the tunnel a wg-quick file describes, run in the foreground, with
// wg-quick's sequence around it: PreUp hooks; the interface, its key, peers, addresses and
// routes; DNS; PostUp hooks. Down (SIGTERM, SIGINT, `edgetun down`) reverses it: PreDown
// hooks, SaveConfig, the interface removed, DNS taken back, PostDown hooks.
import { readFileSync } from "node:fs";
import { interfaceNameFromPath, readConfigFile } from "../host/config.js";
import { ConfigError } from "../host/errors.js";
import type { InterfaceFileConfig } from "../host/config.js";
import { Daemon } from "../host/daemon.js";
import { setDns, unsetDns } from "../host/dns.js";
import { runHooks, type HookPhase } from "../host/hooks.js";
import { Secrets, createLogger, type LogLevel, type Logger } from "../host/log.js";
import type { MetricsListen, PeerSeries } from "../host/metrics.js";
import { fleetAttachment, type UpFleetOptions } from "./fleet.js";
import { nativeLoadError } from "../host/native/index.js";
import { handleGet } from "../host/uapi.js";
import { keepYoungGenerationSmall } from "../host/heap.js";
import { currentAddresses, savedConfigText, writeConfigFile } from "../host/saveconfig.js";
import { removePidFile, removeStalePidFile, writePidFile } from "./pidfile.js";

export interface UpOptions extends UpFleetOptions {
  interface?: string;
  logLevel: LogLevel;
  metricsListen: MetricsListen | null;
  metricsPeers: PeerSeries;
  readyPeer?: string[];
  metricsListenIsDefault?: boolean;
}

/** Keys the log must never show: the private key and every pre-shared key of `config`. */
function addSecrets(secrets: Secrets, config: InterfaceFileConfig): void {
  if (config.privateKey) secrets.add(config.privateKey);
  for (const peer of config.peers) if (peer.presharedKey) secrets.add(peer.presharedKey);
}

export async function up(file: string, options: UpOptions): Promise<void> {
  keepYoungGenerationSmall();
  const secrets = new Secrets();
  const logger = createLogger({ level: options.logLevel, secrets });
  let config = readConfigFile(file);
  addSecrets(secrets, config);
  for (const warning of config.warnings) logger.warn(warning);
  const name = options.interface ?? interfaceNameFromPath(file);
  if (name.length > 15) {
    throw new ConfigError(
      "ERR_CONFIG_VALUE",
      file,
      0,
      `interface name "${name}" is longer than 15 characters`,
    );
  }
  if (config.privateKey === null) {
    logger.warn(
      config.hooks.preUp.length + config.hooks.postUp.length > 0
        ? "no PrivateKey in the file: a hook is expected to set one (wg set IF private-key FILE)"
        : "no PrivateKey in the file: no handshakes until one is set with wg set IF private-key FILE",
    );
  }
  const addonError = nativeLoadError();
  if (addonError) throw addonError;
  if (!hasNetAdmin()) {
    logger.warn("without CAP_NET_ADMIN (or root) the interface cannot be created");
  }
  removeStalePidFile(name);
  const metrics = options.metricsListen
    ? {
        ...options.metricsListen,
        readyPeers: options.readyPeer ?? [],
        peerSeries: options.metricsPeers,
      }
    : null;

  // A failing PreUp stops here, before anything has changed.
  await runHooks("PreUp", config.hooks.preUp, name, logger);
  let shutdown: (reason: string, interfaceGone: boolean) => void = () => undefined;
  const attach = await fleetAttachment(options, config, logger, (key) => secrets.add(key));
  const daemon = await Daemon.start({
    interfaceName: name,
    config,
    logger,
    metrics,
    metricsOptional: options.metricsListenIsDefault ?? false,
    onInterfaceGone: () => shutdown("interface deleted", true),
    attach,
    // The pid file is the last thing that can fail (a non-root user without its runtime
    // directory): written before "interface up", never after.
    beforeUp: (interfaceName) => writePidFile(interfaceName),
  });
  let dnsSet = false;
  let stopping = false;
  shutdown = (reason, interfaceGone) => {
    if (stopping) return;
    stopping = true;
    logger.info("stopping", { reason });
    bringDown(daemon, config, file, { interfaceGone, dnsSet }, logger).then(
      () => {
        removePidFile(daemon.name);
        process.exit(0);
      },
      (error: unknown) => {
        logger.error("stopping failed", { error: (error as Error).message });
        removePidFile(daemon.name);
        process.exit(1);
      },
    );
  };
  // Handlers go in as soon as "interface up" is logged, before DNS and PostUp: a stop asked for
  // while those run (systemd stopping a unit that is still starting) must still remove the
  // pid file and control socket, which the default action of SIGTERM would leave behind.
  process.on("SIGTERM", () => shutdown("SIGTERM", false));
  process.on("SIGINT", () => shutdown("SIGINT", false));
  try {
    dnsSet = await setDns(daemon.name, config.dns, logger);
    await runHooks("PostUp", config.hooks.postUp, daemon.name, logger);
  } catch (error) {
    // A stop that came meanwhile is already taking the interface down.
    if (stopping) return;
    stopping = true;
    // As wg-quick's trap: a failed PostUp (or DNS) takes the interface down again.
    if (dnsSet) await unsetDns(daemon.name, logger);
    await daemon.stop();
    removePidFile(daemon.name);
    throw error;
  }
  process.on("SIGHUP", () => {
    try {
      const changed = readConfigFile(file);
      addSecrets(secrets, changed);
      for (const warning of changed.warnings) logger.warn(warning);
      daemon.applyConfig(changed, "reload").then(
        () => {
          // Hooks, DNS and SaveConfig of the new file apply from the next down on.
          config = changed;
        },
        // The reconfiguration queue logs the outcome, applied or refused, itself.
        () => undefined,
      );
    } catch (error) {
      logger.error("reload failed; the running configuration is unchanged", {
        error: (error as Error).message,
      });
    }
  });
}

/** Hooks while stopping are reported but do not keep the tunnel up: the daemon was told to stop. */
async function hooksLogged(
  phase: HookPhase,
  commands: readonly string[],
  name: string,
  logger: Logger,
): Promise<void> {
  try {
    await runHooks(phase, commands, name, logger);
  } catch (error) {
    logger.error((error as Error).message, { interface: name });
  }
}

async function bringDown(
  daemon: Daemon,
  config: InterfaceFileConfig,
  file: string,
  state: { interfaceGone: boolean; dnsSet: boolean },
  logger: Logger,
): Promise<void> {
  // A deleted interface has no state left to save and nothing for PreDown to act on.
  if (!state.interfaceGone) {
    await hooksLogged("PreDown", config.hooks.preDown, daemon.name, logger);
    if (config.saveConfig) {
      try {
        await saveConfig(daemon, config, file);
        logger.info("configuration saved", { file });
      } catch (error) {
        logger.error("SaveConfig failed; the file is unchanged", {
          error: (error as Error).message,
        });
      }
    }
  }
  await daemon.stop();
  if (state.dnsSet) await unsetDns(daemon.name, logger);
  await hooksLogged("PostDown", config.hooks.postDown, daemon.name, logger);
}

async function saveConfig(daemon: Daemon, config: InterfaceFileConfig, file: string) {
  const uapiLines = handleGet(daemon)
    .split("\n")
    .filter((line) => line !== "" && !line.startsWith("errno="));
  const { addresses, mtu } = await currentAddresses(daemon.name);
  // A key that still comes from PrivateKeyFile stays a reference, not a copy of the key.
  const running = daemon.device.identity?.privateKey.raw;
  const keyFromFile =
    config.privateKeyFile !== null &&
    config.privateKey !== null &&
    running !== undefined &&
    Buffer.from(running).equals(config.privateKey);
  writeConfigFile(
    file,
    savedConfigText(
      config,
      uapiLines,
      addresses,
      mtu,
      keyFromFile ? `PrivateKeyFile = ${config.privateKeyFile}` : undefined,
    ),
  );
}

/** CAP_NET_ADMIN in the effective set (bit 12 of /proc/self/status's CapEff). */
function hasNetAdmin(): boolean {
  try {
    const status = readFileSync("/proc/self/status", "utf8");
    const effective = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
    return effective !== undefined && (BigInt(`0x${effective}`) & (1n << 12n)) !== 0n;
  } catch {
    return process.getuid?.() === 0;
  }
}
