// The daemon: the protocol core wired to a TUN device and a UDP socket through the native
// addon, plus the control socket and the interface's addresses and routes. It owns no
// protocol logic: every decision is the Device's; this file moves batches and keeps time.
import type { InterfaceFileConfig } from "./config.js";
import { MAX_MTU, resolveEndpoint } from "./config.js";
import { Device } from "../core/device.js";
import { useX25519 } from "../core/crypto.js";
import type { Logger } from "./log.js";
import { DropReporter, shortKey } from "./log.js";
import {
  DATA_HEADER_LENGTH,
  DATA_TRAILER_ROOM,
  KEY_LENGTH,
  TAG_LENGTH,
  frameDataInPlace,
  isTransportData,
} from "../core/messages.js";
// metrics.ts (and prom-client with it) is loaded when a metrics server starts, after the
// interface is up and its first handshake on its way (issue 14).
import type { MetricsExtension, MetricsServer, MetricsServerOptions } from "./metrics.js";
import { DataPathObservations } from "./observations.js";
import { MetricsListenError } from "./errors.js";
import {
  CookieGate,
  ENDPOINT_ADDRESS_AND_PORT_BYTES,
  ENDPOINT_SIZE,
  GateVerdict,
  type HandshakeLaneStats,
  LinkEvents,
  PacketBatch,
  TunDevice,
  UdpSocketPair,
  nativeX25519,
  openBatch,
  nativeAvailable,
  readEndpoint,
  sealBatch,
  writeEndpoint,
} from "./native/index.js";
import type { Keypair } from "../core/noise.js";
import { InterfaceSetup } from "./netif.js";
import type { Endpoint } from "../core/endpoint.js";
import type { Peer } from "../core/peer.js";
import {
  Reconfigurer,
  changeFromConfig,
  respectOwners,
  type ChangeSource,
  type ChangeSummary,
  type ConfigChange,
  type PendingListenPort,
  type PeerOwner,
  type ReconfigurationHost,
} from "./reconfigure.js";
import { UapiServer, type UapiHost } from "./uapi.js";
import { HandshakeShares } from "./handshake-shares.js";
import { warmUpDataPath } from "./warm-up.js";
import { NativeReceivePath, nativeReceiveWanted, nativeSendWanted } from "./dataplane.js";
import type {
  DatagramSocket,
  DatagramSocketOpener,
  HandshakeDatagramSocket,
  HandshakeLaneControl,
  TunnelDevice,
} from "./io.js";

/** Packets moved per read/receive call; a batch is processed fully before the next. */
const BATCH = 128;
/**
 * Handshake messages read per event-loop turn. The cookie gate settles a flood's messages
 * for a microsecond or so each, so a turn may read many: the handshake socket then drains as
 * fast as a flood fills it, and a joining peer's initiation is not lost at its full buffer.
 * What passes the gate may cost ~0.4 ms of Diffie-Hellman, and while the socket is backlogged
 * each source gets only its share of a turn (HandshakeShares), so data still gets its turns.
 */
const HANDSHAKES_PER_TURN = 256;
/**
 * Messages taken from a handshake lane per turn: all of them passed the cookie gate, so each
 * may cost Diffie-Hellman; more wait for the next turn, after data has had its own.
 */
const LANE_TAKE_PER_TURN = 16;
/**
 * How often the handshake lane's counters and the cookie keys are exchanged with it while it
 * has work. A quiet lane is not polled: it wakes the daemon at its next datagram (issue 14:
 * a 250 ms poll of an idle lane was most of an idle daemon's CPU).
 */
const LANE_SYNC_MS = 250;
/** How often the drop counters are looked at for the log when no timer wakes the daemon. */
const DROP_CHECK_MS = 5_000;
/** Longest single sleep (Node's timers take at most 2^31 - 1 ms); a longer wait is re-armed. */
const MAX_SLEEP_MS = 3_600_000;
/**
 * While data flows, a 1 ms timer keeps the event loop from sleeping deeply, for up to this long
 * after the last data batch. Waking Node's loop after it slept costs ~150-190 µs per wake,
 * three wakes per round trip (issue 14); a loop kept awake answers the next packet of a
 * conversation at once. Keepalives and handshakes do not count: only data keeps it awake.
 */
const AWAKE_AFTER_DATA_MS = 250;
const AWAKE_INTERVAL_MS = 1;

/** Arena slots start on cache lines. */
const SLOT_ALIGNMENT = 64;

/**
 * Arena slot: the largest MTU the daemon takes plus the WireGuard header, padding and tag,
 * rounded up. Sized for MAX_MTU whatever the configured MTU, since `ip link set mtu` may
 * raise it under a running daemon (wg-quick sets it so): wireguard-go's buffers likewise
 * hold its largest message. 576 slots of 9 KB: about 5 MB per interface.
 */
const SLOT_SIZE =
  Math.ceil((MAX_MTU + DATA_HEADER_LENGTH + DATA_TRAILER_ROOM) / SLOT_ALIGNMENT) * SLOT_ALIGNMENT;

/**
 * Per-packet bookkeeping of one batch on its way through seal/open: parallel typed arrays
 * (what the addon reads) and the peers and keypairs (what the core needs afterwards).
 */
class CryptoBatch {
  readonly offsets = new Uint32Array(BATCH);
  readonly lengths = new Uint32Array(BATCH);
  readonly keySlots = new Uint32Array(BATCH);
  /** Counter of packet i as (low, high) 32-bit halves: no BigInt per packet. */
  readonly counters = new Uint32Array(BATCH * 2);
  readonly status = new Int32Array(BATCH);
  /** Packet i's key is bytes [32 i, 32 i + 32): copied per packet, which costs less than slots. */
  readonly keys = Buffer.alloc(BATCH * KEY_LENGTH);
  readonly endpoints = new Uint8Array(BATCH * ENDPOINT_SIZE);
  readonly peers: Array<Peer | null> = new Array<Peer | null>(BATCH).fill(null);
  readonly keypairs: Array<Keypair | null> = new Array<Keypair | null>(BATCH).fill(null);
  readonly counterValues = new Float64Array(BATCH);
  /** Index of the packet in the batch it was read from. */
  readonly source = new Uint32Array(BATCH);
  count = 0;

  constructor(readonly arena: Buffer) {}

  add(offset: number, length: number, key: Uint8Array, counter: number): number {
    const i = this.count++;
    this.offsets[i] = offset;
    this.lengths[i] = length;
    this.keySlots[i] = i;
    this.counters[2 * i] = counter >>> 0;
    this.counters[2 * i + 1] = Math.floor(counter / 0x100000000);
    this.counterValues[i] = counter;
    this.keys.set(key, i * KEY_LENGTH);
    return i;
  }

