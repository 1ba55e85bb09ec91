// The daemon's side of the native data path (src/host/native/dataplane.ts): keeps the
// native copies of the keypairs and allowed IPs in step with the core (one call per change),
// and carries what the native thread did back into the core: session confirmations at once,
// per-peer activity for the timers, counters and roaming when told (at most every 100 ms
// while data flows) or when someone reads them (a timer wake, `wg show`, metrics).
// With the send direction on, it also hands the thread each peer's current sending keypair
// with a lease of counters (and spare leases when asked), and carries what it sent back.
import type { Device, SessionObserver } from "../core/device.js";
import type { DropReason } from "../core/drops.js";
import type { Endpoint } from "../core/endpoint.js";
import { REJECT_AFTER_TIME_MS, REKEY_AFTER_TIME_MS } from "../core/messages.js";
import type { Keypair } from "../core/noise.js";
import type { Peer } from "../core/peer.js";
import {
  firstPacketElsewhere,
  receivedElsewhere,
  type ReceivedElsewhere,
} from "../core/receive.js";
import { lendCounters, sentElsewhere, type SentElsewhere } from "../core/send.js";
import { ConfigError } from "./errors.js";
import type { DataPathObservations } from "./metrics.js";
import {
  writeEndpoint,
  ENDPOINT_ADDRESS_AND_PORT_BYTES,
  ENDPOINT_SIZE,
  DATA_PLANE_BATCH,
  DATA_PLANE_SLICE_US,
  NativeDataPlane,
  PEER_DELTA_FIELDS,
  RouteChanges,
  SEND_LEASE,
  readEndpoint,
  type DataPlaneDrops,
  type DataPlaneStats,
} from "./native/index.js";

/** Peers and confirmations moved per collect call; more are taken by further calls. */
const COLLECT_BATCH = 256;

/**
 * Whether the daemon opens transport data on the native thread: the default where the addon
 * runs; EDGETUN_DATA_PATH=js keeps today's JS path (for comparison, or should the native one
 * misbehave).
 */
export function nativeReceiveWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  return (env.EDGETUN_DATA_PATH ?? "native") !== "js";
}

/**
 * Whether the native thread also reads the TUN device and seals and sends (the send
 * direction): with the native receive path, unless EDGETUN_NATIVE_SEND=0 (which keeps sending
 * on the JS thread, for comparison, or should the native one misbehave).
 */
export function nativeSendWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  return nativeReceiveWanted(env) && env.EDGETUN_NATIVE_SEND !== "0";
}

/**
 * The native threads' scheduler slice in µs: {@link DATA_PLANE_SLICE_US} unless
 * EDGETUN_NATIVE_SLICE_US says otherwise (0 keeps the kernel's default, for comparison).
 */
export function nativeSliceUs(env: NodeJS.ProcessEnv = process.env): number {
  const text = env.EDGETUN_NATIVE_SLICE_US;
  if (text === undefined || text === "") return DATA_PLANE_SLICE_US;
  if (!/^\d{1,6}$/.test(text) || Number(text) > 100_000)
    throw new ConfigError(
      "ERR_CONFIG_VALUE",
      "",
      0,
      `EDGETUN_NATIVE_SLICE_US must be a whole number of microseconds from 0 (the kernel's default) to 100000, not ${JSON.stringify(text)}`,
    );
  return Number(text);
}

