// The native batched ChaCha20-Poly1305: RFC 8439 numbers, agreement with node:crypto under
// WireGuard nonces, per-packet failure isolation, and argument checking.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  AEAD_TAG_SIZE,
  AeadKeyTable,
  PacketBatch,
  STATUS_AUTH_FAILED,
  chacha20Poly1305Open,
  chacha20Poly1305Seal,
  measureOpenSslReference,
  nativeTransportCipher,
  openBatch,
  sealBatch,
  wireguardNonce,
} from "../../src/host/native/index.js";

function nodeSeal(key: Uint8Array, counter: bigint, plaintext: Uint8Array): Buffer {
  const cipher = createCipheriv("chacha20-poly1305", key, wireguardNonce(counter), {
    authTagLength: 16,
  });
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

function nodeOpen(key: Uint8Array, counter: bigint, sealed: Uint8Array): Buffer {
  const decipher = createDecipheriv("chacha20-poly1305", key, wireguardNonce(counter), {
    authTagLength: 16,
  });
  decipher.setAuthTag(sealed.subarray(sealed.length - 16));
  return Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - 16)), decipher.final()]);
}

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ""), "hex");

describe("RFC 8439 section 2.8.2 AEAD test vector", () => {
  const key = hex(`80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f
                   90 91 92 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f`);
  // 32-bit constant 07 00 00 00 followed by the 64-bit IV 40 41 42 43 44 45 46 47.
  const nonce = hex("07 00 00 00 40 41 42 43 44 45 46 47");
  const aad = hex("50 51 52 53 c0 c1 c2 c3 c4 c5 c6 c7");
  const plaintext = Buffer.from(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the " +
      "future, sunscreen would be it.",
  );
  const ciphertext = hex(`
    d3 1a 8d 34 64 8e 60 db 7b 86 af bc 53 ef 7e c2 a4 ad ed 51 29 6e 08 fe a9 e2 b5 a7 36 ee 62 d6
    3d be a4 5e 8c a9 67 12 82 fa fb 69 da 92 72 8b 1a 71 de 0a 9e 06 0b 29 05 d6 a5 b6 7e cd 3b 36
    92 dd bd 7f 2d 77 8b 8c 98 03 ae e3 28 09 1b 58 fa b3 24 e4 fa d6 75 94 55 85 80 8b 48 31 d7 bc
    3f f4 de f0 8e 4b 7a 9d e5 76 d2 65 86 ce c6 4b 61 16`);
  const tag = hex("1a e1 0b 59 4f 09 e2 6a 7e 90 2e cb d0 60 06 91");

  it("seals to the published ciphertext and tag", () => {
    // chacha20Poly1305Seal runs the same native seal routine as sealBatch, with the nonce
    // prefix and AAD the vector needs (a WireGuard nonce cannot express them).
    const sealed = chacha20Poly1305Seal(key, nonce, plaintext, aad);
    expect(sealed.subarray(0, plaintext.length).toString("hex")).toBe(ciphertext.toString("hex"));
    expect(sealed.subarray(plaintext.length).toString("hex")).toBe(tag.toString("hex"));
  });

  it("opens the published ciphertext and rejects a wrong AAD or tag", () => {
    const sealed = Buffer.concat([ciphertext, tag]);
    expect(chacha20Poly1305Open(key, nonce, sealed, aad)?.toString()).toBe(plaintext.toString());
    expect(chacha20Poly1305Open(key, nonce, sealed)).toBeNull();
    const badTag = Buffer.from(sealed);
    badTag[badTag.length - 1]! ^= 1;
    expect(chacha20Poly1305Open(key, nonce, badTag, aad)).toBeNull();
  });
});