  /** Forgets the batch, keys included, so no key lingers in the scratch space. */
  reset(): void {
    this.keys.fill(0, 0, this.count * KEY_LENGTH);
    this.peers.fill(null, 0, this.count);
    this.keypairs.fill(null, 0, this.count);
    this.count = 0;
  }
}

export interface DaemonOptions {
  interfaceName: string;
  config: InterfaceFileConfig;
  logger: Logger;
  /** Where the control socket goes (default /var/run/wireguard). */
  uapiDirectory?: string;
  /** The HTTP server for /metrics, /healthz and /readyz; null or absent: none. */
  metrics?: MetricsServerOptions | null;
  /** The metrics address is the default, not the operator's: if it is taken, run without. */
  metricsOptional?: boolean;
  /**
   * The caller's last steps (a pid file), run after everything else and before "interface
   * up" is logged; if it throws, the interface is taken down again like any other failure.
   */
  beforeUp?: (interfaceName: string) => void | Promise<void>;
  /** Where the record of policy rules goes (default /run/edgetun), see src/host/netif.ts. */
  stateDirectory?: string;
  /** Started once the interface is up, before metrics (the fleet watcher); stopped first. */
  attach?: (daemon: Daemon) => Promise<DaemonAttachment>;
  /**
   * Add a route for every peer's allowed IPs (default true). False when something else
   * manages routes: as wireguard-go, under wg-quick, which adds them itself after `wg setconf`
   * and would otherwise find its default-route table taken.
   */
  manageRoutes?: boolean;
  /**
   * Called once when the interface is deleted from outside (`ip link delete`, `wg-quick
   * down`): the daemon has stopped itself by then, control socket included.
   */
  onInterfaceGone?: () => void;
  /**
   * Warm the data path once up (default true): some hundreds of packets between two throwaway
   * daemons in memory, in the background, so that the first real ones find compiled code.
   */
  warmUp?: boolean;
  /**
   * Open transport data on the addon's receive thread (src/host/dataplane.ts) rather than on
   * the JS thread. Default: yes, unless EDGETUN_DATA_PATH=js.
   */
  nativeReceive?: boolean;
  /**
   * With the native receive path, also read the TUN device, seal and send on that thread (the
   * send direction, src/host/dataplane.ts). Default: yes, unless EDGETUN_NATIVE_SEND=0.
   */
  nativeSend?: boolean;
}

/** A part running beside the daemon, with its own probes note and metrics. */
export interface DaemonAttachment extends MetricsExtension {
  stop(): Promise<void>;
  /** The peers this part puts in, which no other source may change (see reconfigure.ts). */
  readonly peerOwner?: PeerOwner;
}

/**
 * What a TUN read fails with once its interface has been deleted: the kernel detaches the
 * queue and answers EBADFD (77), which libuv has no name for.
 */
const EBADFD = 77;

function isInterfaceGone(error: unknown): boolean {
  const { errno, code } = error as { errno?: unknown; code?: unknown };
  return errno === -EBADFD || errno === EBADFD || code === "EBADFD" || code === "ENODEV";
}

export class DaemonCounters {
  /** Datagrams the socket would not take (send buffer full or unreachable). */
  socketSendErrors = 0;
  /** Packets the TUN device would not take. */
  tunWriteErrors = 0;
  tunReadBatches = 0;
  udpReceiveBatches = 0;
  /** Transport messages the native receive path opened and accepted (keepalives included). */
  nativeReceived = 0;
  /** Datagrams it handed to the JS path (handshakes, data for keypairs it does not hold). */
  nativeHandedToJs = 0;
  /** Inner packets the native thread sealed and sent (the send direction). */
  nativeSealed = 0;
  /** Inner packets it read and handed to the JS path (no route, no session, no counters). */
  nativeTunToJs = 0;
  /** UDP messages the sealed packets went in (a run sent as one UDP GSO message counts once). */
  nativeSendMessages = 0;
}

export class Daemon implements UapiHost, ReconfigurationHost {
  readonly device: Device;
  readonly counters = new DaemonCounters();
  /** Batch sizes and handshake round trips, for the metrics. */
  readonly observations = new DataPathObservations();
  // TUN reads land after room for the transport header, with room for padding and tag
  // behind them, so packets are sealed and sent from where they were read.
  private readonly tunIn: PacketBatch;
  private readonly sealing: CryptoBatch;
  private readonly udpIn: PacketBatch;
  private readonly opening: CryptoBatch;
  /** Decrypted inner packets, written to the TUN from where they were received. */
  private readonly tunWrites: {
    arena: Buffer;
    offsets: Uint32Array;
    lengths: Uint32Array;
    status: Int32Array;
  };
  // For what the core emits outside the batches (handshakes, staged packets, keepalives).
  private readonly udpOut: PacketBatch;
  private readonly tunOut: PacketBatch;
  /** Endpoint records by endpoint object: peers keep theirs, so this is a per-peer cache. */
  private readonly endpointRecords = new WeakMap<Endpoint, Uint8Array>();
  /** The data socket: transport data arrives here, and everything is sent from it. */
  private socket: DatagramSocket | null = null;
  /** Handshake messages arrive here when the kernel can steer them (null: at `socket`). */
  private handshakeSocket: HandshakeDatagramSocket | null = null;
  private readonly handshakeIn: PacketBatch;
  /** The handshake socket's kernel drop count when last read. */
  private handshakeSocketDrops = 0;
  private readonly handshakeShares = new HandshakeShares();
  /** The thread that reads the handshake socket through the cookie gate, where there is one. */
  private handshakeLane: HandshakeLaneControl | null = null;
  /** The core's own under-load rate, for when no lane judges load. */
  private readonly underLoadRateWithoutLane: number;
  /** The lane's counters when last carried over into the device's. */
  private laneSeen: HandshakeLaneStats | null = null;
  /** Settles the flood's share of each handshake batch natively (null: no addon, tests). */
  private readonly cookieGate = nativeAvailable() ? new CookieGate(HANDSHAKES_PER_TURN) : null;
  private uapi: UapiServer | null = null;
  private metrics: MetricsServer | null = null;
  readonly extensions: DaemonAttachment[] = [];
  private readonly dropReporter: DropReporter;
  /** The one timer of the daemon: set for when the core's next protocol timer is due. */
  private wakeTimer: NodeJS.Timeout | null = null;
  /** Clock time (the device's) `wakeTimer` is set for; Infinity when none is. */
  private wakeAt = Infinity;
  /** Drop counters are logged every 10 s at most; checked this often while nothing else runs. */
  private dropCheck: NodeJS.Timeout | null = null;
  /**
   * Carries the handshake lane's counters over and gives it keys and the load verdict, while
   * the lane has work; null while it is quiet (it then wakes the daemon by itself).
   */
  private laneSyncTimer: NodeJS.Timeout | null = null;
  /** While the lane is quiet: gives it the new cookie secret when the current one expires. */
  private laneKeysTimer: NodeJS.Timeout | null = null;
  /** The core's load verdict as last given to the lane. */
  private laneUnderLoad = false;
  private running = false;
  /** The keep-awake timer while data is recent (see AWAKE_AFTER_DATA_MS), else null. */
  private awakeTimer: NodeJS.Timeout | null = null;
  /** Data batches moved; the keep-awake timer stops when this stands still long enough. */
  private dataBatches = 0;
  /** Link notifications, for the MTU `ip link set mtu` gives the interface; null in tests. */
  private linkEvents: LinkEvents | null = null;
  private mark = 0;
  private stopped = false;
  /** The data-path warm-up while it runs (src/host/warm-up.ts). */
  private warming: { promise: Promise<number>; abort: AbortController } | null = null;
  /** Every change after start goes through this one queue (src/host/reconfigure.ts). */
  private readonly reconfigurer: Reconfigurer;
  /** The native receive thread and its state (src/host/dataplane.ts); null: the JS path. */
  private receivePath: NativeReceivePath | null = null;
  private receivePathFailed = false;

