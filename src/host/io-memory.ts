// In-memory TUN devices and UDP sockets behind the data path's interfaces (io.ts), as
// wireguard-go's tun/tuntest and conn/bindtest: daemons exchange real sealed datagrams through
// a MemoryNetwork, with no root, no kernel device and no traffic on any interface. Two users:
// the warm-up at start (warm-up.ts), and the tests of the data path without root. Endpoint
// records are the addon's own format (writeEndpoint/readEndpoint).
import type { Endpoint } from "../core/endpoint.js";
import type { DatagramSocket, TunnelDevice } from "./io.js";
import {
  readEndpoint,
  writeEndpoint,
  type ReceiveSlots,
  type UdpReceiveSlots,
  type UdpSendSlots,
  type WriteSlots,
} from "./native/index.js";

/** Runs a readiness handler later: by default on the next event-loop turn. */
export type Post = (task: () => void) => void;

const nextTurn: Post = (task) => setImmediate(task);

/** Calls a readiness handler through `post` while `waiting()` says there is work. */
class Readiness {
  private handler: (() => void) | null = null;
  private posted = false;

  constructor(
    private readonly post: Post,
    private readonly waiting: () => boolean,
  ) {}

  set(handler: (() => void) | null): void {
    this.handler = handler;
    this.kick();
  }

  kick(): void {
    if (this.posted || !this.handler || !this.waiting()) return;
    this.posted = true;
    this.post(() => {
      this.posted = false;
      this.handler?.();
      this.kick();
    });
  }
}

/** A copy of packet `i` of a batch, out of the arena the daemon reuses for its next batch. */
function slotCopy(
  slots: { arena: Uint8Array; offsets: Uint32Array; lengths: Uint32Array },
  i: number,
): Buffer {
  const offset = slots.offsets[i]!;
  return Buffer.from(slots.arena.subarray(offset, offset + slots.lengths[i]!));
}

/**
 * Moves up to a batch's worth of items from the front of `queue` into the slots, each cut to a
 * slot's room; `place` gives an item's bytes and records the rest of it for slot `i`.
 * Returns how many, and adds that count to `sizes` when it is not 0.
 */
function takeIntoSlots<T>(
  slots: ReceiveSlots,
  queue: T[],
  sizes: number[],
  place: (item: T, i: number) => Uint8Array,
): number {
  const count = Math.min(slots.offsets.length, queue.length);
  for (let i = 0; i < count; i++) {
    const bytes = place(queue.shift()!, i).subarray(0, slots.room);
    slots.arena.set(bytes, slots.offsets[i]!);
    slots.lengths[i] = bytes.length;
  }
  if (count > 0) sizes.push(count);
  return count;
}

/** Hands a copy of each of the first `count` packets of a batch to `pass`, each a success. */
function passEachSlot(
  slots: WriteSlots,
  count: number,
  pass: (packet: Buffer, i: number) => void,
): number {
  for (let i = 0; i < count; i++) {
    pass(slotCopy(slots, i), i);
    if (slots.status) slots.status[i] = 0;
  }
  return count;
}

export interface MemoryTunOptions {
  post?: Post;
  /** Takes each packet the daemon writes; without it they collect in `written`. */
  onWrite?: (packet: Buffer) => void;
}

/** A TUN device: `inject` is the kernel routing a packet into the tunnel. */
export class MemoryTun implements TunnelDevice {
  /** Packets the daemon wrote (decrypted, from the tunnel's peers), in order, without onWrite. */
  readonly written: Buffer[] = [];
  /** Read calls that returned packets, and how many each. */
  readonly readSizes: number[] = [];
  private readonly outbound: Buffer[] = [];
  private readonly readiness: Readiness;
  private readonly onWrite: (packet: Buffer) => void;
  closed = false;

  constructor(
    readonly name = "mem0",
    options: MemoryTunOptions = {},
  ) {
    this.readiness = new Readiness(options.post ?? nextTurn, () => this.outbound.length > 0);
    this.onWrite = options.onWrite ?? ((packet) => this.written.push(packet));
  }

  inject(...packets: Uint8Array[]): void {
    for (const packet of packets) this.outbound.push(Buffer.from(packet));
    this.readiness.kick();
  }

