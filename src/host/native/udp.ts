// The UDP socket with recvmmsg/sendmmsg.
import { callNative, type NativeAddon, type UdpQueueStats } from "./addon.js";
import { type UdpReceiveSlots, type UdpSendSlots } from "./batch.js";
import { PolledDescriptor, defaultCount } from "./poll.js";
import { HandshakeLane } from "./lane.js";

export interface UdpBindOptions {
  /** 0 (default) picks a free port; read it back from {@link UdpBatchSocket.port}. */
  port?: number;
  /** IP literal; "::" (default) is dual-stack, falling back to 0.0.0.0 without IPv6. */
  host?: string;
  /**
   * Requested SO_RCVBUF / SO_SNDBUF; default 4 MiB each. With CAP_NET_ADMIN the *FORCE
   * variants get past net.core.rmem_max/wmem_max; otherwise the kernel caps them.
   */
  receiveBufferSize?: number;
  sendBufferSize?: number;
  /**
   * Send runs of equal-sized packets to one destination as one UDP GSO message
   * (UDP_SEGMENT), when the kernel supports it; default true. The receiver sees ordinary
   * datagrams either way.
   */
  gso?: boolean;
  /** SO_REUSEPORT, so that a second socket can share the port ({@link UdpSocketPair}). */
  reusePort?: boolean;
}

const DEFAULT_SOCKET_BUFFER = 4 << 20;

/** A non-blocking UDP socket that moves whole batches with recvmmsg/sendmmsg. */
export class UdpBatchSocket extends PolledDescriptor {
  readonly port: number;
  /** 6 for an AF_INET6 socket (dual-stack or not), 4 for AF_INET. */
  readonly family: 4 | 6;
  /** Whether IPv4 peers reach this socket too (as IPv4-mapped endpoints). */
  readonly dualStack: boolean;
  /** Whether sends use UDP GSO (asked for and supported by the kernel). */
  readonly gso: boolean;
  /** Sizes as the kernel reports them (it doubles the request for bookkeeping). */
  readonly receiveBufferSize: number;
  readonly sendBufferSize: number;

  private constructor(bound: ReturnType<NativeAddon["udpBind"]>) {
    super(bound.fd);
    this.port = bound.port;
    this.family = bound.family;
    this.dualStack = bound.dualStack;
    this.gso = bound.gso;
    this.receiveBufferSize = bound.receiveBufferSize;
    this.sendBufferSize = bound.sendBufferSize;
  }

  /**
   * Creates the socket, raises its buffers and binds it. (Named `open`, not `bind`, because
   * a static `bind` would shadow Function.prototype.bind on the class.)
   */
  static open(options: UdpBindOptions = {}): UdpBatchSocket {
    const bound = callNative((addon) =>
      addon.udpBind(
        options.host ?? "::",
        options.port ?? 0,
        options.receiveBufferSize ?? DEFAULT_SOCKET_BUFFER,
        options.sendBufferSize ?? DEFAULT_SOCKET_BUFFER,
        options.gso === false,
        options.reusePort === true,
      ),
    );
    return new UdpBatchSocket(bound);
  }

  /**
   * Sets SO_MARK (WireGuard's fwmark) on outgoing packets, so policy routing can keep the
   * tunnel's own UDP traffic out of the tunnel; 0 clears it. Needs CAP_NET_ADMIN.
   */
  setFwmark(mark: number): void {
    const fd = this.fd;
    callNative(() => this.native().udpSetMark(fd, mark));
  }

  /** Bytes waiting in the kernel's receive queue and datagrams it dropped when full. */
  queueStats(): UdpQueueStats {
    return this.native().udpQueueStats(this.fd);
  }