  private constructor(
    readonly name: string,
    private readonly tun: TunnelDevice,
    private readonly openSocket: DatagramSocketOpener,
    /** Addresses, routes and rules; null when the devices are not the system's (tests). */
    private readonly setup: InterfaceSetup | null,
    private readonly logger: Logger,
    config: InterfaceFileConfig,
    private readonly manageRoutes: boolean,
    private readonly onInterfaceGone: (() => void) | undefined,
  ) {
    this.reconfigurer = new Reconfigurer(this, logger, name);
    // Handshakes' X25519 on raw keys in the addon where it loads (Node's crypto otherwise).
    if (nativeAvailable()) useX25519(nativeX25519);
    this.device = new Device({ privateKey: config.privateKey, mtu: config.mtu });
    this.underLoadRateWithoutLane = this.device.underLoadHandshakesPerSecond;
    this.device.onHandshakeCompleted = (peer) => this.observations.handshakeCompleted(peer);
    this.dropReporter = new DropReporter(logger, { interface: name });
    this.mark = config.fwmark;
    const slotSize = SLOT_SIZE;
    this.tunIn = new PacketBatch(BATCH, {
      slotSize,
      headroom: DATA_HEADER_LENGTH,
      tailroom: DATA_TRAILER_ROOM,
    });
    this.sealing = new CryptoBatch(this.tunIn.arena);
    this.udpIn = new PacketBatch(BATCH, { slotSize });
    this.handshakeIn = new PacketBatch(HANDSHAKES_PER_TURN, { slotSize });
    this.opening = new CryptoBatch(this.udpIn.arena);
    this.tunWrites = {
      arena: this.udpIn.arena,
      offsets: new Uint32Array(BATCH),
      lengths: new Uint32Array(BATCH),
      status: new Int32Array(BATCH),
    };
    this.udpOut = new PacketBatch(BATCH, { slotSize });
    this.tunOut = new PacketBatch(BATCH, { slotSize });
  }

  /**
   * Brings the interface up: TUN device, policy rules an earlier killed instance left, UDP
   * socket, MTU, addresses, link up, then the peers and their routes as one change through the
   * reconfiguration queue; then packets move (the first handshake leaves) while the control
   * socket, attachments and metrics server start. On any failure everything done so far is
   * undone before the error is rethrown, and "interface up" is logged only after all of it.
   */
  static async start(options: DaemonOptions): Promise<Daemon> {
    const { config, logger, interfaceName } = options;
    // Resolve endpoints first: a name that does not resolve must stop us before any change.
    const endpoints = await Promise.all(
      config.peers.map((peer) => (peer.endpoint ? resolveEndpoint(peer.endpoint) : null)),
    );
    // Offload: the kernel hands over 64 KB TCP super-packets that the addon splits (and
    // coalesces on the way back), far fewer syscalls; it falls back by itself when refused.
    const tun = TunDevice.open({ name: interfaceName, offload: true });
    const setup = new InterfaceSetup(tun.name, logger, config.table, options.stateDirectory);
    const openSocket = (port: number) => UdpSocketPair.open({ port });
    const daemon = new Daemon(
      tun.name,
      tun,
      openSocket,
      setup,
      logger,
      config,
      options.manageRoutes ?? true,
      options.onInterfaceGone,
    );
    try {
      if (options.nativeReceive ?? nativeReceiveWanted()) {
        daemon.startReceivePath(tun, options.nativeSend ?? nativeSendWanted());
      }
      setup.attach(tun.ifindex);
      // This process owns the interface name now, so rules recorded for it are a dead one's.
      setup.removeLeftovers();
      daemon.bindSocket(config.listenPort ?? 0);
      tun.setMtu(config.mtu);
      setup.addAddresses(config.addresses);
      tun.up();
      daemon.followLinkMtu(tun);
      await daemon.reconfigurer.apply(
        changeFromConfig(daemon.device, { ...config, listenPort: null }, endpoints, {
          listenPort: daemon.listenPort(),
          fwmark: daemon.mark,
        }),
        "up",
      );
      // Packets move from here on: the first handshake leaves now, and its answer and the
      // first packets are served while the rest below is set up (issue 14).
      // The native thread reads the TUN device itself when it sends.
      if (!daemon.receivePath?.readsTun) tun.onReadable(() => daemon.readTunnel());
      daemon.startTimers();
      daemon.uapi = await UapiServer.listen(
        tun.name,
        daemon,
        options.uapiDirectory ? { directory: options.uapiDirectory } : {},
      );
      if (options.attach) daemon.extensions.push(await options.attach(daemon));
      if (options.metrics) daemon.metrics = await daemon.listenMetrics(options);
      await options.beforeUp?.(tun.name);
      if (options.warmUp ?? true) daemon.warmUp();
      logger.info("interface up", {
        interface: tun.name,
        listenPort: daemon.listenPort(),
        peers: config.peers.length,
        routes: setup.installedRoutes.length,
        publicKey: shortKey(daemon.device.publicKey?.toString("base64") ?? ""),
        metrics: daemon.metrics?.url ?? "off",
      });
      return daemon;
    } catch (error) {
      await daemon.stop();
      throw error;
    }
  }