  readBatch(slots: ReceiveSlots): number {
    return takeIntoSlots(slots, this.outbound, this.readSizes, (packet) => packet);
  }

  writeBatch(slots: WriteSlots, count: number): number {
    return passEachSlot(slots, count, (packet) => this.onWrite(packet));
  }

  onReadable(handler: (() => void) | null): void {
    this.readiness.set(handler);
  }

  close(): void {
    this.closed = true;
    this.readiness.set(null);
  }
}

interface Datagram {
  readonly data: Buffer;
  readonly from: Endpoint;
}

function key(endpoint: Endpoint): string {
  return `${endpoint.address}|${endpoint.port}`;
}

/**
 * A lossless switch between MemorySockets by address and port. `tap` sees every datagram
 * carried (and may return false to drop it); `inject` delivers one from any address.
 */
export class MemoryNetwork {
  private readonly sockets = new Map<string, MemorySocket>();
  tap: (datagram: Buffer, from: Endpoint, to: Endpoint) => boolean = () => true;
  /** Datagrams sent to an address no socket is bound to. */
  undeliverable = 0;

  /** `post` runs the sockets' readiness handlers (default: the next event-loop turn). */
  constructor(private readonly post: Post = nextTurn) {}

  /** An opener for Daemon.startDataPath: binds the given port (0: the next free) on `address`. */
  opener(address: string, options: { receiveQueue?: number } = {}): (port: number) => MemorySocket {
    return (port: number) => {
      let chosen = port;
      if (chosen === 0) {
        for (chosen = 40000; this.sockets.has(key({ address, port: chosen })); chosen++);
      }
      const endpoint = { address, port: chosen };
      if (this.sockets.has(key(endpoint))) {
        throw Object.assign(new Error(`${address}:${chosen} is in use`), { code: "EADDRINUSE" });
      }
      const socket = new MemorySocket(this, endpoint, options.receiveQueue ?? 1024, this.post);
      this.sockets.set(key(endpoint), socket);
      return socket;
    };
  }

  inject(data: Uint8Array, from: Endpoint, to: Endpoint): void {
    this.carry(Buffer.from(data), from, to);
  }

  /** @internal */
  carry(data: Buffer, from: Endpoint, to: Endpoint): void {
    if (!this.tap(data, from, to)) return;
    const target = this.sockets.get(key(to));
    if (!target) {
      this.undeliverable++;
      return;
    }
    target.deliver({ data, from });
  }

  /** @internal */
  unbind(socket: MemorySocket): void {
    if (this.sockets.get(key(socket.endpoint)) === socket)
      this.sockets.delete(key(socket.endpoint));
  }
}

/** A UDP socket on a MemoryNetwork; its receive queue is bounded as a socket buffer is. */
export class MemorySocket implements DatagramSocket {
  /** Datagrams that found the receive queue full (what the kernel counts as RcvbufErrors). */
  overflows = 0;
  readonly receiveSizes: number[] = [];
  private readonly inbox: Datagram[] = [];
  private readonly readiness: Readiness;
  closed = false;

  constructor(
    private readonly network: MemoryNetwork,
    readonly endpoint: Endpoint,
    private readonly receiveQueue: number,
    post: Post,
  ) {
    this.readiness = new Readiness(post, () => this.inbox.length > 0);
  }

  get port(): number {
    return this.endpoint.port;
  }

  /** @internal */
  deliver(datagram: Datagram): void {
    if (this.closed) return;
    if (this.inbox.length >= this.receiveQueue) {
      this.overflows++;
      return;
    }
    this.inbox.push(datagram);
    this.readiness.kick();
  }

  recvBatch(slots: UdpReceiveSlots): number {
    return takeIntoSlots(slots, this.inbox, this.receiveSizes, ({ data, from }, i) => {
      writeEndpoint(slots.endpoints, i, from);
      return data;
    });
  }

  sendBatch(slots: UdpSendSlots, count: number): number {
    return passEachSlot(slots, count, (datagram, i) =>
      this.network.carry(datagram, this.endpoint, readEndpoint(slots.endpoints, i)),
    );
  }

  onReadable(handler: (() => void) | null): void {
    this.readiness.set(handler);
  }

  close(): void {
    this.closed = true;
    this.readiness.set(null);
    this.network.unbind(this);
  }
}