describe("sealBatch / openBatch with WireGuard nonces", () => {
  it("matches node:crypto byte for byte, in place, honouring offsets, keys and counters", () => {
    const capacity = 40;
    const batch = new PacketBatch(capacity, { slotSize: 1536, headroom: 16, tailroom: 16 });
    const keys = new AeadKeyTable(3);
    const keyBytes = [randomBytes(32), randomBytes(32), randomBytes(32)];
    keyBytes.forEach((key, slot) => keys.set(slot, key));
    const counterSamples = [
      0n,
      1n,
      2n ** 32n - 1n,
      2n ** 32n,
      2n ** 63n + 5n,
      2n ** 64n - 2n ** 13n - 1n,
    ];
    // Pre-fill the arena so that bytes a packet must not touch are recognisable.
    batch.arena.fill(0xa5);
    const plaintexts: Buffer[] = [];
    for (let i = 0; i < capacity; i++) {
      const length = i === 0 ? 0 : (i * 97) % 1421; // includes a keepalive (empty payload)
      const plaintext = randomBytes(length);
      plaintexts.push(plaintext);
      batch.setPacket(i, plaintext);
      batch.keySlots[i] = i % 3;
      batch.counters[i] = counterSamples[i % counterSamples.length]! + BigInt(i);
    }
    const before = Buffer.from(batch.arena);

    sealBatch(batch, keys, capacity);

    for (let i = 0; i < capacity; i++) {
      const plaintext = plaintexts[i]!;
      expect(batch.lengths[i]).toBe(plaintext.length + AEAD_TAG_SIZE);
      expect(batch.status[i]).toBe(0);
      const expected = nodeSeal(keyBytes[i % 3]!, batch.counters[i]!, plaintext);
      expect(batch.packet(i).equals(expected)).toBe(true);
      // Header room before and the rest of the slot after the tag are untouched.
      const slotStart = i * batch.slotSize;
      const packetEnd = batch.offsets[i]! + batch.lengths[i]!;
      expect(batch.arena.subarray(slotStart, batch.offsets[i]!)).toEqual(
        before.subarray(slotStart, batch.offsets[i]!),
      );
      expect(batch.arena.subarray(packetEnd, slotStart + batch.slotSize)).toEqual(
        before.subarray(packetEnd, slotStart + batch.slotSize),
      );
      // And node:crypto opens what the addon sealed.
      expect(
        nodeOpen(keyBytes[i % 3]!, batch.counters[i]!, batch.packet(i)).equals(plaintext),
      ).toBe(true);
    }

    expect(openBatch(batch, keys, capacity)).toBe(0);
    for (let i = 0; i < capacity; i++) {
      expect(batch.status[i]).toBe(0);
      expect(batch.packet(i).equals(plaintexts[i]!)).toBe(true);
    }
  });

  it("opens what node:crypto sealed", () => {
    const key = randomBytes(32);
    const batch = new PacketBatch(8, { slotSize: 1600 });
    const plaintexts = Array.from({ length: 8 }, (_, i) => randomBytes(1420 - i * 3));
    plaintexts.forEach((plaintext, i) => {
      batch.counters[i] = BigInt(1000 + i);
      batch.setPacket(i, nodeSeal(key, BigInt(1000 + i), plaintext));
    });
    expect(openBatch(batch, key, 8)).toBe(0);
    plaintexts.forEach((plaintext, i) => expect(batch.packet(i).equals(plaintext)).toBe(true));
  });

  it("a tampered packet in the middle of a batch fails alone", () => {
    const key = randomBytes(32);
    const batch = new PacketBatch(9, { slotSize: 256 });
    const plaintexts = Array.from({ length: 9 }, (_, i) => randomBytes(100 + i));
    plaintexts.forEach((plaintext, i) => {
      batch.counters[i] = BigInt(i);
      batch.setPacket(i, plaintext);
    });
    sealBatch(batch, key, 9);
    const tamperedLength = batch.lengths[4]!;
    batch.arena[batch.offsets[4]! + 10]! ^= 0x01;

    expect(openBatch(batch, key, 9)).toBe(1);
    for (let i = 0; i < 9; i++) {
      if (i === 4) {
        expect(batch.status[i]).toBe(STATUS_AUTH_FAILED);
        expect(batch.lengths[i]).toBe(tamperedLength);
        // Unauthenticated plaintext is not left behind for a careless caller.
        const body = batch.packet(i).subarray(0, tamperedLength - AEAD_TAG_SIZE);
        expect(body.every((byte) => byte === 0)).toBe(true);
      } else {
        expect(batch.status[i]).toBe(0);
        expect(batch.packet(i).equals(plaintexts[i]!)).toBe(true);
      }
    }
  });

  it("a wrong counter or key slot fails authentication", () => {
    const keys = new AeadKeyTable(2);
    keys.set(0, randomBytes(32));
    keys.set(1, randomBytes(32));
    const batch = new PacketBatch(3, { slotSize: 128 });
    for (let i = 0; i < 3; i++) {
      batch.setPacket(i, Buffer.from(`packet ${i}`));
      batch.counters[i] = 7n;
    }
    sealBatch(batch, keys, 3);
    batch.counters[1] = 8n;
    batch.keySlots[2] = 1;
    expect(openBatch(batch, keys, 3)).toBe(2);
    expect(Array.from(batch.status)).toEqual([0, STATUS_AUTH_FAILED, STATUS_AUTH_FAILED]);
    expect(batch.packet(0).toString()).toBe("packet 0");
  });

  it("takes counters as (low, high) Uint32 pairs as well as BigUint64", () => {
    const key = randomBytes(32);
    const counter = 0x0123_4567_89ab_cdefn;
    const viaBigInt = new PacketBatch(1, { slotSize: 64 });
    viaBigInt.setPacket(0, Buffer.from("same bytes"));
    viaBigInt.counters[0] = counter;
    sealBatch(viaBigInt, key, 1);

    const arena = Buffer.alloc(64);
    arena.write("same bytes");
    const slots = {
      arena,
      offsets: new Uint32Array([0]),
      lengths: new Uint32Array([10]),
      keySlots: new Uint32Array([0]),
      counters: new Uint32Array([0x89ab_cdef, 0x0123_4567]),
    };
    sealBatch(slots, key, 1);
    expect(arena.subarray(0, slots.lengths[0]!).equals(viaBigInt.packet(0))).toBe(true);
  });

  it("processes only [first, first + count)", () => {
    const key = randomBytes(32);
    const batch = new PacketBatch(6, { slotSize: 64 });
    for (let i = 0; i < 6; i++) batch.setPacket(i, Buffer.from(`p${i}`));
    sealBatch(batch, key, 2, 3);
    expect(Array.from(batch.lengths)).toEqual([2, 2, 2, 18, 18, 2]);
    expect(batch.packet(0).toString()).toBe("p0");
    expect(batch.packet(5).toString()).toBe("p5");
  });

  it("the TransportCipher adapter agrees with node:crypto", () => {
    const key = randomBytes(32);
    const plaintext = randomBytes(333);
    const out = Buffer.alloc(plaintext.length + 16);
    nativeTransportCipher.seal(key, 2 ** 40 + 3, plaintext, out);
    expect(out.equals(nodeSeal(key, 2n ** 40n + 3n, plaintext))).toBe(true);
    expect(nativeTransportCipher.open(key, 2 ** 40 + 3, out)?.equals(plaintext)).toBe(true);
    expect(nativeTransportCipher.open(key, 2 ** 40 + 4, out)).toBeNull();
  });
});