  /**
   * The data path alone over devices of the caller's (in-memory ones in tests): the core, the
   * batched seal/open path, the handshake queue and the timers, with no interface set-up,
   * control socket or metrics server. Stop it with {@link stop}.
   */
  static async startDataPath(options: {
    tun: TunnelDevice;
    openSocket: DatagramSocketOpener;
    config: InterfaceFileConfig;
    logger: Logger;
  }): Promise<Daemon> {
    const { tun, openSocket, config, logger } = options;
    const endpoints = await Promise.all(
      config.peers.map((peer) => (peer.endpoint ? resolveEndpoint(peer.endpoint) : null)),
    );
    const daemon = new Daemon(tun.name, tun, openSocket, null, logger, config, false, undefined);
    try {
      daemon.bindSocket(config.listenPort ?? 0);
      await daemon.reconfigurer.apply(
        changeFromConfig(daemon.device, { ...config, listenPort: null }, endpoints, {
          listenPort: daemon.listenPort(),
          fwmark: daemon.mark,
        }),
        "up",
      );
      tun.onReadable(() => daemon.readTunnel());
      daemon.startTimers();
      return daemon;
    } catch (error) {
      await daemon.stop();
      throw error;
    }
  }

  private bindSocket(port: number): void {
    this.prepareListenPort(port).commit();
  }

  /**
   * An address the operator chose must work; the default one may be taken by another
   * interface's daemon on this host, and then this one runs without metrics and says so.
   */
  private async listenMetrics(options: DaemonOptions): Promise<MetricsServer | null> {
    try {
      const { MetricsServer } = await import("./metrics.js");
      return await MetricsServer.listen(this, options.metrics!);
    } catch (error) {
      const taken = error instanceof MetricsListenError && error.code === "EADDRINUSE";
      if (!options.metricsOptional || !taken) throw error;
      this.logger.warn("metrics off: the default metrics address is taken", {
        error: (error as Error).message,
      });
      return null;
    }
  }

  /** Up and not stopping: what /readyz checks first. */
  get isUp(): boolean {
    return this.running && !this.stopped;
  }

  /** Removes the interface (its routes go with it), policy rules and the control socket. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    if (this.dropCheck) clearInterval(this.dropCheck);
    if (this.laneSyncTimer) clearInterval(this.laneSyncTimer);
    if (this.laneKeysTimer) clearTimeout(this.laneKeysTimer);
    if (this.awakeTimer) clearInterval(this.awakeTimer);
    this.linkEvents?.close();
    if (this.warming) {
      this.warming.abort.abort();
      await this.warming.promise;
    }
    for (const extension of this.extensions) await extension.stop();
    await this.metrics?.close();
    this.syncReceivePath();
    this.receivePath?.close();
    // What the lane counted since its last look goes into the final figures.
    this.syncLane();
    this.dropReporter.flush();
    await this.uapi?.close();
    this.socket?.close();
    // The interface goes with the TUN device, and its routes with it; policy rules do not.
    this.tun.close();
    this.setup?.teardown();
    this.logger.info("interface down", {
      interface: this.name,
      drops: Object.fromEntries(
        Object.entries(this.device.stats.drops).filter(([, count]) => count > 0),
      ),
      ...this.counters,
    });
  }

  /**
   * Follows the link's MTU as wireguard-go does: wg-quick sets it with `ip link set mtu`
   * after the daemon started, and the core pads packets to it. Slots hold MAX_MTU whatever
   * it is, so a larger MTU needs no new buffers; above MAX_MTU the link is set back, since
   * a longer packet would not fit a slot and the TUN device would cut it short.
   */
  private followLinkMtu(tun: TunDevice): void {
    const events = LinkEvents.open();
    events.unref(); // the TUN device keeps the process alive, not this
    events.onReadable(() => {
      events.drain();
      this.linkMtuChanged(tun);
    });
    this.linkEvents = events;
    this.linkMtuChanged(tun);
  }

  private linkMtuChanged(tun: TunDevice): void {
    if (this.stopped) return;
    let mtu: number;
    try {
      mtu = tun.mtu;
    } catch {
      return; // the interface is gone: the TUN descriptor says so and the daemon stops
    }
    if (mtu > MAX_MTU) {
      this.logger.warn("MTU above what the daemon carries; set back", {
        interface: this.name,
        mtu,
        maximum: MAX_MTU,
      });
      try {
        tun.setMtu(MAX_MTU);
      } catch (error) {
        this.logger.error("cannot set the MTU back", { error: (error as Error).message });
      }
      mtu = MAX_MTU;
    }
    if (mtu === this.device.mtu) return;
    this.logger.info("MTU changed", { interface: this.name, from: this.device.mtu, to: mtu });
    this.device.mtu = mtu;
  }

  /** The interface was deleted under us: stop as after SIGTERM, then tell the owner. */
  private interfaceGone(): void {
    if (this.stopped) return;
    this.tun.onReadable(null);
    this.logger.info("interface deleted; stopping", { interface: this.name });
    this.stop().then(
      () => this.onInterfaceGone?.(),
      (error: unknown) => {
        this.logger.error("stopping after the interface was deleted failed", {
          error: (error as Error).message,
        });
        this.onInterfaceGone?.();
      },
    );
  }

  // --- data path -------------------------------------------------------------------------

  /**
   * TUN → network. Packets with a session are sealed in place, in one call, and sent from
   * the same arena in one call; the rest (no session yet, no route) take the core's own path.
   */
  private readTunnel(): void {
    const batch = this.tunIn;
    let count: number;
    try {
      count = this.tun.readBatch(batch);
    } catch (error) {
      if (!isInterfaceGone(error)) throw error;
      this.interfaceGone();
      return;
    }
    if (count === 0) return;
    this.counters.tunReadBatches++;
    this.observations.tunRead.observe(count);
    this.sendTunnelBatch(count);
  }

  /**
   * Inner packets in `tunIn` slots [0, count): sealed in place in one call and sent from the
   * same arena in one call; the rest (no session yet, no route) take the core's own path.
   */
  private sendTunnelBatch(count: number): void {
    const batch = this.tunIn;
    // A peer that roamed is followed before anything is sent to it.
    if (this.receivePath?.plane.sourceMoved) this.syncReceivePath();
    const sealing = this.sealing;
    const arena = batch.arena;
    for (let i = 0; i < count; i++) {
      const offset = batch.offsets[i]!;
      const length = batch.lengths[i]!;
      const job = this.device.prepareTunnelPacket(arena.subarray(offset, offset + length));
      if (!job) continue;
      const keypair = job.keypair!;
      frameDataInPlace(arena, offset, length, job.paddedLength, keypair.remoteIndex, job.counter);
      const n = sealing.add(offset, job.paddedLength, keypair.sendingKey, job.counter);
      sealing.peers[n] = job.peer;
      sealing.keypairs[n] = keypair;
      sealing.endpoints.set(this.endpointRecord(job.peer!.endpoint!), n * ENDPOINT_SIZE);
    }
    if (sealing.count > 0) this.sendSealed();
    this.flush();
  }

