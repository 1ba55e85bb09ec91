// The native receive path (native/dataplane.c): a thread of the addon's that reads the data
// socket, opens transport data of the keypairs installed here, checks replay and the inner
// source address, and writes inner packets to the TUN device without waking the JS thread.
// This wrapper only moves state in and deltas out; src/host/dataplane.ts decides what.
import { loadAddon } from "./addon.js";
import type { UdpReceiveSlots } from "./batch.js";

/** Drops counted by the native path, named as the core's reasons (src/core/drops.ts). */
export interface DataPlaneDrops {
  key_expired: number;
  counter_too_large: number;
  decryption_failed: number;
  replayed: number;
  bad_inner_packet: number;
  source_not_allowed: number;
  /** A datagram for the JS path found the hand-over ring full. */
  slow_path_full: number;
}

/** Totals since the plane was created. */
export interface DataPlaneStats {
  /** Transport messages opened and accepted here (keepalives included). */
  opened: number;
  /** Datagrams handed to the JS path (handshakes, data for indices not held here). */
  toJs: number;
  tunWriteErrors: number;
  /** Datagrams waiting in the hand-over ring. */
  waiting: number;
  keypairs: number;
  routes: number;
  /** The errno that stopped the thread (0 while it runs). */
  error: number;
  drops: DataPlaneDrops;
}

/** Per-peer activity since the last collect, as {@link NativeDataPlane.collect} reports it. */
export const PEER_DELTA_FIELDS = 7;

/** Largest batch the thread receives or writes: {@link NativeDataPlane.batchSizes} sizes. */
export const DATA_PLANE_BATCH = 128;

/** Bytes each datagram handed to the JS path may need (a transport message at MAX_MTU). */
export const DATA_PLANE_ROOM = 9088;

/** Bytes per prefix change: family, length, 2 zero bytes, peer (int32 LE), 16 address bytes. */
const ROUTE_RECORD = 24;

/**
 * Allowed-IPs changes gathered for one call: a replaced set of prefixes reaches the native
 * table whole, never half applied.
 */
export class RouteChanges {
  records = new Uint8Array(ROUTE_RECORD * 64);
  count = 0;

  /** `peer` -1 removes the prefix. */
  add(address: Uint8Array, cidr: number, peer: number): void {
    if ((this.count + 1) * ROUTE_RECORD > this.records.length) {
      const larger = new Uint8Array(this.records.length * 2);
      larger.set(this.records);
      this.records = larger;
    }
    const at = this.count * ROUTE_RECORD;
    const view = new DataView(this.records.buffer, at, ROUTE_RECORD);
    this.records[at] = address.length === 4 ? 4 : 6;
    this.records[at + 1] = cidr;
    view.setInt32(4, peer, true);
    this.records.fill(0, at + 8, at + ROUTE_RECORD);
    this.records.set(address, at + 8);
    this.count++;
  }

  clear(): void {
    this.count = 0;
  }
}

export class NativeDataPlane {
  #handle: unknown;
  #closed = false;

  private constructor(handle: unknown) {
    this.#handle = handle;
  }

  /**
   * Tables for the TUN device `tunFd` (its offload mode as opened); no thread runs until
   * {@link attach}. `onEvent` runs on the JS thread when deltas or datagrams wait; it is not
   * called again until {@link collect} and {@link take} have emptied everything.
   */
  static create(
    tunFd: number,
    offload: boolean,
    gro: boolean,
    onEvent: () => void,
  ): NativeDataPlane {
    return new NativeDataPlane(loadAddon().dpCreate(tunFd, offload, gro, onEvent));
  }

  /** (Re)starts the thread on the data socket `udpFd`, whose own polling must be off. */
  attach(udpFd: number): void {
    loadAddon().dpAttach(this.#handle, udpFd);
  }

  /** False when the native table is full: the JS path keeps that keypair. */
  addKeypair(index: number, peer: number, receiveKey: Uint8Array, lifetimeMs: number): boolean {
    return loadAddon().dpAddKeypair(
      this.#handle,
      index,
      peer,
      receiveKey,
      Math.max(0, Math.floor(lifetimeMs)),
    );
  }

  removeKeypair(index: number): void {
    if (!this.#closed) loadAddon().dpRemoveKeypair(this.#handle, index);
  }

  /** Applies `count` records of {@link RouteChanges} at once. */
  setRoutes(changes: RouteChanges): void {
    if (!this.#closed && changes.count > 0) {
      loadAddon().dpSetRoutes(this.#handle, changes.records, changes.count);
    }
    changes.clear();
  }

  /**
   * Moves per-peer deltas ({@link PEER_DELTA_FIELDS} numbers each: id, authenticated, data,
   * rxBytes, rxPackets, rxPayloadBytes, keepalives; the latest source record in `sources`)
   * and first-packet receiver indices into the arrays given; returns how many of each.
   */
  collect(
    peers: Float64Array,
    sources: Uint8Array,
    confirmed: Uint32Array,
  ): { peers: number; confirmed: number } {
    if (this.#closed) return { peers: 0, confirmed: 0 };
    return loadAddon().dpCollect(this.#handle, peers, sources, confirmed);
  }

  /** Moves up to `count` datagrams for the JS path into slots [0, n); returns n. */
  take(slots: UdpReceiveSlots, count: number): number {
    if (this.#closed) return 0;
    return loadAddon().dpTake(
      this.#handle,
      slots.arena,
      slots.offsets,
      slots.lengths,
      slots.endpoints,
      slots.locals ?? null,
      count,
      slots.room,
    );
  }

  stats(): DataPlaneStats {
    return loadAddon().dpStats(this.#handle);
  }

  /**
   * Moves the counts of batches by their size since the last call into `out` (2 ×
   * ({@link DATA_PLANE_BATCH} + 1): receives, then TUN writes; the index is the packet count).
   */
  batchSizes(out: Float64Array): void {
    if (!this.#closed) loadAddon().dpBatchSizes(this.#handle, out);
  }

  /**
   * Whether a peer's packets came from a new source since the last {@link collect}: before a
   * send batch, so that an answer goes where its question came from (roaming).
   */
  get sourceMoved(): boolean {
    return !this.#closed && loadAddon().dpSourceMoved(this.#handle);
  }

  /** Stops the thread and wipes the keys; the descriptors stay the caller's. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    loadAddon().dpClose(this.#handle);
  }
}
