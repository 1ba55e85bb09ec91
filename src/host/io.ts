/**
 * The two devices the daemon's data path talks to, as small interfaces: a TUN device that
 * reads and writes batches of inner packets, and a UDP socket that receives and sends
 * batches of datagrams. The addon's TunDevice and UdpBatchSocket are the production ones;
 * test/support/fake-io.ts has in-memory ones (as wireguard-go's tun/tuntest and
 * conn/bindtest), so the batched seal/open path and the handshake queue are tested without
 * root. Slots are the addon's batch descriptors (src/host/native/batch.ts).
 */
import type {
  HandshakeLaneStats,
  ReceiveSlots,
  UdpReceiveSlots,
  UdpSendSlots,
  WriteSlots,
} from "./native/index.js";

export interface TunnelDevice {
  readonly name: string;
  /** Reads the packets that are ready into `slots` from index 0; returns how many (0: none). */
  readBatch(slots: ReceiveSlots): number;
  /** Writes packets [0, count); returns how many were taken, status[i] < 0 for a refusal. */
  writeBatch(slots: WriteSlots, count: number): number;
  /** Calls `handler` whenever packets may be read (null stops). */
  onReadable(handler: (() => void) | null): void;
  close(): void;
}

export interface DatagramSocket {
  /** The bound port. */
  readonly port: number;
  /** Receives waiting datagrams with their senders' endpoint records; returns how many. */
  recvBatch(slots: UdpReceiveSlots): number;
  /** Sends datagrams [0, count) to their endpoint records; returns how many were taken. */
  sendBatch(slots: UdpSendSlots, count: number): number;
  /** Calls `handler` whenever datagrams may be received (null stops). */
  onReadable(handler: (() => void) | null): void;
  /**
   * The descriptor transport data arrives at, for the native receive thread to read (the
   * addon's sockets); absent for in-memory ones.
   */
  readonly receiveFd?: number;
  /** SO_MARK on outgoing packets; a socket that has no marks need not have it. */
  setFwmark?(mark: number): void;
  /**
   * Where the kernel steers handshake messages apart from data (UdpSocketPair): the daemon
   * serves it on a budget. Absent or null: everything arrives at this socket.
   */
  readonly handshake?: HandshakeDatagramSocket | null;
  close(): void;
}

/** The handshake lane: a socket whose kernel queue reports how much it dropped when full. */
export interface HandshakeDatagramSocket {
  recvBatch(slots: UdpReceiveSlots): number;
  onReadable(handler: (() => void) | null): void;
  /** Datagrams dropped since the socket was made because its buffer was full. */
  queueStats(): { drops: number };
  /**
   * Reads the socket on a thread of its own from now on, through the native cookie gate
   * (src/host/native/lane.ts); `onPassed` says when messages for the core wait. Absent: the
   * daemon reads the socket itself.
   */
  startLane?(onPassed: () => void): HandshakeLaneControl;
}

/** The daemon's side of a handshake lane. */
export interface HandshakeLaneControl {
  configure(keys: Uint8Array | null, underLoad: boolean): void;
  take(slots: UdpReceiveSlots, count: number): number;
  stats(): HandshakeLaneStats;
  /** One more notification at the next datagram read; returns `received` as of now. */
  wakeOnActivity(): number;
}

/** Opens the daemon's UDP socket on `port` (0: any free port); throws when it cannot. */
export type DatagramSocketOpener = (port: number) => DatagramSocket;