  private sendSealed(): void {
    const sealing = this.sealing;
    const n = sealing.count;
    this.dataSeen();
    sealBatch(sealing, sealing.keys, n);
    // Send header ‖ ciphertext ‖ tag: step back over the header written before sealing.
    for (let j = 0; j < n; j++) {
      sealing.offsets[j] = sealing.offsets[j]! - DATA_HEADER_LENGTH;
      sealing.lengths[j] = sealing.lengths[j]! + DATA_HEADER_LENGTH;
    }
    this.sendFrom(sealing, n);
    for (let j = 0; j < n; j++) this.device.dataSent(sealing.peers[j]!, sealing.keypairs[j]!);
    sealing.reset();
  }

  private sendFrom(
    slots: {
      arena: Uint8Array;
      offsets: Uint32Array;
      lengths: Uint32Array;
      endpoints: Uint8Array;
      status: Int32Array;
    },
    count: number,
  ): void {
    const socket = this.socket;
    const sent = socket ? socket.sendBatch(slots, count) : 0;
    this.observations.udpSend.observe(count);
    for (let j = 0; j < sent; j++) if (slots.status[j]! < 0) this.counters.socketSendErrors++;
    this.counters.socketSendErrors += count - sent;
  }

  /**
   * Network → TUN. Transport messages are checked, opened in place in one call, checked
   * again and written to the TUN from the same arena; handshakes go to the core one by one.
   */
  private receiveNetwork(): void {
    const socket = this.socket;
    if (!socket) return;
    const batch = this.udpIn;
    const plane = this.receivePath?.plane;
    const count = plane ? plane.take(batch, BATCH) : socket.recvBatch(batch);
    if (count === 0) return;
    // The native thread is told nothing of what it handed over; more than a batch waits when
    // this one is full, and is taken next turn.
    if (plane && count === BATCH) setImmediate(() => this.receiveNetwork());
    this.counters.udpReceiveBatches++;
    this.observations.udpReceive.observe(count);
    const opening = this.opening;
    const arena = batch.arena;
    // Handshakes reach this socket only where the kernel cannot steer them (and for a moment
    // at start): a full batch then means more may wait, and each source gets its share.
    this.handshakeShares.beginTurn(count === BATCH || this.device.handshakesBacklogged);
    for (let i = 0; i < count; i++) {
      const offset = batch.offsets[i]!;
      const length = batch.lengths[i]!;
      const message = arena.subarray(offset, offset + length);
      if (!isTransportData(arena, offset, length)) {
        this.receiveHandshake(message, batch.endpoints, i);
        continue;
      }
      const job = this.device.prepareData(message);
      if (!job) continue;
      const keypair = job.keypair!;
      const n = opening.add(
        offset + DATA_HEADER_LENGTH,
        length - DATA_HEADER_LENGTH,
        keypair.receivingKey,
        job.counter,
      );
      opening.peers[n] = job.peer;
      opening.keypairs[n] = keypair;
      opening.source[n] = i;
    }
    if (opening.count > 0) this.writeOpened();
    this.flush();
  }

  /**
   * The handshake socket: data waiting at the data socket is served first, then one bounded
   * batch of handshake messages. The kernel's buffer is the queue, and its overflow (counted
   * as handshake_queue_full) or a full batch is the sign of a flood: the device then asks for
   * cookies and every source gets only its share of the turn.
   */
  private receiveHandshakes(): void {
    const socket = this.handshakeSocket;
    if (!socket) return;
    this.receiveNetwork();
    const batch = this.handshakeIn;
    const count = socket.recvBatch(batch);
    if (count === 0) return;
    this.counters.udpReceiveBatches++;
    this.observations.udpReceive.observe(count);
    const drops = socket.queueStats().drops;
    const overflowed = drops - this.handshakeSocketDrops;
    this.handshakeSocketDrops = drops;
    this.device.stats.drops.handshake_queue_full += overflowed;
    const backlogged = overflowed > 0 || count === HANDSHAKES_PER_TURN;
    this.device.handshakesBacklogged = backlogged;
    this.handshakeShares.beginTurn(backlogged);
    const verdicts = this.gateHandshakes(batch, count);
    const arena = batch.arena;
    for (let i = 0; i < count; i++) {
      if (verdicts && verdicts[i] !== GateVerdict.Pass) continue;
      const offset = batch.offsets[i]!;
      this.receiveHandshake(arena.subarray(offset, offset + batch.lengths[i]!), batch.endpoints, i);
    }
    this.flush();
  }

  /**
   * The native cookie gate over a handshake batch: bad mac1s dropped and, under load, valid
   * mac1s without a cookie answered with cookie replies (sent here in one call), so a flood's
   * messages cost no JS each. Returns the verdicts; messages that pass go on to the core,
   * which checks them again. Null without a gate: the core sees everything.
   */
  private gateHandshakes(batch: PacketBatch, count: number): Uint8Array | null {
    const gate = this.cookieGate;
    const now = this.device.clock.now();
    const keys = this.device.cookieChecker.batchKeys(now);
    if (!gate || !keys) return null;
    const underLoad = this.device.recordHandshakeMessage(now, 0);
    const replies = gate.judge(batch, count, keys, underLoad);
    const verdicts = gate.verdicts;
    const drops = this.device.stats.drops;
    let settled = 0;
    let turnedAway = 0;
    for (let i = 0; i < count; i++) {
      const verdict = verdicts[i]!;
      if (verdict === GateVerdict.Pass) continue;
      settled++;
      if (verdict === GateVerdict.BadMac1) drops.bad_mac1++;
      else turnedAway++;
    }
    drops.cookie_required += turnedAway;
    this.device.recordHandshakeMessage(now, settled);
    // Turned away for want of a cookie under the core's verdict: each would have cost
    // Diffie-Hellman, so they keep the verdict while a flood lasts.
    if (turnedAway > 0) this.device.recordWastedHandshakes(now, turnedAway);
    if (replies > 0) {
      this.sendFrom(gate.replies, replies);
      this.device.stats.cookieRepliesSent += replies;
    }
    return verdicts;
  }