describe("OpenSSL reference measurement", () => {
  // Which of the two is faster is a benchmark's question (bench/native.ts prints both): on a
  // busy machine either can win a 100-packet sample, so the test asserts only that both measure.
  it("reports positive rates for both ways of sealing", () => {
    const rates = measureOpenSslReference(1420, 100);
    expect(rates.streaming).toBeGreaterThan(0);
    expect(rates.perPacket).toBeGreaterThan(0);
    expect(Number.isFinite(rates.streaming) && Number.isFinite(rates.perPacket)).toBe(true);
    expect(() => measureOpenSslReference(70_000, 10)).toThrow(RangeError);
  });
});

describe("AEAD argument checking", () => {
  const key = Buffer.alloc(32, 1);

  function slots(overrides: Record<string, unknown> = {}) {
    return {
      arena: Buffer.alloc(64),
      offsets: new Uint32Array([0, 32]),
      lengths: new Uint32Array([10, 10]),
      keySlots: new Uint32Array([0, 0]),
      counters: new BigUint64Array(2),
      ...overrides,
    } as Parameters<typeof sealBatch>[0];
  }

  it("refuses a batch whose tag would not fit, before touching any packet", () => {
    const s = slots({ offsets: new Uint32Array([0, 50]) });
    const snapshot = Buffer.from(s.arena);
    expect(() => sealBatch(s, key, 2)).toThrow(RangeError);
    expect(() => sealBatch(s, key, 2)).toThrow(/outside the arena/);
    expect(Buffer.from(s.arena).equals(snapshot)).toBe(true);
    expect(Array.from(s.lengths)).toEqual([10, 10]);
  });

  it("refuses offsets or lengths past the arena", () => {
    expect(() => openBatch(slots({ offsets: new Uint32Array([0, 2 ** 32 - 1]) }), key, 2)).toThrow(
      RangeError,
    );
    expect(() => openBatch(slots({ lengths: new Uint32Array([10, 2 ** 32 - 1]) }), key, 2)).toThrow(
      RangeError,
    );
  });

  it("refuses a count larger than the arrays", () => {
    expect(() => sealBatch(slots(), key, 3)).toThrow(/offsets is too short/);
    expect(() => sealBatch(slots({ counters: new BigUint64Array(1) }), key, 2)).toThrow(RangeError);
    expect(() => sealBatch(slots({ counters: new Uint32Array(3) }), key, 2)).toThrow(RangeError);
    expect(() => sealBatch(slots({ keySlots: new Uint32Array(1) }), key, 2)).toThrow(RangeError);
    expect(() => sealBatch(slots(), key, 1, 2)).toThrow(RangeError);
  });

  it("refuses key slots beyond the key table and keys of the wrong size", () => {
    expect(() => sealBatch(slots({ keySlots: new Uint32Array([0, 1]) }), key, 2)).toThrow(
      /keySlots\[1\] = 1 but only 1 keys/,
    );
    expect(() => sealBatch(slots(), Buffer.alloc(31), 2)).toThrow(RangeError);
    expect(() => new AeadKeyTable(2).set(0, Buffer.alloc(16))).toThrow(RangeError);
    expect(() => new AeadKeyTable(2).set(2, Buffer.alloc(32))).toThrow(RangeError);
  });

  it("refuses to open a packet shorter than the tag", () => {
    expect(() => openBatch(slots({ lengths: new Uint32Array([16, 15]) }), key, 2)).toThrow(
      /shorter than the 16-byte tag/,
    );
  });

  it("throws TypeError for wrong argument types", () => {
    expect(() => sealBatch(slots({ arena: "not a buffer" }), key, 2)).toThrow(TypeError);
    expect(() => sealBatch(slots({ offsets: new Int32Array(2) }), key, 2)).toThrow(TypeError);
    expect(() => sealBatch(slots({ lengths: [10, 10] }), key, 2)).toThrow(TypeError);
    expect(() => sealBatch(slots({ counters: new Float64Array(2) }), key, 2)).toThrow(TypeError);
    expect(() => sealBatch(slots({ status: new Uint32Array(2) }), key, 2)).toThrow(TypeError);
    expect(() => sealBatch(slots(), "key" as unknown as Uint8Array, 2)).toThrow(TypeError);
  });

  it("throws RangeError for a negative, fractional or huge count", () => {
    expect(() => sealBatch(slots(), key, -1)).toThrow(RangeError);
    expect(() => sealBatch(slots(), key, 1.5)).toThrow(RangeError);
    expect(() => sealBatch(slots(), key, Number.NaN)).toThrow(RangeError);
    expect(() => sealBatch(slots(), key, 1, 2 ** 40)).toThrow(RangeError);
  });

  it("checks key and nonce sizes of the single-message entry", () => {
    expect(() => chacha20Poly1305Seal(Buffer.alloc(31), Buffer.alloc(12), Buffer.alloc(1))).toThrow(
      RangeError,
    );
    expect(() => chacha20Poly1305Seal(key, Buffer.alloc(8), Buffer.alloc(1))).toThrow(RangeError);
    expect(() => chacha20Poly1305Open(key, Buffer.alloc(12), Buffer.alloc(15))).toThrow(RangeError);
  });
});
