// `edgetun fleet …` and the fleet options of `edgetun up`. Store credentials come from files
// named by options or environment variables, never from the command line itself.
import { readFileSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { Command, InvalidArgumentError, Option } from "commander";
import { parseCidr } from "../core/ipaddr.js";
import { EndpointFormatError, parseEndpoint, type EndpointSpec } from "../core/endpoint.js";
import type { InterfaceFileConfig } from "../host/config.js";
import type { Daemon, DaemonAttachment } from "../host/daemon.js";
import type { Logger } from "../host/log.js";
import type { EtcdClient, StoreTlsFiles } from "../host/fleet/etcd.js";
import { parseStoreUrl, type StoreLocation } from "../host/fleet/store-url.js";
import type { Prefix } from "../host/fleet/records.js";
// The store client, the hub's watcher and the fleet commands' work are loaded by the command
// or option that uses them: a plain `edgetun up` starts without them (issue 14).
import { UsageError, optionValue } from "./exit-status.js";

export const STORE_ENV = "EDGETUN_FLEET";

interface TlsOptions {
  storeCa?: string;
  storeCert?: string;
  storeKey?: string;
}

function readTlsFiles(options: TlsOptions): StoreTlsFiles {
  const read = (path: string | undefined, what: string): Buffer | undefined => {
    if (!path) return undefined;
    try {
      return readFileSync(path);
    } catch (error) {
      throw new InvalidArgumentError(
        `cannot read the ${what} ${path}: ${(error as Error).message}`,
      );
    }
  };
  const files: StoreTlsFiles = {};
  const ca = read(options.storeCa, "store CA file");
  const cert = read(options.storeCert, "store client certificate");
  const key = read(options.storeKey, "store client key");
  if (ca) files.ca = ca;
  if (cert) files.cert = cert;
  if (key) files.key = key;
  if ((cert === undefined) !== (key === undefined)) {
    throw new UsageError("--store-cert and --store-key go together");
  }
  return files;
}

/** --store-ca/--store-cert/--store-key, each also from the environment. */
function addTlsOptions(command: Command): Command {
  return command
    .addOption(
      new Option("--store-ca <file>", "CA certificate(s) to check etcd's server certificate").env(
        "EDGETUN_STORE_CA",
      ),
    )
    .addOption(
      new Option("--store-cert <file>", "client certificate for etcd").env("EDGETUN_STORE_CERT"),
    )
    .addOption(new Option("--store-key <file>", "client key for etcd").env("EDGETUN_STORE_KEY"));
}

function parseStore(text: string): StoreLocation {
  return optionValue(() => parseStoreUrl(text));
}

function parsePrefix(text: string, previous: Prefix[] = []): Prefix[] {
  const added: Prefix[] = [];
  for (const part of text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)) {
    added.push(optionValue(() => parseCidr(part)));
  }
  return [...previous, ...added];
}

function parseEndpointOption(text: string, previous: EndpointSpec[] = []): EndpointSpec[] {
  // As config.ts's parseEndpointSetting, without loading the configuration reader.
  const trimmed = text.trim();
  try {
    return [...previous, parseEndpoint(trimmed, { names: true })];
  } catch (error) {
    if (!(error instanceof EndpointFormatError)) throw error;
    throw new InvalidArgumentError(`invalid endpoint ${JSON.stringify(trimmed)}: ${error.message}`);
  }
}

function parseStatusInterval(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value > 3600) throw new InvalidArgumentError("0 to 3600 seconds");
  return value;
}

function parseKeepalive(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value > 65535) throw new InvalidArgumentError("0 to 65535 seconds");
  return value;
}

// --- edgetun up … --peers-from ------------------------------------------------------------

export interface UpFleetOptions extends TlsOptions {
  peersFrom?: StoreLocation;
  advertiseEndpoint?: EndpointSpec[];
  advertiseName?: string;
  advertiseAllowedIps?: Prefix[];
  fleetStatusInterval?: number;
}