  /**
   * What the handshake lane kept for the core: data waiting at the data socket is served
   * first, then a few of the messages (each may cost Diffie-Hellman), the rest next turn.
   */
  private takeHandshakes(): void {
    const lane = this.handshakeLane;
    if (!lane || this.stopped) return;
    this.laneBusy();
    this.receiveNetwork();
    const batch = this.handshakeIn;
    const count = lane.take(batch, LANE_TAKE_PER_TURN);
    // Only what the lane could not keep puts the core under load: a full turn is a queue the
    // lane times (it asks for cookies itself once messages wait too long), not an overload.
    this.device.handshakesBacklogged = this.syncLane();
    if (count === 0) return;
    this.counters.udpReceiveBatches++;
    this.observations.udpReceive.observe(count);
    this.handshakeShares.beginTurn(count === LANE_TAKE_PER_TURN);
    const arena = batch.arena;
    for (let i = 0; i < count; i++) {
      const offset = batch.offsets[i]!;
      this.receiveHandshake(arena.subarray(offset, offset + batch.lengths[i]!), batch.endpoints, i);
    }
    this.flush();
    if (count === LANE_TAKE_PER_TURN) setImmediate(() => this.takeHandshakes());
  }

  /**
   * Carries the lane's counters over into the device's (what it settled counts towards the
   * handshake rate that puts the device under load), and gives it the current cookie keys and
   * load verdict. Returns whether the hand-over ring was full since last time (the JS thread
   * fell behind what passed the gate).
   */
  private syncLane(): boolean {
    const lane = this.handshakeLane;
    if (!lane) return false;
    const stats = lane.stats();
    const seen = this.laneSeen ?? {
      received: 0,
      coalesced: 0,
      badMac1: 0,
      cookieReplies: 0,
      unanswered: 0,
      overBudget: 0,
      ringFull: 0,
      kernelDrops: 0,
      waiting: 0,
      error: 0,
      stale: 0,
    };
    this.laneSeen = stats;
    const drops = this.device.stats.drops;
    const badMac1 = stats.badMac1 - seen.badMac1;
    const cookies = stats.cookieReplies - seen.cookieReplies;
    const unanswered = stats.unanswered - seen.unanswered + (stats.overBudget - seen.overBudget);
    const overflow = stats.kernelDrops - seen.kernelDrops + (stats.ringFull - seen.ringFull);
    drops.bad_mac1 += badMac1;
    drops.cookie_required += cookies + unanswered;
    drops.handshake_queue_full += overflow;
    drops.handshake_stale += stats.stale - seen.stale;
    this.device.stats.cookieRepliesSent += cookies;
    if (stats.error !== 0 && seen.error === 0) {
      this.logger.error("handshake lane stopped", { interface: this.name, errno: stats.error });
    }
    const now = this.device.clock.now();
    // What the lane turned away for want of a cookie while it had the core's verdict of load
    // would each have gone to Diffie-Hellman: evidence that keeps the verdict while a flood
    // lasts. Not what it turned away by its own rule alone (passed messages waited too long),
    // which a fleet's burst causes: that verdict stays the lane's.
    if (this.laneUnderLoad && cookies + unanswered > 0) {
      this.device.recordWastedHandshakes(now, cookies + unanswered);
    }
    // Only a full ring is an overload: the JS thread did not keep up with what passed. Kernel
    // drops say the lane's thread fell behind, which cookie replies would not mend.
    const ringFull = stats.ringFull - seen.ringFull > 0;
    if (ringFull) this.device.handshakesBacklogged = true;
    const underLoad = this.device.recordHandshakeMessage(
      now,
      badMac1 + cookies + unanswered + (stats.ringFull - seen.ringFull),
    );
    lane.configure(this.device.cookieChecker.batchKeys(now), underLoad);
    this.laneUnderLoad = underLoad;
    return ringFull;
  }

  /** The lane has work (it said so): its counters and keys travel on a timer until it is quiet. */
  private laneBusy(): void {
    if (this.laneSyncTimer !== null || this.stopped || !this.handshakeLane) return;
    if (this.laneKeysTimer !== null) clearTimeout(this.laneKeysTimer);
    this.laneKeysTimer = null;
    this.laneSyncTimer = setInterval(() => this.laneSynced(), LANE_SYNC_MS);
    this.laneSyncTimer.unref();
  }

  private laneSynced(): void {
    const lane = this.handshakeLane;
    if (this.stopped || !lane) return;
    const before = this.laneSeen?.received;
    // The backlog is what the lane reported since the last look.
    this.device.handshakesBacklogged = this.syncLane();
    const seen = this.laneSeen!;
    const quiet = seen.received === before && seen.waiting === 0 && !this.laneUnderLoad;
    // Nothing came since the last look and the load verdict has lapsed: stop polling, and have
    // the lane wake us at its next datagram, unless one came while we looked.
    if (!quiet || lane.wakeOnActivity() !== seen.received) return;
    clearInterval(this.laneSyncTimer!);
    this.laneSyncTimer = null;
    this.renewLaneKeysWhenDue();
  }

  /**
   * While the lane is quiet its cookie secret still expires: one wake when it does gives the
   * lane the next one, so a cookie it makes is never older than the core's would be.
   */
  private renewLaneKeysWhenDue(): void {
    const expiresAt = this.device.cookieChecker.secretExpiresAtMs;
    if (!Number.isFinite(expiresAt) || this.stopped) return;
    const delayMs = Math.min(
      MAX_SLEEP_MS,
      Math.max(1, Math.ceil(expiresAt - this.device.clock.now())),
    );
    this.laneKeysTimer = setTimeout(() => {
      this.laneKeysTimer = null;
      if (this.laneSyncTimer !== null || this.stopped) return;
      this.syncLane();
      this.renewLaneKeysWhenDue();
    }, delayMs);
    this.laneKeysTimer.unref();
  }

  /** One non-data message from endpoint record `index`: to the device if within its share. */
  private receiveHandshake(message: Buffer, endpoints: Uint8Array, index: number): void {
    if (!this.handshakeShares.admit(endpoints, index)) {
      this.device.stats.drops.handshake_over_share++;
      return;
    }
    this.device.handleDatagram(message, readEndpoint(endpoints, index));
  }

