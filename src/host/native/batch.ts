// Batch descriptors: one arena of packets and the typed arrays that describe them.
import { ENDPOINT_SIZE, type RingTake } from "./addon.js";

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

/** Moves up to `count` datagrams from a native thread's ring into slots [0, n); returns n. */
export function takeFromRing(
  take: RingTake,
  ring: unknown,
  slots: UdpReceiveSlots,
  count: number,
): number {
  const { arena, offsets, lengths, endpoints } = slots;
  return take(ring, arena, offsets, lengths, endpoints, slots.locals ?? null, count, slots.room);
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
    // A private, unpooled ArrayBuffer, since the addon writes to it directly; zeroed by the
    // allocator (calloc), so its pages become resident only as slots are used: a batch of a
    // few packets touches a few of the 9 KB slots, not the whole arena.
    this.arena = Buffer.alloc(capacity * slotSize);
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
