// The daemon: the protocol core wired to a TUN device and a UDP socket through the native
// addon, plus the control socket and the interface's addresses and routes. It owns no
// protocol logic: every decision is the Device's; this file moves batches and keeps time.
import type { InterfaceFileConfig, PeerFileConfig } from "./config.js";
import { resolveEndpoint } from "./config.js";
import { Device, type PeerConfig } from "./device.js";
import type { Logger } from "./log.js";
import { shortKey } from "./log.js";
import {
  PacketBatch,
  TunDevice,
  UdpBatchSocket,
  writeEndpoint,
  readEndpoint,
  ENDPOINT_SIZE,
} from "./native.js";
import { InterfaceSetup, routesFor, type Route } from "./netif.js";
import type { Endpoint, Peer } from "./peer.js";
import { UapiServer, type UapiHost } from "./uapi.js";

/** Packets moved per read/receive call; a batch is processed fully before the next. */
const BATCH = 128;
/** Arena slot: a jumbo-free MTU plus the WireGuard header, padding and tag. */
const SLOT_SIZE = 2048;

export interface DaemonOptions {
  interfaceName: string;
  config: InterfaceFileConfig;
  logger: Logger;
  /** Where the control socket goes (default /var/run/wireguard). */
  uapiDirectory?: string;
}

export class DaemonCounters {
  /** Datagrams the socket would not take (send buffer full or unreachable). */
  socketSendErrors = 0;
  /** Packets the TUN device would not take. */
  tunWriteErrors = 0;
  tunReadBatches = 0;
  udpReceiveBatches = 0;
}

export class Daemon implements UapiHost {
  readonly device: Device;
  readonly counters = new DaemonCounters();
  private readonly tunIn = new PacketBatch(BATCH, { slotSize: SLOT_SIZE });
  private readonly udpIn = new PacketBatch(BATCH, { slotSize: SLOT_SIZE });
  private readonly udpOut = new PacketBatch(BATCH, { slotSize: SLOT_SIZE });
  private readonly tunOut = new PacketBatch(BATCH, { slotSize: SLOT_SIZE });
  /** Endpoint records by endpoint object: peers keep theirs, so this is a per-peer cache. */
  private readonly endpointRecords = new WeakMap<Endpoint, Uint8Array>();
  private socket: UdpBatchSocket | null = null;
  private uapi: UapiServer | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private mark = 0;
  private stopped = false;

  private constructor(
    readonly name: string,
    private readonly tun: TunDevice,
    private readonly setup: InterfaceSetup,
    private readonly logger: Logger,
    config: InterfaceFileConfig,
  ) {
    this.device = new Device({ privateKey: config.privateKey, mtu: config.mtu });
    this.mark = config.fwmark;
  }

  /**
   * Brings the interface up: TUN device, addresses, MTU, UDP socket, peers, routes, control
   * socket. On any failure everything done so far is undone before the error is rethrown.
   */
  static async start(options: DaemonOptions): Promise<Daemon> {
    const { config, logger, interfaceName } = options;
    // Resolve endpoints first: a name that does not resolve must stop us before any change.
    const endpoints = await Promise.all(
      config.peers.map((peer) => (peer.endpoint ? resolveEndpoint(peer.endpoint) : null)),
    );
    const tun = TunDevice.open({ name: interfaceName });
    const setup = new InterfaceSetup(tun.name, logger);
    const daemon = new Daemon(tun.name, tun, setup, logger, config);
    try {
      daemon.bindSocket(config.listenPort ?? 0);
      config.peers.forEach((peer, i) => daemon.device.addPeer(peerConfig(peer, endpoints[i]!)));
      tun.setMtu(config.mtu);
      for (const address of config.addresses) {
        await setup.addAddress(address.text, address.address.length === 16);
      }
      tun.up();
      await daemon.addRoutes();
      daemon.uapi = await UapiServer.listen(
        tun.name,
        daemon,
        options.uapiDirectory ? { directory: options.uapiDirectory } : {},
      );
      tun.onReadable(() => daemon.readTunnel());
      daemon.ticker = setInterval(() => daemon.tick(), daemon.device.wheel.granularityMs);
      logger.info("interface up", {
        interface: tun.name,
        listenPort: daemon.listenPort(),
        peers: config.peers.length,
        publicKey: shortKey(daemon.device.publicKey?.toString("base64") ?? ""),
      });
      return daemon;
    } catch (error) {
      await daemon.stop();
      throw error;
    }
  }

  private async addRoutes(): Promise<void> {
    const prefixes: Route[] = [];
    for (const peer of this.device.peers.values()) {
      prefixes.push(...this.device.allowedIps.entriesFor(peer));
    }
    for (const route of routesFor(prefixes)) {
      await this.setup.addRoute(route, this.fwmarkForDefaultRoute(route));
    }
  }

  /** A default route needs a mark to tell tunnel traffic apart; wg-quick picks 51820. */
  private fwmarkForDefaultRoute(route: Route): number {
    if (route.cidr !== 0) return this.mark;
    if (this.mark === 0) this.setFwmark(51820);
    return this.mark;
  }

  private bindSocket(port: number): void {
    const socket = UdpBatchSocket.open({ port });
    if (this.mark !== 0) socket.setFwmark?.(this.mark);
    socket.onReadable(() => this.receiveNetwork());
    this.socket?.close();
    this.socket = socket;
  }