  private writeOpened(): void {
    const opening = this.opening;
    const n = opening.count;
    openBatch(opening, opening.keys, n);
    const writes = this.tunWrites;
    let m = 0;
    for (let j = 0; j < n; j++) {
      if (opening.status[j] !== 0) {
        this.device.stats.drops.decryption_failed++;
        continue;
      }
      const peer = opening.peers[j]!;
      const offset = opening.offsets[j]!;
      const plaintext = opening.arena.subarray(offset, offset + opening.lengths[j]!);
      const packet = this.device.completeData(
        peer,
        opening.keypairs[j]!,
        opening.counterValues[j]!,
        plaintext,
        opening.lengths[j]! + DATA_HEADER_LENGTH + TAG_LENGTH,
        this.sourceOf(opening.source[j]!, peer),
      );
      if (!packet) continue;
      writes.offsets[m] = offset;
      writes.lengths[m] = packet.length;
      m++;
    }
    opening.reset();
    if (m === 0) return;
    this.dataSeen();
    const written = this.tun.writeBatch(writes, m);
    this.observations.tunWrite.observe(m);
    for (let j = 0; j < written; j++) if (writes.status[j]! < 0) this.counters.tunWriteErrors++;
    this.counters.tunWriteErrors += m - written;
  }

  /** The sender of datagram i: the peer's own endpoint object when unchanged (no allocation). */
  private sourceOf(index: number, peer: Peer): Endpoint {
    const records = this.udpIn.endpoints;
    const at = index * ENDPOINT_SIZE;
    if (peer.endpoint) {
      const known = this.endpointRecord(peer.endpoint);
      let same = true;
      for (let k = 0; k < ENDPOINT_ADDRESS_AND_PORT_BYTES && same; k++) {
        same = records[at + k] === known[k];
      }
      if (same) return peer.endpoint;
    }
    return readEndpoint(records, index);
  }

  /**
   * No ticker: the daemon sleeps until the core's next timer is due. Every path that arms a
   * timer (a packet, a handshake, `wg set`) goes through the wheel, which reports a timer due
   * before the planned wake through `onEarlierDue`.
   */
  private startTimers(): void {
    const wheel = this.device.wheel;
    wheel.onEarlierDue = (dueMs) => this.wakeNoLaterThan(dueMs);
    // What adding the peers asked for (a first keepalive, so a handshake) goes out now.
    this.flush();
    this.wakeNoLaterThan(wheel.nextDueMs());
    this.dropCheck = setInterval(
      () => this.dropReporter.check(this.device.stats.drops),
      DROP_CHECK_MS,
    );
    this.dropCheck.unref();
    this.running = true;
  }

  /**
   * Runs the per-packet code on throwaway daemons in memory, in the background, so that the
   * first real packets find it compiled (src/host/warm-up.ts).
   */
  private warmUp(): void {
    const abort = new AbortController();
    const startedAt = performance.now();
    const promise = warmUpDataPath(Daemon, { signal: abort.signal }).then((roundTrips) => {
      this.warming = null;
      this.logger.debug("data path warmed up", {
        roundTrips,
        ms: Math.round(performance.now() - startedAt),
      });
      return roundTrips;
    });
    this.warming = { promise, abort };
  }

  private dataSeen(): void {
    this.dataBatches++;
    if (this.awakeTimer === null && !this.stopped) this.stayAwake();
  }

  private stayAwake(): void {
    let seen = this.dataBatches;
    let lastDataAt = this.device.clock.now();
    this.awakeTimer = setInterval(() => {
      // The clock is read here, once a tick, rather than per batch on the data path.
      const now = this.device.clock.now();
      if (this.dataBatches !== seen) {
        seen = this.dataBatches;
        lastDataAt = now;
      } else if (now - lastDataAt >= AWAKE_AFTER_DATA_MS || this.stopped) {
        clearInterval(this.awakeTimer!);
        this.awakeTimer = null;
      }
    }, AWAKE_INTERVAL_MS);
  }

  private wakeNoLaterThan(dueMs: number): void {
    if (dueMs >= this.wakeAt || this.stopped || !Number.isFinite(dueMs)) return;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeAt = dueMs;
    // Node's timers may fire up to a millisecond before the device's clock says; `wake` then
    // finds nothing due yet and sets the timer again.
    const delayMs = Math.min(MAX_SLEEP_MS, Math.max(1, Math.ceil(dueMs - this.device.clock.now())));
    this.wakeTimer = setTimeout(() => this.wake(), delayMs);
  }

  private wake(): void {
    this.wakeTimer = null;
    this.wakeAt = Infinity;
    if (this.stopped) return;
    // The timers decide on what the native receive thread saw too.
    this.syncReceivePath();
    this.device.tick();
    this.flush();
    this.dropReporter.check(this.device.stats.drops);
    this.wakeNoLaterThan(this.device.wheel.nextDueMs());
  }

  /** Carries out what the device asked for, in batches. */
  private flush(): void {
    const actions = this.device.actions;
    const { datagrams, endpoints, tunnelPackets } = actions;
    for (let start = 0; start < datagrams.length; start += BATCH) {
      const count = Math.min(BATCH, datagrams.length - start);
      for (let j = 0; j < count; j++) {
        this.udpOut.setPacket(j, datagrams[start + j]!);
        this.udpOut.endpoints.set(this.endpointRecord(endpoints[start + j]!), j * ENDPOINT_SIZE);
      }
      const sent = this.socket ? this.socket.sendBatch(this.udpOut, count) : 0;
      this.observations.udpSend.observe(count);
      for (let j = 0; j < sent; j++)
        if (this.udpOut.status[j]! < 0) this.counters.socketSendErrors++;
      this.counters.socketSendErrors += count - sent;
    }
    for (let start = 0; start < tunnelPackets.length; start += BATCH) {
      const count = Math.min(BATCH, tunnelPackets.length - start);
      for (let j = 0; j < count; j++) this.tunOut.setPacket(j, tunnelPackets[start + j]!);
      const written = this.tun.writeBatch(this.tunOut, count);
      this.observations.tunWrite.observe(count);
      for (let j = 0; j < written; j++)
        if (this.tunOut.status[j]! < 0) this.counters.tunWriteErrors++;
      this.counters.tunWriteErrors += count - written;
    }
    actions.clear();
  }

  private endpointRecord(endpoint: Endpoint): Uint8Array {
    let record = this.endpointRecords.get(endpoint);
    if (!record) {
      record = new Uint8Array(ENDPOINT_SIZE);
      writeEndpoint(record, 0, endpoint);
      this.endpointRecords.set(endpoint, record);
    }
    return record;
  }

  // --- the native receive path ------------------------------------------------------------

  /** Hands transport data of established sessions to the addon's receive thread. */
  private startReceivePath(tun: TunDevice, sends: boolean): void {
    if (!nativeAvailable()) return;
    this.receivePath = new NativeReceivePath(
      this.device,
      tun,
      () => this.receivePathEvent(),
      sends,
    );
  }

