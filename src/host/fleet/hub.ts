// A hub on the fleet: its peers from etcd beside those of its file, and (when asked) its own
// record under the prefix so `fleet add` can issue complete edge configs.
import type { InterfaceFileConfig } from "../config.js";
import type { DaemonAttachment } from "../daemon.js";
import type { Logger } from "../log.js";
import type { ScrapedMetricAdder } from "../metrics.js";
import { EtcdClient, type StoreLocation, type StoreTlsFiles } from "./etcd.js";
import {
  formatHubRecord,
  formatHubStatus,
  hubKey,
  maskAddress,
  statusKey,
  type HubRecord,
  type Prefix,
} from "./records.js";
import type { EndpointSpec } from "../../core/endpoint.js";
import { DaemonFleetSink, type FleetDaemon, type FleetSink } from "./sink.js";
import { FleetWatcher, REJECT_REASONS } from "./watcher.js";

export interface HubFleetOptions {
  location: StoreLocation;
  tls: StoreTlsFiles;
  logger: Logger;
  /** Record this hub under the prefix, reachable at these endpoints. */
  advertise?: { endpoints: EndpointSpec[]; allowedIps: Prefix[] } | null;
  /** How long `up` waits for the first full load before it goes on without (default 5 s). */
  firstLoadTimeoutMs?: number;
  onSecret?: (key: Buffer) => void;
  /** Tests put their own sink here; default: the daemon's reconfiguration queue. */
  sink?: FleetSink;
  /** This hub's name in the fleet: its hub record and its status record. */
  name: string;
  /** How often the hub writes its edges' last handshakes under PREFIX/status/ (0: never). */
  statusIntervalMs?: number;
}

/** Default: a status every 30 s, under a lease of three times that. */
export const DEFAULT_STATUS_INTERVAL_MS = 30_000;

export interface HubFleet extends DaemonAttachment {
  readonly watcher: FleetWatcher;
  readonly client: EtcdClient;
}

export async function attachFleet(
  daemon: FleetDaemon & { readonly name: string },
  config: InterfaceFileConfig,
  options: HubFleetOptions,
): Promise<HubFleet> {
  const { logger } = options;
  const client = new EtcdClient(options.location, options.tls);
  // Checked before anything starts: a hub without an Address cannot say what its subnet is.
  const hubRecord = options.advertise ? hubRecordOf(daemon, config, options.advertise) : null;
  const daemonSink = new DaemonFleetSink(daemon);
  const sink = options.sink ?? daemonSink;
  const watcher = new FleetWatcher({
    client,
    prefix: options.location.prefix,
    sink,
    logger,
    ...(options.onSecret ? { onSecret: options.onSecret } : {}),
  });
  watcher.start();
  let advertising: Promise<void> | null = null;
  let stopped = false;
  if (options.advertise && hubRecord) {
    const record = hubRecord;
    const key = hubKey(options.location.prefix, options.name);
    advertising = (async () => {
      // Until it is written: etcd may be down when the hub starts.
      for (let delay = 200; !stopped; delay = Math.min(5_000, delay * 2)) {
        try {
          await client.put(key, formatHubRecord(record));
          logger.info("hub recorded in the fleet", {
            key,
            endpoints: options.advertise!.endpoints.length,
          });
          return;
        } catch (error) {
          logger.debug("could not record the hub yet", { error: (error as Error).message });
          await new Promise((resolve) => setTimeout(resolve, delay));
        }
      }
    })();
  }
  const statusIntervalMs = options.statusIntervalMs ?? DEFAULT_STATUS_INTERVAL_MS;
  const reporting =
    statusIntervalMs > 0 ? reportStatus(daemon, watcher, client, options, statusIntervalMs) : null;
  const loaded = await watcher.loaded(options.firstLoadTimeoutMs ?? 5_000);
  if (!loaded) {
    logger.warn(
      "fleet not loaded yet; starting with the file's peers, edges follow when etcd answers",
      {
        store: client.address,
      },
    );
  }
  return {
    watcher,
    client,
    readinessNote: () => watcher.readinessNote(),
    peerOwner: daemonSink.peerOwner,
    registerMetrics: (add) => registerFleetMetrics(add, daemon.name, watcher),
    async stop() {
      stopped = true;
      reporting?.stop();
      await watcher.stop();
      await advertising;
      client.close();
    },
  };
}