export function addUpFleetOptions(command: Command): Command {
  command
    .addOption(
      new Option(
        "--peers-from <url>",
        "also take peers from the fleet in etcd (etcd://HOST:PORT/PREFIX, etcds:// for TLS) and follow its changes",
      ).argParser(parseStore),
    )
    .addOption(
      new Option(
        "--advertise-endpoint <host:port>",
        "record this hub under the fleet's prefix, reachable there (repeatable)",
      ).argParser(parseEndpointOption),
    )
    .option(
      "--advertise-name <name>",
      "this hub's name in the fleet, for its hub and status records (default: the host name)",
    )
    .option(
      "--fleet-status-interval <seconds>",
      "write the edges' last handshakes to the fleet this often, for `fleet list` (0: never)",
      parseStatusInterval,
    )
    .option(
      "--advertise-allowed-ips <cidrs>",
      "besides the subnet, what edges should route to this hub (e.g. the cluster's pod CIDR)",
      parsePrefix,
    );
  return addTlsOptions(command);
}

/** The attach hook for Daemon.start, or undefined when `up` runs without a fleet. */
export async function fleetAttachment(
  options: UpFleetOptions,
  config: InterfaceFileConfig,
  logger: Logger,
  onSecret: (key: Buffer) => void,
): Promise<((daemon: Daemon) => Promise<DaemonAttachment>) | undefined> {
  if (!options.peersFrom) {
    if (options.advertiseEndpoint) {
      throw new UsageError("--advertise-endpoint needs --peers-from");
    }
    return undefined;
  }
  const [{ checkName }, { DEFAULT_STATUS_INTERVAL_MS, attachFleet }] = await Promise.all([
    import("../host/fleet/records.js"),
    import("../host/fleet/hub.js"),
  ]);
  const location = options.peersFrom;
  const tls = readTlsFiles(options);
  const name = checkName(
    options.advertiseName ??
      hostname()
        .toLowerCase()
        .replace(/[^a-z0-9._-]/g, "-"),
  );
  const advertise = options.advertiseEndpoint
    ? { endpoints: options.advertiseEndpoint, allowedIps: options.advertiseAllowedIps ?? [] }
    : null;
  const statusIntervalMs =
    (options.fleetStatusInterval ?? DEFAULT_STATUS_INTERVAL_MS / 1000) * 1000;
  return (daemon) =>
    attachFleet(daemon, config, {
      location,
      tls,
      logger,
      name,
      advertise,
      onSecret,
      statusIntervalMs,
    });
}

// --- edgetun fleet … ---------------------------------------------------------------------

interface StoreOptions extends TlsOptions {
  store?: StoreLocation;
}

async function withStore<T>(
  options: StoreOptions,
  work: (client: EtcdClient, prefix: string) => Promise<T>,
): Promise<T> {
  if (!options.store) {
    throw new InvalidArgumentError(
      `no store: give --store etcd://HOST:PORT/PREFIX or set ${STORE_ENV}`,
    );
  }
  const { EtcdClient } = await import("../host/fleet/etcd.js");
  const client = new EtcdClient(options.store, readTlsFiles(options));
  try {
    return await work(client, options.store.prefix);
  } finally {
    client.close();
  }
}

function storeCommand(parent: Command, name: string): Command {
  const command = parent
    .command(name)
    .addOption(
      new Option("--store <url>", "the fleet: etcd://HOST:PORT/PREFIX (etcds:// for TLS)")
        .env(STORE_ENV)
        .argParser(parseStore),
    );
  return addTlsOptions(command);
}