  /**
   * The thread has news: confirmations and activity for the core, datagrams and inner packets
   * for the JS path.
   */
  private receivePathEvent(): void {
    if (this.stopped) return;
    this.syncReceivePath();
    this.receiveNetwork();
    if (this.receivePath?.readsTun) this.takeTunnel();
  }

  /** Inner packets the send thread left to the core (no route, no session, no counters). */
  private takeTunnel(): void {
    const path = this.receivePath;
    if (!path || this.stopped) return;
    const count = path.plane.takeTunnel(this.tunIn, BATCH);
    if (count === 0) return;
    if (count === BATCH) setImmediate(() => this.takeTunnel());
    this.sendTunnelBatch(count);
  }

  /** Carries what the receive thread did into the core and the counters; sends what follows. */
  private syncReceivePath(): void {
    const path = this.receivePath;
    if (!path) return;
    path.sync();
    path.observeBatches(this.observations);
    const carried = path.carryCounters();
    this.counters.tunWriteErrors += carried.tunWriteErrors;
    this.counters.socketSendErrors += carried.sendErrors;
    this.counters.nativeReceived = carried.opened;
    this.counters.nativeHandedToJs = carried.toJs;
    this.counters.nativeSealed = carried.sealed;
    this.counters.nativeTunToJs = carried.tunToJs;
    this.counters.nativeSendMessages = carried.sendMessages;
    if (carried.error === EBADFD && path.readsTun && !this.stopped) {
      // The thread read the TUN device: the interface was deleted under us.
      this.interfaceGone();
      return;
    }
    if (carried.error !== 0 && !this.receivePathFailed) {
      this.receivePathFailed = true;
      this.logger.error("native data-path thread stopped", {
        interface: this.name,
        errno: carried.error,
      });
    }
    if (!this.stopped) this.flush();
  }

  /** Before `wg show` or a scrape reads the counters: what the receive thread did counts. */
  beforeRead(): void {
    if (!this.stopped) this.syncReceivePath();
  }

  // --- control (UapiHost) ------------------------------------------------------------------

  listenPort(): number {
    return this.socket?.port ?? 0;
  }

  /** Binds `port` beside the current socket; the reconfiguration queue commits or aborts. */
  prepareListenPort(port: number): PendingListenPort {
    const socket = this.openSocket(port); // throws EADDRINUSE, nothing changed
    try {
      if (this.mark !== 0) socket.setFwmark?.(this.mark);
    } catch (error) {
      socket.close();
      throw error;
    }
    return {
      commit: () => {
        if (this.receivePath && socket.receiveFd !== undefined) {
          this.receivePath.attach(socket.receiveFd);
        } else {
          socket.onReadable(() => this.receiveNetwork());
        }
        // Handshakes arrive on their own socket of the pair, when the kernel steers them, and
        // a thread of the addon's reads it where it can (a flood then costs this one nothing).
        const handshake = socket.handshake ?? null;
        const lane =
          handshake?.startLane && this.cookieGate
            ? handshake.startLane(() => this.takeHandshakes())
            : null;
        if (!lane) handshake?.onReadable(() => this.receiveHandshakes());
        this.socket?.close();
        this.socket = socket;
        this.handshakeSocket = handshake;
        this.handshakeSocketDrops = 0;
        this.handshakeLane = lane;
        this.laneSeen = null;
        // With the lane, load is what the core wasted (Device.wastedHandshakesPerSecond) and,
        // as a backstop, passed messages waiting too long (native/lane.c), so a fleet starting
        // at once is answered rather than sent away; the core's rate threshold stays for the
        // path without it.
        this.device.underLoadHandshakesPerSecond = lane ? Infinity : this.underLoadRateWithoutLane;
        this.syncLane();
        // A flood the lane absorbs wakes nothing here, so its counters, the cookie secret's
        // rotation and the load verdict travel on a timer of their own while it has work.
        if (this.laneSyncTimer) clearInterval(this.laneSyncTimer);
        if (this.laneKeysTimer) clearTimeout(this.laneKeysTimer);
        this.laneSyncTimer = this.laneKeysTimer = null;
        this.laneBusy();
      },
      abort: () => socket.close(),
    };
  }

  /** Sends what the core queued after a change made outside the data path. */
  flushActions(): void {
    this.flush();
  }

  fwmark(): number {
    return this.mark;
  }

  setFwmark(mark: number): void {
    this.socket?.setFwmark?.(mark);
    this.mark = mark;
  }

  /** The route side of a change: which routes this daemon installed, and how to change them. */
  get routes(): InterfaceSetup | null {
    // Under wg-quick (edgetun-go) the launcher adds the routes itself.
    return this.manageRoutes ? this.setup : null;
  }

  /** After a change: send what it queued (a keepalive when persistent keepalive came on). */
  afterChange(): void {
    if (this.stopped) return;
    this.flush();
    // A new private key means new cookie keys: the lane gets them now, not at its next datagram.
    this.syncLane();
  }

  /**
   * Applies `change` through the interface's one reconfiguration queue, all or nothing (see
   * src/host/reconfigure.ts); rejects with a ReconfigurationError and then nothing changed.
   * `source` names the caller in the log ("wg set", "reload", "syncconf", "fleet").
   */
  reconfigure(
    change: ConfigChange | (() => ConfigChange),
    source: ChangeSource,
  ): Promise<ChangeSummary> {
    return this.reconfigurer.applyBuilt(
      () =>
        respectOwners(
          this.device,
          typeof change === "function" ? change() : change,
          source,
          this.#peerOwners(),
          this.logger,
        ),
      source,
    );
  }

  /** The attachments that own peers (the fleet), as the reconfiguration queue asks them. */
  #peerOwners(): PeerOwner[] {
    return this.extensions.flatMap((part) => (part.peerOwner ? [part.peerOwner] : []));
  }

  /**
   * Makes the running interface what `config` describes, the way `wg syncconf` does (a
   * reload): the difference against the running state, computed when its turn in the queue
   * comes, is applied as one change. Addresses and MTU are left alone (as wg syncconf does).
   */
  async applyConfig(
    config: InterfaceFileConfig,
    source: ChangeSource = "reload",
  ): Promise<ChangeSummary> {
    const endpoints = await Promise.all(
      config.peers.map((peer) => (peer.endpoint ? resolveEndpoint(peer.endpoint) : null)),
    );
    return this.reconfigure(
      () =>
        changeFromConfig(this.device, config, endpoints, {
          listenPort: this.listenPort(),
          fwmark: this.mark,
          keepFwmark: this.setup?.routesDefaultThroughMark ?? false,
        }),
      source,
    );
  }
}
