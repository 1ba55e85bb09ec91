// Keeps a hub's peers in step with the fleet in etcd: loads every edge, then watches the
// prefix and hands each change to the sink as it happens. After a disconnect the watch
// resumes from the last revision it processed (no change lost, none applied twice); if etcd
// compacted that revision away, the watcher reads everything again and applies only the
// difference. While etcd is unreachable the hub keeps what it has and says so.
import type { Logger } from "../log.js";
import { shortKey } from "../log.js";
import { EtcdError, type EtcdClient, type WatchEvent } from "./etcd.js";
import {
  EDGES,
  FleetRecordError,
  nameOfKey,
  parseEdgeRecord,
  sameEdge,
  type EdgeRecord,
} from "./records.js";
import { FleetConflictError, type FleetSink } from "./sink.js";

export type RejectReason = "malformed" | "public_key" | "allowed_ips" | "apply_failed";
export const REJECT_REASONS: readonly RejectReason[] = [
  "malformed",
  "public_key",
  "allowed_ips",
  "apply_failed",
];

export class FleetStats {
  connected = false;
  /** Wall-clock ms since when etcd has been unreachable; 0 while connected. */
  disconnectedSinceMs = 0;
  lastError = "";
  /** Full reads of the fleet: the first load and every resync after a compaction. */
  fullLoads = 0;
  compactions = 0;
  reconnects = 0;
  /** Changes handed to the sink, by kind. */
  upserts = 0;
  removals = 0;
  readonly rejected: Record<RejectReason, number> = {
    malformed: 0,
    public_key: 0,
    allowed_ips: 0,
    apply_failed: 0,
  };
  /** The newest revision whose changes are all applied (or refused). */
  revision = 0;
}

export interface FleetWatcherOptions {
  client: EtcdClient;
  /** The fleet's prefix, e.g. "/edgetun/prod". */
  prefix: string;
  sink: FleetSink;
  logger: Logger;
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Told about every pre-shared key read from the store, so the logger can redact it. */
  onSecret?: (key: Buffer) => void;
  wallClock?: () => number;
}

export class FleetWatcher {
  readonly stats = new FleetStats();
  /** The edges in effect, by name. */
  readonly edges = new Map<string, EdgeRecord>();
  /** Edges refused (conflict, failure), kept to try again when another edge changes or leaves. */
  private readonly refused = new Map<string, EdgeRecord>();
  private readonly edgesPrefix: string;
  private needFullLoad = true;
  /** Keys already processed at stats.revision; null: every change up to it is in. */
  private keysAtRevision: Set<string> | null = null;
  private stopped = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private currentWatch: { close(): void } | null = null;
  private firstLoad: Promise<void>;
  private firstLoadDone!: () => void;

