/**
 * The batched data path: typed access to the native addon (native/*.c) that owns the TUN
 * device, the UDP socket and the per-packet ChaCha20-Poly1305.
 *
 * Everything here works on *batches*: one arena Buffer holding many packets, described by
 * parallel typed arrays (offset, length, endpoint, key slot, counter, status per packet). One
 * call moves or transforms a whole batch, so the cost of crossing from JS into C is paid
 * once per batch rather than once per packet, and nothing is allocated per packet.
 *
 * The addon is loaded lazily, on first use, so that code which only imports types or the
 * endpoint helpers still works on a machine where it has not been built.
 *
 * Endpoint records ({@link ENDPOINT_SIZE} bytes each, in a Uint8Array table):
 *
 *   bytes 0..15   IPv6 address; an IPv4 address is stored IPv4-mapped (::ffff:a.b.c.d)
 *   bytes 16..17  UDP port, network byte order
 *   bytes 18..19  zero
 *   bytes 20..23  little-endian u32: IPv6 scope id for a peer, interface index for a local
 *                 address (IP_PKTINFO/IPV6_PKTINFO)
 *
 * Bytes 0..17 are the same for the same peer whatever the socket family, so they can serve
 * directly as a map key or as the "source IP ‖ source port" input of a cookie MAC.
 */

import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { constants as osConstants } from "node:os";
import type { TransportCipher } from "./crypto.js";
import { formatAddress, parseCidr } from "./ipaddr.js";

/** Most packets one read/receive/send call handles (the addon's scratch space is this big). */
export const MAX_BATCH = 1024;
/** Size of one endpoint record. */
export const ENDPOINT_SIZE = 24;
/** ChaCha20-Poly1305 key and tag sizes. */
export const AEAD_KEY_SIZE = 32;
export const AEAD_TAG_SIZE = 16;
/** `status[i]` of a packet that failed authentication in {@link openBatch} (-EBADMSG). */
export const STATUS_AUTH_FAILED = -(osConstants.errno.EBADMSG ?? 74);

/** The addon's raw interface; the exported classes below are the supported way to use it. */
interface NativeAddon {
  readonly MAX_BATCH: number;
  readonly ENDPOINT_SIZE: number;
  readonly READABLE: number;
  readonly WRITABLE: number;
  tunOpen(
    name: string,
    multiQueue: boolean,
    offload?: boolean,
    gro?: boolean,
  ): { fd: number; name: string; offload: boolean; uso: boolean };
  tunPending(fd: number): number;
  tunOffloadStats(fd: number): TunOffloadStats | null;
  tunRead(
    fd: number,
    arena: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    first: number,
    count: number,
    room: number,
  ): number;
  tunWrite(
    fd: number,
    arena: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    status: Int32Array | null,
    first: number,
    count: number,
  ): number;
  linkSetMtu(name: string, mtu: number): void;
  linkGetMtu(name: string): number;
  linkSetUp(name: string, up: boolean): void;
  linkIndex(name: string): number;
  udpBind(
    host: string,
    port: number,
    receiveBufferSize: number,
    sendBufferSize: number,
    noGso: boolean,
  ): {
    fd: number;
    port: number;
    family: 4 | 6;
    dualStack: boolean;
    gso: boolean;
    receiveBufferSize: number;
    sendBufferSize: number;
  };
  udpRecv(
    fd: number,
    arena: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    endpoints: Uint8Array,
    locals: Uint8Array | null,
    first: number,
    count: number,
    room: number,
  ): number;
  udpSend(
    fd: number,
    arena: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    endpoints: Uint8Array,
    locals: Uint8Array | null,
    status: Int32Array | null,
    first: number,
    count: number,
  ): number;
  udpSetMark(fd: number, mark: number): void;
  aeadSealBatch(
    arena: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    keySlots: Uint32Array,
    counters: BigUint64Array | Uint32Array,
    keys: Uint8Array,
    status: Int32Array | null,
    first: number,
    count: number,
  ): void;
  aeadOpenBatch(
    arena: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    keySlots: Uint32Array,
    counters: BigUint64Array | Uint32Array,
    keys: Uint8Array,
    status: Int32Array | null,
    first: number,
    count: number,
  ): number;
  aeadSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array | null, data: Uint8Array): Buffer;
  aeadOpen(
    key: Uint8Array,
    nonce: Uint8Array,
    aad: Uint8Array | null,
    sealed: Uint8Array,
  ): Buffer | null;
  aeadCalibrate(packetSize: number, milliseconds: number): OpenSslReferenceRates;
  watch(fd: number, events: number, callback: (events: number, status: number) => void): void;
  watchRef(fd: number, ref: boolean): void;
  close(fd: number): void;
}