  /** Removes the interface (its routes go with it), policy rules and the control socket. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ticker) clearInterval(this.ticker);
    await this.uapi?.close();
    this.socket?.close();
    this.tun.close();
    await this.setup.teardown();
    this.logger.info("interface down", { interface: this.name });
  }

  // --- data path -------------------------------------------------------------------------

  private readTunnel(): void {
    const count = this.tun.readBatch(this.tunIn);
    if (count === 0) return;
    this.counters.tunReadBatches++;
    for (let i = 0; i < count; i++) this.device.handleTunnelPacket(this.tunIn.packet(i));
    this.flush();
  }

  private receiveNetwork(): void {
    const socket = this.socket;
    if (!socket) return;
    const count = socket.recvBatch(this.udpIn);
    if (count === 0) return;
    this.counters.udpReceiveBatches++;
    for (let i = 0; i < count; i++) {
      this.device.handleDatagram(this.udpIn.packet(i), readEndpoint(this.udpIn.endpoints, i));
    }
    this.flush();
  }

  private tick(): void {
    this.device.tick();
    this.flush();
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
      for (let j = 0; j < sent; j++)
        if (this.udpOut.status[j]! < 0) this.counters.socketSendErrors++;
      this.counters.socketSendErrors += count - sent;
    }
    for (let start = 0; start < tunnelPackets.length; start += BATCH) {
      const count = Math.min(BATCH, tunnelPackets.length - start);
      for (let j = 0; j < count; j++) this.tunOut.setPacket(j, tunnelPackets[start + j]!);
      const written = this.tun.writeBatch(this.tunOut, count);
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

  // --- control (UapiHost) ------------------------------------------------------------------

  listenPort(): number {
    return this.socket?.port ?? 0;
  }

  setListenPort(port: number): void {
    if (port === this.listenPort()) return;
    this.bindSocket(port); // throws EADDRINUSE and leaves the old socket in place
  }

  fwmark(): number {
    return this.mark;
  }

  setFwmark(mark: number): void {
    this.mark = mark;
    this.socket?.setFwmark?.(mark);
  }

  /**
   * Applies a changed configuration the way `wg syncconf` does: peers that did not change
   * keep their sessions and counters; removed peers go; new peers come; changed fields are
   * updated in place. Addresses and MTU are left alone (as wg syncconf does).
   */
  async applyConfig(config: InterfaceFileConfig): Promise<void> {
    const endpoints = await Promise.all(
      config.peers.map((peer) => (peer.endpoint ? resolveEndpoint(peer.endpoint) : null)),
    );
    this.device.setPrivateKey(config.privateKey);
    if (config.listenPort !== null) this.setListenPort(config.listenPort);
    if (config.fwmark !== this.mark) this.setFwmark(config.fwmark);
    const wanted = new Set(config.peers.map((p) => p.publicKey.toString("base64")));
    for (const peer of [...this.device.peers.values()]) {
      if (!wanted.has(peer.publicKeyBase64)) this.device.removePeer(peer.publicKey);
    }
    config.peers.forEach((filePeer, i) => {
      const settings = peerConfig(filePeer, endpoints[i]!);
      const existing = this.device.peer(filePeer.publicKey);
      if (!existing) {
        this.device.addPeer(settings);
        return;
      }
      updateExisting(this.device, existing, settings);
    });
    await this.addRoutes();
    this.flush();
    this.logger.info("configuration applied", { interface: this.name, peers: config.peers.length });
  }
}

function peerConfig(
  peer: PeerFileConfig,
  endpoint: { address: string; port: number } | null,
): PeerConfig {
  return {
    publicKey: peer.publicKey,
    presharedKey: peer.presharedKey ?? Buffer.alloc(32),
    endpoint,
    allowedIps: peer.allowedIps,
    persistentKeepalive: peer.persistentKeepalive,
  };
}

/** Changes only what differs, so an unchanged peer's session is not touched. */
function updateExisting(device: Device, peer: Peer, settings: PeerConfig): void {
  const psk = settings.presharedKey ?? Buffer.alloc(32);
  if (!peer.presharedKey.equals(psk)) peer.presharedKey = psk;
  const endpoint = settings.endpoint ?? null;
  if (
    endpoint &&
    (!peer.endpoint ||
      peer.endpoint.address !== endpoint.address ||
      peer.endpoint.port !== endpoint.port)
  ) {
    peer.endpoint = endpoint;
  }
  const current = device.allowedIps.entriesFor(peer);
  const key = (r: { address: Uint8Array; cidr: number }) =>
    `${Buffer.from(r.address).toString("hex")}/${r.cidr}`;
  const wanted = new Map((settings.allowedIps ?? []).map((r) => [key(r), r]));
  for (const route of current) {
    if (!wanted.delete(key(route))) device.allowedIps.remove(route.address, route.cidr, peer);
  }
  for (const route of wanted.values()) device.allowedIps.insert(route.address, route.cidr, peer);
  if ((settings.persistentKeepalive ?? 0) !== peer.persistentKeepalive) {
    device.setPersistentKeepalive(peer, settings.persistentKeepalive ?? 0);
  }
}