export class NativeReceivePath implements SessionObserver {
  readonly plane: NativeDataPlane;
  readonly #device: Device;
  readonly #ids = new Map<Peer, number>();
  readonly #peersById: Array<Peer | undefined> = [];
  readonly #freeIds: number[] = [];
  /**
   * Ids of removed peers, reused only after the next sync: activity the thread counted for
   * the removed peer is collected (and ignored) under its id first.
   */
  readonly #removedIds: number[] = [];
  readonly #deltas = new Float64Array(COLLECT_BATCH * PEER_DELTA_FIELDS);
  readonly #sources = new Uint8Array(COLLECT_BATCH * ENDPOINT_SIZE);
  readonly #confirmed = new Uint32Array(COLLECT_BATCH);
  /**
   * One report of each kind, refilled per peer: a fleet's hub carries thousands of peers a
   * second into the core, and an object per peer and report was most of its garbage.
   */
  readonly #received: ReceivedElsewhere = {
    authenticated: 0,
    data: 0,
    rxBytes: 0,
    rxPackets: 0,
    rxPayloadBytes: 0,
    keepalives: 0,
    source: { address: "0.0.0.0", port: 0 },
  };
  readonly #sent: SentElsewhere = { txPackets: 0, txBytes: 0, txPayloadBytes: 0 };
  /** The plane's counters when last carried over. */
  #seen: DataPlaneStats | null = null;
  /** Keypairs the native table had no room for: the JS path opens their data. */
  refused = 0;

  /** Whether the thread reads the TUN device and sends (see {@link nativeSendWanted}). */
  readonly sends: boolean;
  /** Peers whose sending state the thread must be told again. */
  readonly #sendingChanged = new Set<Peer>();
  /** The MTU the thread pads for, as last told. */
  #mtu = 0;

  constructor(
    device: Device,
    tun: { fd: number; offload: boolean },
    onEvent: () => void,
    sends = false,
  ) {
    this.#device = device;
    this.sends = sends;
    this.plane = NativeDataPlane.create(tun.fd, tun.offload, tun.offload, onEvent);
    device.sessionObserver = this;
    device.allowedIps.onChange = (address, cidr, peer) => {
      // Gathered until the change in progress is complete: the thread sees it whole.
      if (this.#routes.count === 0) queueMicrotask(() => this.#flushRoutes());
      this.#routes.add(address, cidr, peer ? this.#idOf(peer) : -1);
    };
  }

  readonly #routes = new RouteChanges();

  #flushRoutes(): void {
    this.plane.setRoutes(this.#routes);
  }

  /**
   * Reads the data socket `fd` on the native thread from now on (its own polling is off); with
   * {@link sends}, the TUN device too (the caller stops reading it).
   */
  attach(fd: number): void {
    this.#tellMtu();
    this.plane.attach(fd, this.sends, nativeSliceUs());
    this.readsTun = this.sends;
  }

  /** Whether the thread reads the TUN device (attached with {@link sends}): JS then does not. */
  readsTun = false;

  sendingChanged(peer: Peer): void {
    if (!this.sends) return;
    // Gathered until the change in progress is complete, as allowed IPs are.
    if (this.#sendingChanged.size === 0) queueMicrotask(() => this.#flushSending());
    this.#sendingChanged.add(peer);
  }

  #flushSending(): void {
    if (this.#sendingChanged.size === 0) return;
    for (const peer of this.#sendingChanged) this.#tellSending(peer);
    this.#sendingChanged.clear();
  }

  /**
   * Hands the thread the peer's current keypair with a fresh lease of counters, or tells it
   * to leave the peer's packets to the core (no usable session or no endpoint).
   */
  #tellSending(peer: Peer): void {
    if (this.#device.peer(peer.publicKey) !== peer) return; // removed since
    const peerId = this.#idOf(peer);
    const keypair = peer.keypairs.current;
    const ageMs = keypair ? this.#device.clock.now() - keypair.createdAt : Infinity;
    const endpoint = peer.endpoint ? this.#endpointRecord(peer.endpoint) : null;
    const leaseStart =
      keypair && endpoint && ageMs < REJECT_AFTER_TIME_MS
        ? lendCounters(keypair, SEND_LEASE)
        : null;
    if (!keypair || leaseStart === null) {
      this.plane.setSending(peerId, null, endpoint, null);
      return;
    }
    this.plane.setSending(
      peerId,
      {
        sendKey: keypair.sendingKey,
        remoteIndex: keypair.remoteIndex,
        leaseStart,
        leaseCount: SEND_LEASE,
        lifetimeMs: REJECT_AFTER_TIME_MS - ageMs,
        rekeyMs: keypair.isInitiator ? Math.max(0, REKEY_AFTER_TIME_MS - ageMs) : -1,
      },
      endpoint,
      null,
    );
  }

  /** The thread took its spare lease into use: another, for the same keypair. */
  #grantLease(peer: Peer, peerId: number): void {
    const keypair = peer.keypairs.current;
    if (!keypair) return;
    const start = lendCounters(keypair, SEND_LEASE);
    if (start === null) {
      this.#tellSending(peer);
      return;
    }
    this.plane.grantLease(peerId, keypair.remoteIndex, start, SEND_LEASE);
  }

  #tellMtu(): void {
    const mtu = this.#device.mtu;
    if (mtu === this.#mtu) return;
    this.#mtu = mtu;
    this.plane.setMtu(mtu);
  }

  keypairInstalled(peer: Peer, keypair: Keypair): void {
    const lifetimeMs = REJECT_AFTER_TIME_MS - (this.#device.clock.now() - keypair.createdAt);
    const installed = this.plane.addKeypair(
      keypair.localIndex,
      this.#idOf(peer),
      keypair.receivingKey,
      lifetimeMs,
    );
    if (!installed) this.refused++;
  }

  keypairReleased(_peer: Peer, keypair: Keypair): void {
    this.plane.removeKeypair(keypair.localIndex);
  }

  peerRemoved(peer: Peer): void {
    const id = this.#ids.get(peer);
    if (id === undefined) return;
    this.#ids.delete(peer);
    this.#peersById[id] = undefined;
    this.#sendingChanged.delete(peer);
    if (this.sends) this.plane.setSending(id, null, null, null);
    this.#removedIds.push(id);
  }

  /**
   * Carries everything the native thread did since the last call into the core: first
   * packets on new keypairs (confirmations) before the per-peer activity, as the JS path
   * orders them per packet. The caller flushes what the core queued (staged packets).
   */
  sync(): void {
    const device = this.#device;
    this.#flushRoutes();
    if (this.sends) {
      this.#tellMtu();
      this.#flushSending();
    }
    for (;;) {
      const got = this.plane.collect(this.#deltas, this.#sources, this.#confirmed);
      for (let i = 0; i < got.confirmed; i++) firstPacketElsewhere(device, this.#confirmed[i]!);
      for (let i = 0; i < got.peers; i++) {
        const row = i * PEER_DELTA_FIELDS;
        const peer = this.#peersById[this.#deltas[row]!];
        if (!peer) continue; // removed since
        const received = this.#received;
        received.authenticated = this.#deltas[row + 1]!;
        if (received.authenticated > 0) {
          received.data = this.#deltas[row + 2]!;
          received.rxBytes = this.#deltas[row + 3]!;
          received.rxPackets = this.#deltas[row + 4]!;
          received.rxPayloadBytes = this.#deltas[row + 5]!;
          received.keepalives = this.#deltas[row + 6]!;
          received.source = this.#sourceOf(peer, i);
          receivedElsewhere(device, peer, received);
        }
        const sent = this.#sent;
        sent.txPackets = this.#deltas[row + 7]!;
        sent.txBytes = this.#deltas[row + 8]!;
        sent.txPayloadBytes = this.#deltas[row + 9]!;
        sentElsewhere(device, peer, sent);
        if (this.#deltas[row + 10] === 1) this.#grantLease(peer, this.#deltas[row]!);
      }
      if (got.peers < COLLECT_BATCH && got.confirmed < COLLECT_BATCH) break;
    }
    for (const id of this.#removedIds) this.#freeIds.push(id);
    this.#removedIds.length = 0;
  }

  /**
   * Moves the plane's drop counters into the device's; returns the TUN write errors since the
   * last call, the errno that stopped the thread (0 while it runs) and its running totals.
   */
  carryCounters(): {
    tunWriteErrors: number;
    sendErrors: number;
    error: number;
    opened: number;
    toJs: number;
    sealed: number;
    tunToJs: number;
    sendMessages: number;
  } {
    const stats = this.plane.stats();
    const seen = this.#seen;
    this.#seen = stats;
    const drops = this.#device.stats.drops;
    for (const reason of Object.keys(stats.drops) as Array<keyof DataPlaneDrops>) {
      drops[reason as DropReason] += stats.drops[reason] - (seen?.drops[reason] ?? 0);
    }
    return {
      tunWriteErrors: stats.tunWriteErrors - (seen?.tunWriteErrors ?? 0),
      sendErrors: stats.sendErrors - (seen?.sendErrors ?? 0),
      error: stats.error,
      opened: stats.opened,
      toJs: stats.toJs,
      sealed: stats.sealed,
      tunToJs: stats.tunToJs,
      sendMessages: stats.sendMessages,
    };
  }

  stats(): DataPlaneStats {
    return this.plane.stats();
  }

  readonly #batchSizes = new Float64Array(4 * (DATA_PLANE_BATCH + 1));
  /** Adds the thread's batches since the last call to the metrics' batch histograms. */
  observeBatches(observations: DataPathObservations): void {
    const sizes = this.#batchSizes;
    this.plane.batchSizes(sizes);
    for (let size = 1; size <= DATA_PLANE_BATCH; size++) {
      const received = sizes[size]!;
      const written = sizes[DATA_PLANE_BATCH + 1 + size]!;
      const sent = sizes[2 * (DATA_PLANE_BATCH + 1) + size]!;
      const read = sizes[3 * (DATA_PLANE_BATCH + 1) + size]!;
      if (received > 0) observations.udpReceive.observeMany(size, received);
      if (written > 0) observations.tunWrite.observeMany(size, written);
      if (sent > 0) observations.udpSend.observeMany(size, sent);
      if (read > 0) observations.tunRead.observeMany(size, read);
    }
  }

  close(): void {
    this.#routes.clear();
    this.#sendingChanged.clear();
    this.plane.close();
    if (this.#device.sessionObserver === this) this.#device.sessionObserver = null;
    this.#device.allowedIps.onChange = null;
  }

  /** The peer's own endpoint object when the source is unchanged (no allocation). */
  #sourceOf(peer: Peer, index: number): Endpoint {
    const at = index * ENDPOINT_SIZE;
    const endpoint = peer.endpoint;
    if (endpoint) {
      const known = this.#endpointRecord(endpoint);
      let same = true;
      for (let k = 0; k < ENDPOINT_ADDRESS_AND_PORT_BYTES && same; k++) {
        same = this.#sources[at + k] === known[k];
      }
      if (same) return endpoint;
    }
    return readEndpoint(this.#sources, index);
  }

  readonly #records = new WeakMap<Endpoint, Uint8Array>();
  #endpointRecord(endpoint: Endpoint): Uint8Array {
    let record = this.#records.get(endpoint);
    if (!record) {
      record = new Uint8Array(ENDPOINT_SIZE);
      writeEndpoint(record, 0, endpoint);
      this.#records.set(endpoint, record);
    }
    return record;
  }

  #idOf(peer: Peer): number {
    let id = this.#ids.get(peer);
    if (id === undefined) {
      id = this.#freeIds.pop() ?? this.#peersById.length;
      this.#ids.set(peer, id);
      this.#peersById[id] = peer;
    }
    return id;
  }
}