/** An Error carrying a stable `code`, like Node's own system errors. */
export interface CodedError extends Error {
  code: string;
}

function codedError(message: string, code: string, cause?: unknown): CodedError {
  const error = new Error(message, cause === undefined ? undefined : { cause }) as CodedError;
  error.code = code;
  return error;
}

let addon: NativeAddon | undefined;
let loadFailure: CodedError | undefined;

// src/native.ts runs from src/ under vitest and from dist/src/ once compiled, so the addon
// is one or two levels up; EDGETUN_ADDON overrides both for unusual layouts.
function addonCandidates(): string[] {
  const override = process.env["EDGETUN_ADDON"];
  if (override !== undefined && override !== "") {
    return [override];
  }
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates: string[] = [];
  for (const up of ["..", join("..", "..")]) {
    for (const build of ["Release", "Debug"]) {
      candidates.push(join(here, up, "build", build, "edgetun.node"));
    }
  }
  return candidates;
}

function loadAddon(): NativeAddon {
  if (addon !== undefined) {
    return addon;
  }
  if (loadFailure !== undefined) {
    throw loadFailure;
  }
  const candidates = addonCandidates();
  const path = candidates.find((candidate) => existsSync(candidate));
  if (path === undefined) {
    loadFailure = codedError(
      `addon not built: run npm ci (or npm rebuild) to compile build/Release/edgetun.node; looked in ${candidates.join(", ")}`,
      "ERR_EDGETUN_ADDON_MISSING",
    );
    throw loadFailure;
  }
  try {
    const loaded = createRequire(import.meta.url)(path) as NativeAddon;
    if (loaded.ENDPOINT_SIZE !== ENDPOINT_SIZE || loaded.MAX_BATCH !== MAX_BATCH) {
      throw new Error("addon constants do not match src/native.ts (stale build?)");
    }
    addon = loaded;
    return addon;
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    const code =
      error instanceof Error && "code" in error && error.code === "ERR_EDGETUN_UNSUPPORTED_PLATFORM"
        ? "ERR_EDGETUN_UNSUPPORTED_PLATFORM"
        : "ERR_EDGETUN_ADDON_LOAD";
    loadFailure = codedError(
      `cannot load native addon ${path}: ${detail} (run npm rebuild)`,
      code,
      error,
    );
    throw loadFailure;
  }
}

/** True when the addon is built and loads; never throws. */
export function nativeAvailable(): boolean {
  try {
    loadAddon();
    return true;
  } catch {
    return false;
  }
}

/** Why the addon cannot be used, or undefined when it can. */
export function nativeLoadError(): CodedError | undefined {
  return nativeAvailable() ? undefined : loadFailure;
}

// ---------------------------------------------------------------------------------------
// Endpoint records

/** A UDP peer or local address. `scopeId` is the IPv6 zone (or the local interface index). */
export interface Endpoint {
  address: string;
  port: number;
  scopeId?: number;
}

const V4_MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

function checkRecordIndex(table: Uint8Array, index: number): number {
  const at = index * ENDPOINT_SIZE;
  if (!Number.isInteger(index) || index < 0 || at + ENDPOINT_SIZE > table.length) {
    throw new RangeError(
      `endpoint index ${index} is outside a table of ${Math.floor(table.length / ENDPOINT_SIZE)} records`,
    );
  }
  return at;
}

/**
 * Writes `endpoint` as record `index` of `table`. "fe80::1%eth0" or a numeric zone sets the
 * scope id (a zone name needs the addon to look up the interface index).
 */
export function writeEndpoint(table: Uint8Array, index: number, endpoint: Endpoint): void {
  const at = checkRecordIndex(table, index);
  const { port } = endpoint;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`port must be an integer in [0, 65535], got ${port}`);
  }
  let text = endpoint.address;
  let scopeId = endpoint.scopeId ?? 0;
  const percent = text.indexOf("%");
  if (percent !== -1) {
    const zone = text.slice(percent + 1);
    text = text.slice(0, percent);
    scopeId = /^[0-9]+$/.test(zone) ? Number(zone) : linkIndex(zone);
  }
  if (text.includes("/")) {
    throw new TypeError(`not an IP address: ${JSON.stringify(endpoint.address)}`);
  }
  let bytes: Uint8Array;
  try {
    bytes = parseCidr(text).address;
  } catch {
    throw new TypeError(`not an IP address: ${JSON.stringify(endpoint.address)}`);
  }
  table.fill(0, at, at + ENDPOINT_SIZE);
  if (bytes.length === 4) {
    table.set(V4_MAPPED_PREFIX, at);
    table.set(bytes, at + 12);
    scopeId = 0;
  } else {
    table.set(bytes, at);
  }
  table[at + 16] = port >>> 8;
  table[at + 17] = port & 0xff;
  new DataView(table.buffer, table.byteOffset + at + 20, 4).setUint32(0, scopeId >>> 0, true);
}

