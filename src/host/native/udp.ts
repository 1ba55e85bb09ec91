// The UDP socket with recvmmsg/sendmmsg.
import { callNative, type NativeAddon } from "./addon.js";
import { type UdpReceiveSlots, type UdpSendSlots } from "./batch.js";
import { PolledDescriptor, defaultCount } from "./poll.js";

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
