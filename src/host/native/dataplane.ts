// The native data path (native/dataplane.c): a thread of the addon's that reads the data
// socket, opens transport data of the keypairs installed here, checks replay and the inner
// source address, and writes inner packets to the TUN device without waking the JS thread;
// when asked, it also reads the TUN device and seals and sends for peers whose current
// keypair the core handed it. This wrapper only moves state in and deltas out;
// src/host/dataplane.ts decides what.
import { loadAddon } from "./addon.js";
import { takeFromRing, type UdpReceiveSlots } from "./batch.js";

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
  /** Inner packets sealed and handed to the socket by the thread. */
  sealed: number;
  /** Inner packets read by the thread and handed to the JS path (no route, no session...). */
  tunToJs: number;
  /** Sealed datagrams the socket would not take. */
  sendErrors: number;
  /** Super-packets read from the TUN device that could not be split (dropped). */
  tunReadDrops: number;
  /** UDP messages the sealed packets went out in: fewer than {@link sealed} when runs of
   * equal-sized packets to one peer went as one UDP GSO message. */
  sendMessages: number;
  drops: DataPlaneDrops;
}

/** Per-peer activity since the last collect, as {@link NativeDataPlane.collect} reports it. */
export const PEER_DELTA_FIELDS = 11;

/**
 * Counters the core lends the thread at a time (native/dataplane.c's header comment): with the
 * spare, the newest counter sent is at most two leases (4,096) and the core's own few messages
 * past the oldest one still in use: well inside a receiver's replay window (8,128 counters in
 * wireguard-go, about 8,100 or more in the kernel and in both of edgetun's paths).
 */
export const SEND_LEASE = 2048;

/**
 * The data-plane threads' scheduler slice, in µs (the kernel's smallest): each wake handles a
 * batch in tens of microseconds, and a short slice lets a waking thread run at once instead
 * of queueing behind whatever holds the CPU (README, Latency: the idle pings' slow round trips).
 */
export const DATA_PLANE_SLICE_US = 100;

/** Bytes each inner packet handed to the JS path may need (MAX_MTU + 40, as the TUN reads). */
export const DATA_PLANE_INNER_ROOM = 9040;

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

  /**
   * (Re)starts the thread on the data socket `udpFd`, whose own polling must be off; with
   * `readTun` it reads the TUN device too (whose own polling must then be off as well). The
   * threads (named edgetun-rx and edgetun-tx) ask the scheduler for a slice of `sliceUs`
   * (Linux 6.12+; 0 keeps the kernel's default; see native/dataplane.c, prefer_short_slice).
   */
  attach(udpFd: number, readTun = false, sliceUs: number = DATA_PLANE_SLICE_US): void {
    loadAddon().dpAttach(this.#handle, udpFd, readTun, sliceUs);
  }

  /** Inner packets sealed here are padded as the core pads them for this MTU. */
  setMtu(mtu: number): void {
    if (!this.#closed) loadAddon().dpSetMtu(this.#handle, mtu);
  }

  /**
   * The peer's packets are sealed here with this keypair and counters [leaseStart, leaseStart
   * + leaseCount), until `lifetimeMs`; after `rekeyMs` (-1: never) a send is reported at once.
   * `sending` null: the peer's packets go to the JS path.
   */
  setSending(
    peer: number,
    sending: {
      sendKey: Uint8Array;
      remoteIndex: number;
      leaseStart: number;
      leaseCount: number;
      lifetimeMs: number;
      rekeyMs: number;
    } | null,
    endpoint: Uint8Array | null,
    local: Uint8Array | null,
  ): void {
    if (this.#closed) return;
    loadAddon().dpSetSending(
      this.#handle,
      peer,
      sending?.sendKey ?? null,
      sending?.remoteIndex ?? 0,
      sending?.leaseStart ?? 0,
      sending?.leaseCount ?? 0,
      Math.max(0, Math.floor(sending?.lifetimeMs ?? 0)),
      sending ? Math.floor(sending.rekeyMs) : -1,
      endpoint,
      local,
    );
  }

  /** A spare lease for the keypair of `remoteIndex`; false when the thread did not take it. */
  grantLease(peer: number, remoteIndex: number, start: number, count: number): boolean {
    if (this.#closed) return false;
    return loadAddon().dpGrantLease(this.#handle, peer, remoteIndex, start, count);
  }

  /** Moves up to `count` inner packets for the JS path into slots [0, n); returns n. */
  takeTunnel(slots: UdpReceiveSlots, count: number): number {
    if (this.#closed) return 0;
    return takeFromRing(loadAddon().dpTakeTunnel, this.#handle, slots, count);
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
   * rxBytes, rxPackets, rxPayloadBytes, keepalives, txPackets, txBytes, txPayloadBytes,
   * leaseWanted; the latest source record in `sources`)
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
    return takeFromRing(loadAddon().dpTake, this.#handle, slots, count);
  }

  stats(): DataPlaneStats {
    return loadAddon().dpStats(this.#handle);
  }

  /**
   * Moves the counts of batches by their size since the last call into `out` (4 ×
   * ({@link DATA_PLANE_BATCH} + 1): receives, TUN writes, sends, TUN reads; the index is the
   * packet count).
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