/** Reads record `index`; an IPv4-mapped address comes back as plain "a.b.c.d". */
export function readEndpoint(table: Uint8Array, index: number): Endpoint {
  const at = checkRecordIndex(table, index);
  const isV4 = V4_MAPPED_PREFIX.every((byte, i) => table[at + i] === byte);
  const address = formatAddress(
    isV4 ? table.subarray(at + 12, at + 16) : table.subarray(at, at + 16),
  );
  const port = (table[at + 16]! << 8) | table[at + 17]!;
  const scopeId = new DataView(table.buffer, table.byteOffset + at + 20, 4).getUint32(0, true);
  return scopeId === 0 ? { address, port } : { address, port, scopeId };
}

// ---------------------------------------------------------------------------------------
// Batch descriptors

/** Where the packets of a batch are: packet i is arena[offsets[i] .. offsets[i] + lengths[i]). */
export interface PacketSlots {
  readonly arena: Uint8Array;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
}

/** Slots to read into: at most `room` bytes are written at each offset. */
export interface ReceiveSlots extends PacketSlots {
  readonly room: number;
}

/** UDP receive: `endpoints` gets the sender, `locals` (optional) the local destination. */
export interface UdpReceiveSlots extends ReceiveSlots {
  readonly endpoints: Uint8Array;
  readonly locals?: Uint8Array | null;
}

/**
 * UDP send: `endpoints` gives the destination; a non-zero `locals` record pins the source
 * address; `status` (optional) gets 0 or -errno per packet.
 */
export interface UdpSendSlots extends PacketSlots {
  readonly endpoints: Uint8Array;
  readonly locals?: Uint8Array | null;
  readonly status?: Int32Array | null;
}

/** TUN write: `status` (optional) gets 0 or -errno per packet. */
export interface WriteSlots extends PacketSlots {
  readonly status?: Int32Array | null;
}

/**
 * AEAD: packet i uses key `keySlots[i]` of the key table and the WireGuard nonce of counter
 * i (BigUint64Array, or Uint32Array of (low, high) pairs).
 */
export interface AeadSlots extends PacketSlots {
  readonly keySlots: Uint32Array;
  readonly counters: BigUint64Array | Uint32Array;
  readonly status?: Int32Array | null;
}

export interface PacketBatchOptions {
  /** Bytes reserved per packet; default 2048 (an MTU 1500 packet plus headers and tag). */
  slotSize?: number;
  /** Bytes kept free before each packet, e.g. 16 for the WireGuard data header. */
  headroom?: number;
  /** Bytes kept free after the room a read may fill, e.g. padding plus the 16-byte tag. */
  tailroom?: number;
}

/**
 * A ready-made batch: one arena cut into equal slots, plus every per-packet array the data
 * path uses. It satisfies all the slot interfaces above, so the same batch can be read from
 * the TUN, sealed in place and sent, or received, opened and written to the TUN.
 *
 * Packet i starts at `offsets[i]` = i × slotSize + headroom. A code path that needs another
 * view of the same bytes (say, header included) makes its own offsets/lengths arrays over
 * the same `arena`.
 */