export function registerFleetCommands(program: Command): void {
  const fleet = program
    .command("fleet")
    .description("manage a fleet of edges kept in etcd (hubs follow it with `up --peers-from`)");

  storeCommand(fleet, "add")
    .description(
      "add an edge: takes the next free tunnel address and prints the edge's wg-quick config",
    )
    .argument("<name>", "edge name (a-z 0-9 . _ -)")
    .option(
      "--pod-cidr <cidr>",
      "the edge's pod CIDR, routed to it through the hub (repeatable)",
      parsePrefix,
    )
    .option("--public-key <key>", "the edge's public key (default: a key pair is made and printed)")
    .option("--endpoint <host:port>", "where the hub can reach the edge, if it has a fixed address")
    .option(
      "--persistent-keepalive <seconds>",
      "hub-side keepalive towards the edge",
      parseKeepalive,
    )
    .option(
      "--store-preshared-key",
      "add a pre-shared key and keep it IN CLEAR in etcd (protect etcd with TLS, auth and encryption at rest)",
    )
    .option("-o, --output <file>", "write the config to this file (mode 0600) instead of stdout")
    .action(
      async (
        name: string,
        options: StoreOptions & {
          podCidr?: Prefix[];
          publicKey?: string;
          endpoint?: string;
          persistentKeepalive?: number;
          storePresharedKey?: boolean;
          output?: string;
        },
      ) => {
        const [{ checkName }, { addEdge }, { parseEndpointSetting }] = await Promise.all([
          import("../host/fleet/records.js"),
          import("../host/fleet/admin.js"),
          import("../host/config.js"),
        ]);
        checkName(name);
        const added = await withStore(options, (client, prefix) =>
          addEdge(client, prefix, {
            name,
            podCidrs: options.podCidr ?? [],
            ...(options.publicKey ? { publicKey: options.publicKey } : {}),
            endpoint: options.endpoint ? parseEndpointSetting(options.endpoint) : null,
            persistentKeepalive: options.persistentKeepalive ?? 0,
            storePresharedKey: options.storePresharedKey ?? false,
          }),
        );
        if (options.output) writeFileSync(options.output, added.config, { mode: 0o600 });
        else process.stdout.write(added.config);
      },
    );

  storeCommand(fleet, "remove")
    .description("remove an edge; hubs drop it at once, its address becomes free")
    .argument("<name>", "edge name")
    .action(async (name: string, options: StoreOptions) => {
      const { removeEdge } = await import("../host/fleet/admin.js");
      await withStore(options, (client, prefix) => removeEdge(client, prefix, name));
    });

  storeCommand(fleet, "list")
    .description("one line per hub and per edge, with the last handshake the hubs reported")
    .option("--json", "machine-readable output")
    .action(async (options: StoreOptions & { json?: boolean }) => {
      const { formatFleet, lastHandshakes, readFleet } = await import("../host/fleet/admin.js");
      const contents = await withStore(options, (client, prefix) => readFleet(client, prefix));
      const now = Math.floor(Date.now() / 1000);
      if (!options.json) {
        process.stdout.write(formatFleet(contents, now));
        return;
      }
      const b64 = (key: Buffer) => key.toString("base64");
      const handshakes = lastHandshakes(contents.statuses);
      process.stdout.write(
        `${JSON.stringify(
          {
            revision: contents.revision,
            hubs: contents.hubs.map((h) => ({ name: h.name, publicKey: b64(h.publicKey) })),
            edges: contents.edges.map((e) => ({
              name: e.name,
              publicKey: b64(e.publicKey),
              lastHandshake: handshakes.get(e.name) ?? null,
            })),
            malformed: contents.malformed,
          },
          null,
          2,
        )}\n`,
      );
    });

  storeCommand(fleet, "export")
    .description(
      "the fleet's edges as wg-quick [Peer] sections (for a hub without etcd, or wg addconf)",
    )
    .option("-o, --output <file>", "write to this file (mode 0600) instead of stdout")
    .action(async (options: StoreOptions & { output?: string }) => {
      const { exportPeers, readFleet } = await import("../host/fleet/admin.js");
      const contents = await withStore(options, (client, prefix) => readFleet(client, prefix));
      const text = exportPeers(contents);
      if (options.output) writeFileSync(options.output, text, { mode: 0o600 });
      else process.stdout.write(text);
    });
}
