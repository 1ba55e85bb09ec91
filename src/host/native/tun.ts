// The TUN device: open, configure, read and write packets in batches.
import { callNative } from "./addon.js";
import { type ReceiveSlots, type WriteSlots } from "./batch.js";
import { PolledDescriptor, defaultCount } from "./poll.js";

export interface TunOpenOptions {
  /** Interface name (at most 15 bytes); empty or absent lets the kernel pick "tunN". */
  name?: string;
  /** Open with IFF_MULTI_QUEUE, so further queues can attach to the same interface. */
  multiQueue?: boolean;
  /**
   * Use the virtio-net header mode (IFF_VNET_HDR) with checksum and segmentation offload
   * (TSO4/TSO6, and USO when the kernel has it): the kernel hands over TCP super-packets of
   * up to 64 KiB with unfinished checksums instead of segmenting them itself, and the addon
   * cuts them into MTU-sized packets with complete checksums. Transparent to the caller,
   * except that {@link TunDevice.readBatch} may leave packets pending in the addon (see
   * there). When the kernel refuses the offloads the device is opened without them and
   * {@link TunDevice.offload} is false. Default false. All queues of a multi-queue device
   * must agree.
   */
  offload?: boolean;
  /**
   * With offload: coalesce runs of consecutive TCP segments of one flow in a
   * {@link TunDevice.writeBatch} into one GSO super-packet for the kernel (receive-side
   * coalescing, as a NIC's GRO would). Default true.
   */
  gro?: boolean;
}

/** Counters of an offload queue ({@link TunDevice.offloadStats}). */
export interface TunOffloadStats {
  /** read(2) calls that returned a packet. */
  reads: number;
  /** Of those, GSO super-packets (TCP or UDP) that were split. */
  superPackets: number;
  /** Packets handed to the caller. */
  segments: number;
  /** Reads that could not be split or checksummed, or did not fit `room` (UDP). */
  dropped: number;
  /** write(2) calls, a coalesced run counting once. */
  writes: number;
  /** Writes that carried a coalesced run, and the packets in those runs. */
  coalescedWrites: number;
  coalescedPackets: number;
  /** Coalesced runs the kernel refused (then written one by one). */
  groRefused: number;
}

/**
 * One queue of a layer-3 TUN interface (IFF_TUN | IFF_NO_PI, non-blocking): each read or
 * write is one bare IPv4/IPv6 packet. Creating one needs CAP_NET_ADMIN.
 *
 * With `offload` the same holds for the caller, but the kernel's side of the queue carries
 * virtio-net headers and super-packets; see {@link TunOpenOptions.offload}.
 */
export class TunDevice extends PolledDescriptor {
  readonly name: string;
  readonly multiQueue: boolean;
  /** Whether this queue runs with checksum/segmentation offload (asked for and granted). */
  readonly offload: boolean;
  /** Whether the kernel also accepted UDP segmentation offload (USO, Linux 6.2+). */
  readonly udpOffload: boolean;
  #handler: (() => void) | null = null;
  #redrive: NodeJS.Immediate | null = null;

  private constructor(
    fd: number,
    name: string,
    multiQueue: boolean,
    offload: boolean,
    udpOffload: boolean,
  ) {
    super(fd);
    this.name = name;
    this.multiQueue = multiQueue;
    this.offload = offload;
    this.udpOffload = udpOffload;
  }

  static open(options: TunOpenOptions = {}): TunDevice {
    const multiQueue = options.multiQueue ?? false;
    const opened = callNative((addon) =>
      addon.tunOpen(options.name ?? "", multiQueue, options.offload ?? false, options.gro ?? true),
    );
    return new TunDevice(opened.fd, opened.name, multiQueue, opened.offload, opened.uso);
  }

  /**
   * Opens `count` queues of one multi-queue interface (one per worker/core). All are closed
   * again if any fails.
   */
  static openQueues(count: number, options: Omit<TunOpenOptions, "multiQueue"> = {}): TunDevice[] {
    if (!Number.isInteger(count) || count < 1) {
      throw new RangeError(`queue count must be a positive integer, got ${count}`);
    }
    const queues: TunDevice[] = [];
    try {
      let name = options.name ?? "";
      for (let i = 0; i < count; i++) {
        const queue = TunDevice.open({ ...options, name, multiQueue: true });
        queues.push(queue);
        name = queue.name;
      }
    } catch (error) {
      for (const queue of queues) {
        queue.close();
      }
      throw error;
    }
    return queues;
  }