export class PacketBatch
  implements ReceiveSlots, UdpReceiveSlots, UdpSendSlots, WriteSlots, AeadSlots
{
  readonly capacity: number;
  readonly slotSize: number;
  readonly headroom: number;
  readonly tailroom: number;
  readonly arena: Buffer;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  readonly endpoints: Uint8Array;
  readonly locals: Uint8Array;
  readonly keySlots: Uint32Array;
  readonly counters: BigUint64Array;
  readonly status: Int32Array;

  constructor(capacity: number, options: PacketBatchOptions = {}) {
    const { slotSize = 2048, headroom = 0, tailroom = 0 } = options;
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
    }
    if (!Number.isInteger(slotSize) || slotSize < 1 || slotSize > 65536 + 64) {
      throw new RangeError(`slotSize must be an integer in [1, 65600], got ${slotSize}`);
    }
    if (
      !Number.isInteger(headroom) ||
      !Number.isInteger(tailroom) ||
      headroom < 0 ||
      tailroom < 0 ||
      headroom + tailroom >= slotSize
    ) {
      throw new RangeError(
        `headroom (${headroom}) + tailroom (${tailroom}) must leave room in a ${slotSize}-byte slot`,
      );
    }
    this.capacity = capacity;
    this.slotSize = slotSize;
    this.headroom = headroom;
    this.tailroom = tailroom;
    // allocUnsafeSlow: a private, unpooled ArrayBuffer, since the addon writes to it directly.
    this.arena = Buffer.allocUnsafeSlow(capacity * slotSize).fill(0);
    this.offsets = new Uint32Array(capacity);
    this.lengths = new Uint32Array(capacity);
    this.endpoints = new Uint8Array(capacity * ENDPOINT_SIZE);
    this.locals = new Uint8Array(capacity * ENDPOINT_SIZE);
    this.keySlots = new Uint32Array(capacity);
    this.counters = new BigUint64Array(capacity);
    this.status = new Int32Array(capacity);
    this.resetOffsets();
  }

  /** Bytes a read may place at each offset: slotSize − headroom − tailroom. */
  get room(): number {
    return this.slotSize - this.headroom - this.tailroom;
  }

  /** Restores offsets[i] = i × slotSize + headroom after a caller moved them. */
  resetOffsets(): void {
    for (let i = 0; i < this.capacity; i++) {
      this.offsets[i] = i * this.slotSize + this.headroom;
    }
  }

  /** A view (not a copy) of packet i as it stands. */
  packet(index: number): Buffer {
    const offset = this.offsets[index];
    const length = this.lengths[index];
    if (offset === undefined || length === undefined) {
      throw new RangeError(`packet index ${index} is outside a batch of ${this.capacity}`);
    }
    return this.arena.subarray(offset, offset + length);
  }

  /** Copies `data` into slot i (at its current offset) and sets its length. */
  setPacket(index: number, data: Uint8Array): void {
    const offset = this.offsets[index];
    if (offset === undefined) {
      throw new RangeError(`packet index ${index} is outside a batch of ${this.capacity}`);
    }
    const slotEnd = (Math.floor(offset / this.slotSize) + 1) * this.slotSize;
    if (offset + data.length > slotEnd) {
      throw new RangeError(
        `a ${data.length}-byte packet does not fit slot ${index} (${slotEnd - offset} bytes left)`,
      );
    }
    this.arena.set(data, offset);
    this.lengths[index] = data.length;
  }
}

// ---------------------------------------------------------------------------------------
// Descriptors with readiness callbacks

function defaultCount(slots: PacketSlots, first: number): number {
  return Math.max(0, Math.min(MAX_BATCH, slots.offsets.length - first));
}

/**
 * A descriptor owned by the addon with libuv readiness: level-triggered, so a handler that
 * leaves packets queued is simply called again on the next loop turn.
 */
export abstract class PolledDescriptor {
  readonly fd: number;
  #closed = false;
  #readable: (() => void) | null = null;
  #writable: (() => void) | null = null;
  #mask = 0;