/**
 * Writes PREFIX/status/NAME every `intervalMs`: the last handshake of each fleet edge that had
 * one, as this hub saw it, under a new lease of three intervals, so that a hub gone quiet
 * drops out of `fleet list` by itself. One record per hub, O(edges) every interval (5,000
 * edges: some 100 KB each 30 s); a failed write is tried again at the next interval.
 */
function reportStatus(
  daemon: FleetDaemon,
  watcher: FleetWatcher,
  client: EtcdClient,
  options: HubFleetOptions,
  intervalMs: number,
): { stop(): void } {
  const key = statusKey(options.location.prefix, options.name);
  const ttlSeconds = Math.max(5, Math.ceil((3 * intervalMs) / 1000));
  let writing = false;
  const write = async () => {
    const publicKey = daemon.device.publicKey;
    if (writing || !publicKey || !watcher.stats.connected) return;
    writing = true;
    try {
      const handshakes = new Map<string, number>();
      for (const edge of watcher.edges.values()) {
        const at = daemon.device.peer(edge.publicKey)?.lastHandshakeWallMs ?? 0;
        if (at > 0) handshakes.set(edge.name, Math.floor(at / 1000));
      }
      const record = formatHubStatus({
        publicKey,
        updated: Math.floor(Date.now() / 1000),
        handshakes,
      });
      await client.put(key, record, await client.grantLease(ttlSeconds));
    } catch (error) {
      options.logger.debug("could not write the hub's status to the fleet", {
        error: (error as Error).message,
      });
    } finally {
      writing = false;
    }
  };
  const timer = setInterval(() => void write(), intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

function hubRecordOf(
  daemon: FleetDaemon,
  config: InterfaceFileConfig,
  advertise: NonNullable<HubFleetOptions["advertise"]>,
): Omit<HubRecord, "name"> {
  const own = config.addresses[0];
  if (!own)
    throw new Error("--advertise-endpoint needs an Address in the hub's file (the fleet subnet)");
  const publicKey = daemon.device.publicKey;
  if (!publicKey) throw new Error("--advertise-endpoint needs the hub's PrivateKey");
  const subnet = { address: maskAddress(own.address, own.cidr), cidr: own.cidr };
  return {
    publicKey,
    endpoints: advertise.endpoints,
    subnet,
    address: own.address,
    allowedIps: [subnet, ...advertise.allowedIps],
  };
}

function registerFleetMetrics(add: ScrapedMetricAdder, name: string, watcher: FleetWatcher): void {
  const labels = { interface: name };
  const stats = watcher.stats;
  add(
    "gauge",
    "edgetun_fleet_store_connected",
    "1 while the fleet's etcd answers, else 0.",
    ["interface"],
    (emit) => emit(labels, stats.connected ? 1 : 0),
  );
  add(
    "gauge",
    "edgetun_fleet_edges",
    "Edges from the fleet store in effect on this hub.",
    ["interface"],
    (emit) => emit(labels, watcher.edges.size),
  );
  add(
    "gauge",
    "edgetun_fleet_revision",
    "The etcd revision up to which every fleet change is applied.",
    ["interface"],
    (emit) => emit(labels, stats.revision),
  );
  add(
    "counter",
    "edgetun_fleet_changes_applied_total",
    "Fleet changes applied to the peers, by kind (upsert, remove).",
    ["interface", "kind"],
    (emit) => {
      emit({ ...labels, kind: "upsert" }, stats.upserts);
      emit({ ...labels, kind: "remove" }, stats.removals);
    },
  );
  const reasonLabels = REJECT_REASONS.map((reason) => ({ interface: name, reason }));
  add(
    "counter",
    "edgetun_fleet_records_rejected_total",
    "Fleet records not applied: malformed, public_key or allowed_ips conflict, apply_failed.",
    ["interface", "reason"],
    (emit) => {
      for (const each of reasonLabels) emit(each, stats.rejected[each.reason]);
    },
  );
  add(
    "counter",
    "edgetun_fleet_full_loads_total",
    "Full reads of the fleet: the first load and each resync after a compaction.",
    ["interface"],
    (emit) => emit(labels, stats.fullLoads),
  );
  add(
    "counter",
    "edgetun_fleet_store_reconnects_total",
    "Times the fleet's etcd answered again after being unreachable.",
    ["interface"],
    (emit) => emit(labels, stats.reconnects),
  );
}