  /**
   * Reads the packets that are ready, up to `maxCount` (default: as many slots as follow
   * `first`, capped at {@link MAX_BATCH}); returns how many, 0 when none. Packet k lands at
   * offsets[first + k], its length in lengths[first + k]. `slots.room` must be at least
   * the MTU: the kernel truncates a longer packet silently.
   *
   * With {@link offload}, one read(2) may yield many packets (a TCP super-packet is cut
   * into MTU-sized segments with complete checksums). What does not fit the slots stays in
   * the addon, and is returned first by the next call. Such {@link pendingPackets} do not
   * make the descriptor readable, so the caller's contract is: after a call that filled
   * every slot it was given, call again (now or on a later turn) until a call returns fewer
   * packets than asked. A handler registered with {@link onReadable} need not do that
   * itself: while packets are pending after it returns, it is called again on the next
   * event-loop turn (setImmediate) even though the descriptor is not readable. A TCP
   * super-packet is cut to fit `slots.room` if it would not (a smaller MSS); a UDP one whose
   * datagrams do not fit is dropped; any other packet longer than `room` is truncated.
   */
  readBatch(slots: ReceiveSlots, maxCount?: number, first = 0): number {
    const count = maxCount ?? defaultCount(slots, first);
    return this.native().tunRead(
      this.fd,
      slots.arena,
      slots.offsets,
      slots.lengths,
      first,
      count,
      slots.room,
    );
  }

  /**
   * Packets the addon holds from a super-packet that did not fit the last {@link readBatch}
   * (always 0 without offload); the next readBatch returns them first.
   */
  get pendingPackets(): number {
    return this.offload ? this.native().tunPending(this.fd) : 0;
  }

  /** Counters of the offload path; null without offload. */
  get offloadStats(): TunOffloadStats | null {
    return this.offload ? this.native().tunOffloadStats(this.fd) : null;
  }

  /**
   * Calls `handler` whenever the descriptor is readable (null stops) and, with
   * {@link offload}, also on the next event-loop turn after a call that left packets
   * pending in the addon, until none are: a handler that reads one batch per call loses
   * nothing.
   */
  override onReadable(handler: (() => void) | null): void {
    this.#handler = handler;
    if (!this.offload || handler === null) {
      this.#cancelRedrive();
      super.onReadable(handler);
      return;
    }
    super.onReadable(this.#drive);
  }

  override close(): void {
    this.#handler = null;
    this.#cancelRedrive();
    super.close();
  }

  #drive = (): void => {
    const handler = this.#handler;
    if (handler === null) return;
    handler();
    if (
      this.#redrive === null &&
      !this.closed &&
      this.#handler === handler &&
      this.native().tunPending(this.fd) > 0
    ) {
      this.#redrive = setImmediate(this.#redriven);
    }
  };

  #redriven = (): void => {
    this.#redrive = null;
    if (!this.closed) this.#drive();
  };

  #cancelRedrive(): void {
    if (this.#redrive !== null) {
      clearImmediate(this.#redrive);
      this.#redrive = null;
    }
  }

  /**
   * Writes packets [first, first + count); returns how many were consumed. A packet the
   * kernel rejects gets status[i] = -errno and the rest still go; a return below `count`
   * means the queue is full: resume from first + returned after {@link onceWritable}.
   * With {@link offload} each packet goes with a zeroed virtio-net header (the packets carry
   * complete checksums) and, unless opened with `gro: false`, runs of TCP segments of one
   * flow go as one super-packet; every packet of such a run gets the run's status.
   */
  writeBatch(slots: WriteSlots, count: number, first = 0): number {
    return this.native().tunWrite(
      this.fd,
      slots.arena,
      slots.offsets,
      slots.lengths,
      slots.status ?? null,
      first,
      count,
    );
  }

  setMtu(mtu: number): void {
    this.native();
    setLinkMtu(this.name, mtu);
  }

  get mtu(): number {
    this.native();
    return getLinkMtu(this.name);
  }

  /** Brings the interface up (IFF_UP), as `ip link set NAME up` does. */
  up(): void {
    this.native();
    setLinkUp(this.name, true);
  }

  down(): void {
    this.native();
    setLinkUp(this.name, false);
  }

  get ifindex(): number {
    this.native();
    return linkIndex(this.name);
  }
}

/** SIOCSIFMTU on any interface (CAP_NET_ADMIN). */
export function setLinkMtu(name: string, mtu: number): void {
  callNative((addon) => addon.linkSetMtu(name, mtu));
}

export function getLinkMtu(name: string): number {
  return callNative((addon) => addon.linkGetMtu(name));
}

/** Sets or clears IFF_UP (CAP_NET_ADMIN). */
export function setLinkUp(name: string, up = true): void {
  callNative((addon) => addon.linkSetUp(name, up));
}

/** The interface index of `name` (if_nametoindex). */
export function linkIndex(name: string): number {
  return callNative((addon) => addon.linkIndex(name));
}