  protected constructor(fd: number) {
    this.fd = fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  protected native(): NativeAddon {
    if (this.#closed) {
      throw codedError(`descriptor ${this.fd} is closed`, "EBADF");
    }
    return loadAddon();
  }

  /**
   * Calls `handler` whenever the descriptor is readable (null stops). The handler should
   * drain with readBatch/recvBatch until it returns fewer packets than asked. A poll error
   * is reported as readability, so the next read throws the actual error.
   */
  onReadable(handler: (() => void) | null): void {
    this.#readable = handler;
    this.#rearm();
  }

  /**
   * Calls `handler` once, the next time the descriptor is writable: for resuming a batch
   * that a send or write left unfinished (EAGAIN). Writability is not watched otherwise,
   * since an idle socket is always writable and would wake the loop on every turn.
   */
  onceWritable(handler: (() => void) | null): void {
    this.#writable = handler;
    this.#rearm();
  }

  /** Whether a pending readiness watch keeps the process alive (default: it does). */
  ref(): void {
    this.native().watchRef(this.fd, true);
  }

  unref(): void {
    this.native().watchRef(this.fd, false);
  }

  /** Stops readiness callbacks and closes the descriptor. Calling it again does nothing. */
  close(): void {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    this.#readable = null;
    this.#writable = null;
    loadAddon().close(this.fd);
  }

  #rearm(): void {
    const lib = this.native();
    const mask = (this.#readable ? lib.READABLE : 0) | (this.#writable ? lib.WRITABLE : 0);
    if (mask === this.#mask) {
      return;
    }
    lib.watch(this.fd, mask, this.#dispatch);
    this.#mask = mask;
  }

  #dispatch = (events: number, status: number): void => {
    if (this.#closed) {
      return;
    }
    const lib = loadAddon();
    if ((events & lib.WRITABLE) !== 0 || status < 0) {
      const writable = this.#writable;
      if (writable) {
        this.#writable = null;
        this.#rearm();
        writable();
      }
    }
    if (!this.#closed && ((events & lib.READABLE) !== 0 || status < 0)) {
      this.#readable?.();
    }
  };
}

// ---------------------------------------------------------------------------------------
// TUN

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
    const opened = loadAddon().tunOpen(
      options.name ?? "",
      multiQueue,
      options.offload ?? false,
      options.gro ?? true,
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
  loadAddon().linkSetMtu(name, mtu);
}

export function getLinkMtu(name: string): number {
  return loadAddon().linkGetMtu(name);
}

/** Sets or clears IFF_UP (CAP_NET_ADMIN). */
export function setLinkUp(name: string, up = true): void {
  loadAddon().linkSetUp(name, up);
}

/** The interface index of `name` (if_nametoindex). */
export function linkIndex(name: string): number {
  return loadAddon().linkIndex(name);
}

// ---------------------------------------------------------------------------------------
// UDP

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
    const bound = loadAddon().udpBind(
      options.host ?? "::",
      options.port ?? 0,
      options.receiveBufferSize ?? DEFAULT_SOCKET_BUFFER,
      options.sendBufferSize ?? DEFAULT_SOCKET_BUFFER,
      options.gso === false,
    );
    return new UdpBatchSocket(bound);
  }

  /**
   * Sets SO_MARK (WireGuard's fwmark) on outgoing packets, so policy routing can keep the
   * tunnel's own UDP traffic out of the tunnel; 0 clears it. Needs CAP_NET_ADMIN.
   */
  setFwmark(mark: number): void {
    this.native().udpSetMark(this.fd, mark);
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

// ---------------------------------------------------------------------------------------
// AEAD

/**
 * Keys for {@link sealBatch}/{@link openBatch}: `slots` × 32 bytes in one Buffer, addressed
 * by index from the per-packet `keySlots` array (a peer's keypair gets a slot).
 */
export class AeadKeyTable {
  readonly keys: Buffer;
  readonly slots: number;

  constructor(slots: number) {
    if (!Number.isInteger(slots) || slots < 1) {
      throw new RangeError(`slots must be a positive integer, got ${slots}`);
    }
    this.slots = slots;
    this.keys = Buffer.alloc(slots * AEAD_KEY_SIZE);
  }

  set(slot: number, key: Uint8Array): void {
    if (key.length !== AEAD_KEY_SIZE) {
      throw new RangeError(`a ChaCha20-Poly1305 key is ${AEAD_KEY_SIZE} bytes, got ${key.length}`);
    }
    this.keys.set(key, this.#offset(slot));
  }

  /** Overwrites the slot with zeros, so an expired key does not linger in memory. */
  clear(slot: number): void {
    const at = this.#offset(slot);
    this.keys.fill(0, at, at + AEAD_KEY_SIZE);
  }

  #offset(slot: number): number {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slots) {
      throw new RangeError(`key slot ${slot} is outside a table of ${this.slots}`);
    }
    return slot * AEAD_KEY_SIZE;
  }
}

function keyBytes(keys: AeadKeyTable | Uint8Array): Uint8Array {
  return keys instanceof AeadKeyTable ? keys.keys : keys;
}

/**
 * Encrypts packets [first, first + count) in place as WireGuard transport payloads: nonce =
 * 4 zero bytes ‖ counter (u64 little-endian), no AAD. The 16-byte tag is written right after
 * each plaintext (the caller leaves that room: a RangeError otherwise) and lengths[i] grows
 * by 16. All arguments are checked before any packet is touched.
 */