  /**
   * Hands this socket to a handshake lane (src/host/native/lane.ts): a thread that reads it
   * from now on, until {@link close} stops the lane first. Readiness callbacks stop.
   */
  startLane(onPassed: () => void): HandshakeLane {
    if (this.#lane) throw new Error("this socket already has a handshake lane");
    this.onReadable(null);
    this.#lane = HandshakeLane.start(this.fd, onPassed);
    return this.#lane;
  }
  #lane: HandshakeLane | null = null;

  override close(): void {
    this.#lane?.stop();
    this.#lane = null;
    super.close();
  }

  /**
   * Attaches the steering program to this socket's SO_REUSEPORT group: transport data to the
   * group's first socket, everything else to the second. Throws where the kernel lacks it.
   */
  steerHandshakes(): void {
    this.native().udpSteerHandshakes(this.fd);
  }

  /**
   * Receives the datagrams that are waiting, up to `maxCount`; returns how many (0 when
   * none). Datagram k: bytes at offsets[first + k] (truncated to `slots.room`), length,
   * sender endpoint record and, when `slots.locals` is given, the local address it was
   * sent to.
   */
  recvBatch(slots: UdpReceiveSlots, maxCount?: number, first = 0): number {
    const count = maxCount ?? defaultCount(slots, first);
    return this.native().udpRecv(
      this.fd,
      slots.arena,
      slots.offsets,
      slots.lengths,
      slots.endpoints,
      slots.locals ?? null,
      first,
      count,
      slots.room,
    );
  }

  /**
   * Sends packets [first, first + count) to their endpoint records; returns how many were
   * consumed. Undeliverable packets get status[i] = -errno and do not stop the batch; a
   * return below `count` means the send buffer is full: resume from first + returned after
   * {@link onceWritable}. Consecutive packets to the same endpoint (and local address) with
   * the same length, the last of a run possibly shorter, share one GSO send.
   */
  sendBatch(slots: UdpSendSlots, count: number, first = 0): number {
    return this.native().udpSend(
      this.fd,
      slots.arena,
      slots.offsets,
      slots.lengths,
      slots.endpoints,
      slots.locals ?? null,
      slots.status ?? null,
      first,
      count,
    );
  }
}

/**
 * Receive buffer of the handshake socket: about five thousand queued handshake messages, a
 * quarter second of a 20 k/s flood, so that a hub the scheduler leaves waiting for a moment
 * does not lose a joining peer's initiation among the flood's.
 */
const HANDSHAKE_SOCKET_BUFFER = 4 << 20;

/**
 * The listening port as two sockets in one SO_REUSEPORT group, with a kernel steering program
 * that puts transport data in `data` and handshake messages (and anything else) in
 * `handshake`. A handshake flood then overflows only the handshake socket's buffer: the kernel
 * never drops data to make room for it, and the handshake socket's drop counter says how much
 * of a flood there is. Where the kernel cannot steer, `handshake` is null and `data` takes all.
 *
 * Both sockets send from the same address and port, so replies go out through `data`.
 */
export class UdpSocketPair {
  private constructor(
    readonly data: UdpBatchSocket,
    readonly handshake: UdpBatchSocket | null,
  ) {}

  get port(): number {
    return this.data.port;
  }

  /** Where transport data arrives: what the native receive thread reads. */
  get receiveFd(): number {
    return this.data.fd;
  }

  static open(options: UdpBindOptions = {}): UdpSocketPair {
    // A plain bind first: it fails as a single socket would when another process holds the
    // port (a second edgetun of the same port included, whose plain bind our pair refuses),
    // and it picks port 0's port. A socket of the same user that sets SO_REUSEPORT itself
    // may still join the kernel's group, but the steering program never picks it.
    const probe = UdpBatchSocket.open({ ...options, receiveBufferSize: 0, sendBufferSize: 0 });
    const port = probe.port;
    probe.close();
    let data: UdpBatchSocket | null = null;
    let handshake: UdpBatchSocket | null = null;
    try {
      data = UdpBatchSocket.open({ ...options, port, reusePort: true });
      handshake = UdpBatchSocket.open({
        ...options,
        port,
        reusePort: true,
        receiveBufferSize: HANDSHAKE_SOCKET_BUFFER,
      });
      handshake.steerHandshakes();
      return new UdpSocketPair(data, handshake);
    } catch {
      // No steering here (or the port was taken in between): one plain socket.
      handshake?.close();
      data?.close();
      return new UdpSocketPair(UdpBatchSocket.open({ ...options, port }), null);
    }
  }

  setFwmark(mark: number): void {
    this.data.setFwmark(mark);
    this.handshake?.setFwmark(mark);
  }

  // The data socket's side of the daemon's DatagramSocket: receives, sends and readiness.
  recvBatch(slots: UdpReceiveSlots): number {
    return this.data.recvBatch(slots);
  }

  sendBatch(slots: UdpSendSlots, count: number): number {
    return this.data.sendBatch(slots, count);
  }

  onReadable(handler: (() => void) | null): void {
    this.data.onReadable(handler);
  }

  close(): void {
    this.handshake?.close();
    this.data.close();
  }
}