  constructor(private readonly options: FleetWatcherOptions) {
    this.edgesPrefix = `${options.prefix}/${EDGES}/`;
    this.firstLoad = new Promise((resolve) => (this.firstLoadDone = resolve));
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Resolves once the whole fleet has been read and applied, or after `timeoutMs`. */
  async loaded(timeoutMs = Infinity): Promise<boolean> {
    if (!Number.isFinite(timeoutMs)) {
      await this.firstLoad;
      return true;
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>(
      (resolve) => (timer = setTimeout(resolve, timeoutMs, false)),
    );
    const done = await Promise.race([this.firstLoad.then(() => true), timeout]);
    clearTimeout(timer);
    return done;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.currentWatch?.close();
    this.wake?.();
    await this.loop;
  }

  /** For /readyz: null while all is well, else why the fleet may be out of date. */
  readinessNote(): string | null {
    if (this.stats.connected) return null;
    if (this.stats.disconnectedSinceMs === 0) return "fleet store: connecting";
    const seconds = Math.round((this.now() - this.stats.disconnectedSinceMs) / 1000);
    return `fleet store unreachable for ${seconds} s (${this.stats.lastError}); serving the ${this.edges.size} edges known at revision ${this.stats.revision}`;
  }

  private now(): number {
    return (this.options.wallClock ?? Date.now)();
  }

  private async run(): Promise<void> {
    const minDelay = this.options.retryMinMs ?? 200;
    const maxDelay = this.options.retryMaxMs ?? 5_000;
    let delay = minDelay;
    while (!this.stopped) {
      try {
        if (this.needFullLoad) await this.fullLoad();
        await this.watchUntilEnd(() => {
          delay = minDelay;
        });
      } catch (error) {
        if (this.stopped) break;
        if (error instanceof EtcdError && error.code === "ERR_STORE_COMPACTED") {
          this.stats.compactions++;
          this.options.logger.warn("fleet watch compacted away; reading the whole fleet again", {
            revision: this.stats.revision,
            oldestKept: error.compactRevision,
          });
          this.needFullLoad = true;
          continue;
        }
        this.disconnected(error as Error);
        await this.sleep(delay);
        delay = Math.min(maxDelay, delay * 2);
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private connected(): void {
    const stats = this.stats;
    if (!stats.connected && stats.disconnectedSinceMs !== 0) {
      stats.reconnects++;
      this.options.logger.info("fleet store reachable again", {
        store: this.options.client.address,
        downSeconds: Math.round((this.now() - stats.disconnectedSinceMs) / 1000),
        revision: stats.revision,
      });
    }
    stats.connected = true;
    stats.disconnectedSinceMs = 0;
    stats.lastError = "";
  }

  private disconnected(error: Error): void {
    const stats = this.stats;
    const message = error.message;
    if (stats.connected || stats.disconnectedSinceMs === 0) {
      this.options.logger.warn("fleet store unreachable; keeping the current peers", {
        store: this.options.client.address,
        error: message,
        edges: this.edges.size,
        revision: stats.revision,
      });
      stats.disconnectedSinceMs = this.now();
    }
    stats.connected = false;
    stats.lastError = message;
  }

  /** Reads every edge at one revision and applies the difference to what is in effect. */
  private async fullLoad(): Promise<void> {
    const { revision, kvs } = await this.options.client.rangePrefix(this.edgesPrefix);
    this.connected();
    const wanted = new Map<string, EdgeRecord | null>();
    for (const kv of kvs) wanted.set(kv.key, this.parse(kv.key, kv.value));
    const names = new Set<string>();
    for (const [, edge] of wanted) if (edge) names.add(edge.name);
    // Keys present but malformed keep their last good version: names of those are kept too.
    for (const key of wanted.keys()) {
      try {
        names.add(nameOfKey(this.options.prefix, EDGES, key));
      } catch {
        // a key with a bad name never had a good version
      }
    }
    let removed = 0;
    for (const [name, edge] of [...this.edges]) {
      if (!names.has(name)) {
        await this.remove(edge);
        removed++;
      }
    }
    for (const name of [...this.refused.keys()]) if (!names.has(name)) this.refused.delete(name);
    let changed = 0;
    for (const edge of wanted.values()) {
      if (edge && (await this.upsert(edge))) changed++;
    }
    this.stats.fullLoads++;
    this.stats.revision = revision;
    this.keysAtRevision = null;
    this.needFullLoad = false;
    this.options.logger.info("fleet loaded", {
      revision,
      records: kvs.length,
      edges: this.edges.size,
      changed,
      removed,
      refused: this.refused.size,
    });
    this.firstLoadDone();
  }

  /** One watch stream, from where the last one left off, until it ends (always with an error). */
  private watchUntilEnd(onCreated: () => void): Promise<void> {
    const stats = this.stats;
    const resumeAt = this.keysAtRevision === null ? stats.revision + 1 : stats.revision;
    return new Promise((resolve, reject) => {
      let applying: Promise<void> = Promise.resolve();
      const watch = this.options.client.watch(this.edgesPrefix, resumeAt, {
        created: (revision) => {
          if (revision !== 0 && revision < stats.revision) {
            // The store is older than what we applied (restored from a backup): start over.
            this.options.logger.warn("fleet store revision went back; reading the whole fleet", {
              storeRevision: revision,
              applied: stats.revision,
            });
            this.needFullLoad = true;
            watch.close();
            return;
          }
          this.connected();
          onCreated();
        },
        events: (events) => {
          applying = applying
            .then(() => this.applyEvents(events))
            .catch((error: Error) => {
              // A change the sink failed on halfway: only a full read can say what is in effect.
              this.options.logger.error("fleet change failed; reading the whole fleet again", {
                error: error.message,
              });
              this.needFullLoad = true;
              watch.close();
            });
        },
        ended: (error) => {
          this.currentWatch = null;
          void applying.then(() => {
            if (this.stopped || (error === null && this.needFullLoad)) resolve();
            else reject(error ?? new EtcdError("ERR_STORE_UNREACHABLE", "the watch ended"));
          });
        },
      });
      this.currentWatch = watch;
      if (this.stopped) watch.close();
    });
  }

  private async applyEvents(events: WatchEvent[]): Promise<void> {
    const stats = this.stats;
    for (const event of events) {
      if (this.stopped) return;
      const revision = event.modRevision;
      // Already seen before a reconnect: skip, so nothing is applied twice.
      if (revision < stats.revision) continue;
      if (revision === stats.revision && (this.keysAtRevision?.has(event.key) ?? true)) continue;
      if (event.type === "put") {
        const edge = this.parse(event.key, event.value);
        if (edge) await this.upsert(edge);
      } else {
        await this.deleted(event.key);
      }
      if (revision > stats.revision || this.keysAtRevision === null) {
        stats.revision = revision;
        this.keysAtRevision = new Set();
      }
      this.keysAtRevision.add(event.key);
    }
  }

  private parse(key: string, value: Buffer): EdgeRecord | null {
    try {
      const name = nameOfKey(this.options.prefix, EDGES, key);
      const edge = parseEdgeRecord(name, value);
      if (edge.presharedKey) this.options.onSecret?.(edge.presharedKey);
      return edge;
    } catch (error) {
      if (!(error instanceof FleetRecordError)) throw error;
      this.stats.rejected.malformed++;
      this.options.logger.warn("fleet record skipped: malformed", {
        key,
        error: error.message,
      });
      return null;
    }
  }

  /** Applies one edge (new or changed); false when it was already in effect or refused. */
  private async upsert(edge: EdgeRecord): Promise<boolean> {
    const previous = this.edges.get(edge.name) ?? null;
    if (previous && sameEdge(previous, edge)) {
      this.refused.delete(edge.name);
      return false;
    }
    const started = performance.now();
    try {
      await this.options.sink.upsertPeer(edge, previous);
    } catch (error) {
      const reason: RejectReason =
        error instanceof FleetConflictError ? error.kind : "apply_failed";
      this.stats.rejected[reason]++;
      this.refused.set(edge.name, edge);
      this.options.logger.warn("fleet edge refused; the running peers are unchanged", {
        edge: edge.name,
        publicKey: shortKey(edge.publicKey.toString("base64")),
        reason,
        error: (error as Error).message,
      });
      return false;
    }
    this.refused.delete(edge.name);
    this.edges.set(edge.name, edge);
    this.stats.upserts++;
    this.options.logger.debug("fleet edge applied", {
      edge: edge.name,
      publicKey: shortKey(edge.publicKey.toString("base64")),
      change: previous ? "changed" : "added",
      // In the daemon's queue, routes included (the bench reads it).
      applyMs: Math.round((performance.now() - started) * 100) / 100,
    });
    if (previous) await this.retryRefused();
    return true;
  }

  private async deleted(key: string): Promise<void> {
    let name: string;
    try {
      name = nameOfKey(this.options.prefix, EDGES, key);
    } catch {
      return; // a malformed key that was never applied
    }
    this.refused.delete(name);
    const edge = this.edges.get(name);
    if (!edge) return;
    await this.remove(edge);
    await this.retryRefused();
  }

  private async remove(edge: EdgeRecord): Promise<void> {
    await this.options.sink.removePeer(edge);
    this.edges.delete(edge.name);
    this.stats.removals++;
    this.options.logger.debug("fleet edge removed", { edge: edge.name });
  }

  /** An edge refused for a conflict may fit once another one changed or left. */
  private async retryRefused(): Promise<void> {
    for (const edge of [...this.refused.values()].slice(0, 64)) {
      this.refused.delete(edge.name);
      const previous = this.edges.get(edge.name) ?? null;
      try {
        await this.options.sink.upsertPeer(edge, previous);
      } catch {
        this.refused.set(edge.name, edge);
        continue;
      }
      this.edges.set(edge.name, edge);
      this.stats.upserts++;
      this.options.logger.info("fleet edge applied after an earlier conflict", { edge: edge.name });
    }
  }
}