export function sealBatch(
  slots: AeadSlots,
  keys: AeadKeyTable | Uint8Array,
  count: number,
  first = 0,
): void {
  loadAddon().aeadSealBatch(
    slots.arena,
    slots.offsets,
    slots.lengths,
    slots.keySlots,
    slots.counters,
    keyBytes(keys),
    slots.status ?? null,
    first,
    count,
  );
}

/**
 * Decrypts packets [first, first + count) (ciphertext ‖ tag) in place; returns how many
 * failed authentication. An authentic packet gets status[i] = 0 and lengths[i] shrinks by
 * 16; a forged or corrupted one gets status[i] = {@link STATUS_AUTH_FAILED}, keeps its
 * length and is zeroed. Other packets of the batch are unaffected.
 */
export function openBatch(
  slots: AeadSlots,
  keys: AeadKeyTable | Uint8Array,
  count: number,
  first = 0,
): number {
  return loadAddon().aeadOpenBatch(
    slots.arena,
    slots.offsets,
    slots.lengths,
    slots.keySlots,
    slots.counters,
    keyBytes(keys),
    slots.status ?? null,
    first,
    count,
  );
}

/** Packets per second of Node's OpenSSL measured in C, see {@link measureOpenSslReference}. */
export interface OpenSslReferenceRates {
  /** EVP_EncryptUpdate over packet-sized chunks, no per-message work (`openssl speed -evp`). */
  streaming: number;
  /** Nonce, encrypt, final and tag for each packet, as the batch does, but with no JS at all. */
  perPacket: number;
}

/**
 * For benchmarks: what OpenSSL itself achieves for `packetSize`-byte packets on this core,
 * so a batched figure can be read as a share of it. Blocks for `milliseconds`.
 */
export function measureOpenSslReference(
  packetSize: number,
  milliseconds = 1000,
): OpenSslReferenceRates {
  return loadAddon().aeadCalibrate(packetSize, milliseconds);
}

/** The 12-byte WireGuard nonce for `counter`. */
export function wireguardNonce(counter: bigint): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64LE(BigInt.asUintN(64, counter), 4);
  return nonce;
}

/**
 * General RFC 8439 ChaCha20-Poly1305 (any 12-byte nonce, optional AAD) on the same native
 * code as the batches; returns ciphertext ‖ tag. For single messages and for checking the
 * native path against published test vectors.
 */
export function chacha20Poly1305Seal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad?: Uint8Array,
): Buffer {
  return loadAddon().aeadSeal(key, nonce, aad ?? null, plaintext);
}

/** Inverse of {@link chacha20Poly1305Seal}; null when authentication fails. */
export function chacha20Poly1305Open(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad?: Uint8Array,
): Buffer | null {
  return loadAddon().aeadOpen(key, nonce, aad ?? null, sealed);
}

// One-packet descriptors reused by the adapter below, so a call allocates nothing but the
// plaintext it returns from open().
const single = {
  offsets: new Uint32Array(1),
  lengths: new Uint32Array(1),
  keySlots: new Uint32Array(1),
  counters: new Uint32Array(2),
  status: new Int32Array(1),
};

function setSingleCounter(counter: number): void {
  if (!Number.isSafeInteger(counter) || counter < 0) {
    throw new RangeError(`counter must be a non-negative safe integer, got ${counter}`);
  }
  single.counters[0] = counter % 0x1_0000_0000;
  single.counters[1] = Math.floor(counter / 0x1_0000_0000);
}

/**
 * The protocol core's {@link TransportCipher} contract on the native code, one packet per
 * call: a drop-in for code that is not batched yet (the batched calls are faster still).
 */
export const nativeTransportCipher: TransportCipher = {
  seal(key, counter, plaintext, out) {
    if (out.length < plaintext.length + AEAD_TAG_SIZE) {
      throw new RangeError(
        `out needs ${plaintext.length + AEAD_TAG_SIZE} bytes for ciphertext and tag, has ${out.length}`,
      );
    }
    setSingleCounter(counter);
    out.set(plaintext, 0);
    single.offsets[0] = 0;
    single.lengths[0] = plaintext.length;
    sealBatch({ ...single, arena: out }, key, 1);
  },
  open(key, counter, sealed) {
    if (sealed.length < AEAD_TAG_SIZE) {
      return null;
    }
    setSingleCounter(counter);
    const copy = Buffer.from(sealed);
    single.offsets[0] = 0;
    single.lengths[0] = copy.length;
    const failed = openBatch({ ...single, arena: copy }, key, 1);
    return failed === 0 ? copy.subarray(0, single.lengths[0]) : null;
  },
};
