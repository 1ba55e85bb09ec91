// TUN offload (IFF_VNET_HDR with TSO/USO): the checksum routine, the splitting of
// super-packets and the coalescing of TCP and UDP runs on crafted packets (needs only the addon), then
// real traffic (needs root): two offload TUNs in two private network namespaces, bridged by a
// JS pump (test/native-tun-offload-helper.mjs), carry TCP transfers whose every packet is
// checked independently here in JS, and whose bytes arrive intact. Namespaces are uniquely
// named and always deleted.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { endianness, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nativeLoadError, type TunOffloadStats } from "../../src/host/native/index.js";
import { tunUnavailableReason } from "../support/netns.js";
import { transpileNativeModule } from "../support/transpile-native.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const addonPath = join(repoRoot, "build", "Release", "edgetun.node");
const helperPath = join(repoRoot, "test", "support", "native-tun-offload-helper.mjs");

/** The addon's test entry points for the offload code (native/offload.c). */
interface OffloadAddon {
  VNET_HDR_LEN: number;
  offloadChecksum(bytes: Uint8Array, seed?: number): number;
  offloadSegment(input: Uint8Array, room: number): Buffer[] | null;
  offloadCoalesce(packets: Uint8Array[]): Buffer[];
}

const addonMissing = nativeLoadError()?.message;
const addon = addonMissing
  ? undefined
  : (createRequire(import.meta.url)(addonPath) as OffloadAddon);
function lib(): OffloadAddon {
  if (!addon) throw new Error(addonMissing);
  return addon;
}

// ---- an independent RFC 1071 implementation and packet builders ----

function sum16(bytes: Uint8Array, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (bytes.length & 1) sum += bytes[bytes.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

function checksum(bytes: Uint8Array, initial = 0): number {
  return ~sum16(bytes, initial) & 0xffff;
}

function pseudoSum(ip: Buffer, v6: boolean, proto: number, length: number): number {
  const addresses = v6 ? ip.subarray(8, 40) : ip.subarray(12, 20);
  return sum16(addresses) + proto + length;
}

/** True when the TCP/UDP checksum of the packet (headers at ip, transport at l4) is right. */
function transportValid(packet: Buffer, v6: boolean, proto: number, l4: number): boolean {
  const seg = packet.subarray(l4);
  return sum16(seg, pseudoSum(packet, v6, proto, seg.length)) === 0xffff;
}

const V4_SRC = [10, 201, 1, 1];
const V4_DST = [10, 201, 1, 2];
const V6_SRC = Buffer.from("fd000201000000000000000000000001", "hex");
const V6_DST = Buffer.from("fd000201000000000000000000000002", "hex");

interface IpOptions {
  v6?: boolean;
  id?: number;
  proto: number;
  transport: Buffer;
}

function ipPacket({ v6 = false, id = 0x1234, proto, transport }: IpOptions): Buffer {
  if (v6) {
    const h = Buffer.alloc(40);
    h.writeUInt32BE(0x60012345, 0); // version 6, traffic class 0, a flow label
    h.writeUInt16BE(transport.length, 4);
    h[6] = proto;
    h[7] = 64;
    V6_SRC.copy(h, 8);
    V6_DST.copy(h, 24);
    return Buffer.concat([h, transport]);
  }
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h[1] = 0x02; // ECT(0)
  h.writeUInt16BE(20 + transport.length, 2);
  h.writeUInt16BE(id, 4);
  h.writeUInt16BE(0x4000, 6); // DF
  h[8] = 64;
  h[9] = proto;
  h.set(V4_SRC, 12);
  h.set(V4_DST, 16);
  h.writeUInt16BE(checksum(h), 10);
  return Buffer.concat([h, transport]);
}

const TCP = 6;
const UDP = 17;
const F = { FIN: 0x01, SYN: 0x02, PSH: 0x08, ACK: 0x10, CWR: 0x80 };
// NOP NOP timestamps: the options of nearly every Linux segment.
const TIMESTAMPS = Buffer.from([1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78]);

function tcpSegment(seq: number, flags: number, payload: Buffer, options = TIMESTAMPS): Buffer {
  const h = Buffer.alloc(20 + options.length);
  h.writeUInt16BE(40000, 0);
  h.writeUInt16BE(5201, 2);
  h.writeUInt32BE(seq >>> 0, 4);
  h.writeUInt32BE(0x01020304, 8);
  h[12] = ((20 + options.length) / 4) << 4;
  h[13] = flags;
  h.writeUInt16BE(501, 14);
  h.writeUInt16BE(0xbeef, 16); // garbage: the addon must compute the checksum itself
  options.copy(h, 20);
  return Buffer.concat([h, payload]);
}

function udpDatagram(payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(40000, 0);
  h.writeUInt16BE(5353, 2);
  h.writeUInt16BE(8 + payload.length, 4);
  h.writeUInt16BE(0xbeef, 6);
  return Buffer.concat([h, payload]);
}

/** Completes the transport checksum of a built packet (as a sender's stack would). */
function finish(packet: Buffer, v6: boolean, proto: number): Buffer {
  const l4 = v6 ? 40 : 20;
  const field = l4 + (proto === TCP ? 16 : 6);
  packet.writeUInt16BE(0, field);
  const seg = packet.subarray(l4);
  packet.writeUInt16BE(checksum(seg, pseudoSum(packet, v6, proto, seg.length)), field);
  return packet;
}

interface Vnet {
  flags?: number;
  gsoType?: number;
  hdrLen?: number;
  gsoSize?: number;
  csumStart?: number;
  csumOffset?: number;
}

const le = endianness() === "LE";
function vnet({
  flags = 0,
  gsoType = 0,
  hdrLen = 0,
  gsoSize = 0,
  csumStart = 0,
  csumOffset = 0,
}: Vnet) {
  const h = Buffer.alloc(10);
  h[0] = flags;
  h[1] = gsoType;
  const put = (v: number, at: number) => (le ? h.writeUInt16LE(v, at) : h.writeUInt16BE(v, at));
  put(hdrLen, 2);
  put(gsoSize, 4);
  put(csumStart, 6);
  put(csumOffset, 8);
  return h;
}

function readVnet(h: Buffer): Required<Vnet> {
  const get = (at: number) => (le ? h.readUInt16LE(at) : h.readUInt16BE(at));
  return {
    flags: h[0]!,
    gsoType: h[1]!,
    hdrLen: get(2),
    gsoSize: get(4),
    csumStart: get(6),
    csumOffset: get(8),
  };
}

const NEEDS_CSUM = 1;
const GSO = { NONE: 0, TCPV4: 1, TCPV6: 4, UDP_L4: 5 };

function pattern(length: number, salt = 0): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 131 + salt * 7 + (i >> 8)) & 0xff;
  return b;
}

/** A TCP super-packet as the kernel hands it to a TSO-capable TUN reader. */
function tcpSuper(v6: boolean, payload: Buffer, mss: number, flags: number, seq = 0xfffff000) {
  const packet = ipPacket({ v6, proto: TCP, transport: tcpSegment(seq, flags, payload) });
  const l4 = v6 ? 40 : 20;
  const input = Buffer.concat([
    vnet({
      flags: NEEDS_CSUM,
      gsoType: v6 ? GSO.TCPV6 : GSO.TCPV4,
      hdrLen: l4 + 32,
      gsoSize: mss,
      csumStart: l4,
      csumOffset: 16,
    }),
    packet,
  ]);
  return { packet, input, l4, hdr: l4 + 32 };
}

/** Every check of one split TCP super-packet against its original. */
function expectSegmentsOf(
  original: Buffer,
  segments: Buffer[],
  v6: boolean,
  l4: number,
  hdr: number,
  perSegment: number,
): void {
  const payload = original.subarray(hdr);
  expect(segments.length).toBe(Math.max(1, Math.ceil(payload.length / perSegment)));
  const flags = original[l4 + 13]!;
  const seq0 = original.readUInt32BE(l4 + 4);
  const id0 = original.readUInt16BE(4);
  segments.forEach((seg, k) => {
    const last = k === segments.length - 1;
    const body = seg.subarray(hdr);
    expect(body.length).toBe(last ? payload.length - k * perSegment : perSegment);
    expect(body.equals(payload.subarray(k * perSegment, k * perSegment + body.length))).toBe(true);
    if (v6) {
      expect(seg.readUInt16BE(4)).toBe(seg.length - 40);
      expect(seg.subarray(0, 4).equals(original.subarray(0, 4))).toBe(true);
      expect(seg.subarray(6, 40).equals(original.subarray(6, 40))).toBe(true);
    } else {
      expect(seg.readUInt16BE(2)).toBe(seg.length);
      expect(seg.readUInt16BE(4)).toBe((id0 + k) & 0xffff);
      expect(sum16(seg.subarray(0, 20))).toBe(0xffff);
      expect(seg.subarray(6, 10).equals(original.subarray(6, 10))).toBe(true);
      expect(seg.subarray(12, 20).equals(original.subarray(12, 20))).toBe(true);
    }
    expect(seg.readUInt32BE(l4 + 4)).toBe((seq0 + k * perSegment) >>> 0);
    let want = flags;
    if (k > 0) want &= ~F.CWR;
    if (!last) want &= ~(F.FIN | F.PSH);
    expect(seg[l4 + 13]).toBe(want);
    // Ports, ack, data offset, window and options unchanged.
    expect(seg.subarray(l4, l4 + 4).equals(original.subarray(l4, l4 + 4))).toBe(true);
    expect(seg.subarray(l4 + 8, l4 + 13).equals(original.subarray(l4 + 8, l4 + 13))).toBe(true);
    expect(seg.subarray(l4 + 14, l4 + 16).equals(original.subarray(l4 + 14, l4 + 16))).toBe(true);
    expect(seg.subarray(l4 + 18, hdr).equals(original.subarray(l4 + 18, hdr))).toBe(true);
    expect(transportValid(seg, v6, TCP, l4)).toBe(true);
  });
}

describe.skipIf(addon === undefined)(
  `internet checksum (RFC 1071)${addonMissing ? ` (skipped: ${addonMissing})` : ""}`,
  () => {
    it("gives the RFC 1071 example's sum", () => {
      // RFC 1071 section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2, so the checksum is 220d.
      expect(lib().offloadChecksum(Buffer.from("0001f203f4f5f6f7", "hex"))).toBe(0x220d);
      expect(lib().offloadChecksum(Buffer.alloc(0))).toBe(0xffff);
      expect(lib().offloadChecksum(Buffer.from([0xff, 0xff]))).toBe(0);
      expect(lib().offloadChecksum(Buffer.from([0x12]))).toBe(~0x1200 & 0xffff);
    });

    it("agrees with a plain JS sum at every length, alignment and seed", () => {
      const base = pattern(4096 + 3, 5);
      for (let length = 0; length < 300; length++) {
        for (const start of [0, 1, 2, 3]) {
          const bytes = base.subarray(start, start + length);
          const seed = (length * 2654435761) & 0xffff;
          expect(lib().offloadChecksum(bytes, seed)).toBe(checksum(bytes, seed));
        }
      }
      fc.assert(
        fc.property(
          fc.uint8Array({ minLength: 0, maxLength: 70000 }),
          fc.integer({ min: 0, max: 0xffff }),
          (bytes, seed) => lib().offloadChecksum(bytes, seed) === checksum(bytes, seed),
        ),
        { numRuns: 200 },
      );
    });

    it("handles carries from long runs of 0xff", () => {
      for (const length of [65535, 65536, 65537, 131072]) {
        const bytes = Buffer.alloc(length, 0xff);
        expect(lib().offloadChecksum(bytes, 0xffff)).toBe(checksum(bytes, 0xffff));
      }
    });
  },
);

describe.skipIf(addon === undefined)("splitting super-packets read from the TUN", () => {
  it("cuts an IPv4 TCP super-packet at gso_size: lengths, IDs, sequence, flags, checksums", () => {
    const payload = pattern(20000, 1);
    const flags = F.ACK | F.PSH | F.FIN | F.CWR;
    const { packet, input, l4, hdr } = tcpSuper(false, payload, 1448, flags);
    const segments = lib().offloadSegment(input, 1500);
    expect(segments).not.toBeNull();
    expectSegmentsOf(packet, segments!, false, l4, hdr, 1448);
    // The sequence number wraps around 2^32 inside this super-packet.
    expect(segments!.at(-1)!.readUInt32BE(l4 + 4)).toBeLessThan(0xfffff000);
  });

  it("cuts an IPv6 TCP super-packet", () => {
    const payload = pattern(9001, 2);
    const { packet, input, l4, hdr } = tcpSuper(true, payload, 1000, F.ACK | F.PSH);
    const segments = lib().offloadSegment(input, 2048)!;
    expectSegmentsOf(packet, segments, true, l4, hdr, 1000);
  });

  it("cuts finer than gso_size when the caller's room is smaller (a smaller MSS)", () => {
    const { packet, input, l4, hdr } = tcpSuper(false, pattern(5000, 3), 1448, F.ACK);
    const segments = lib().offloadSegment(input, 600)!;
    expectSegmentsOf(packet, segments, false, l4, hdr, 600 - hdr);
    for (const seg of segments) expect(seg.length).toBeLessThanOrEqual(600);
  });

  it("splits any payload size at any segment size (property)", () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.integer({ min: 0, max: 65535 - 40 - 32 - 40 }),
        fc.integer({ min: 256, max: 9000 }),
        fc.integer({ min: 0, max: 0xffffffff }),
        (v6, length, mss, seq) => {
          const { packet, input, l4, hdr } = tcpSuper(v6, pattern(length, length), mss, F.ACK, seq);
          const room = 65536;
          const segments = lib().offloadSegment(input, room)!;
          expectSegmentsOf(packet, segments, v6, l4, hdr, mss);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("cuts UDP super-packets (USO) into datagrams with their own header and checksum", () => {
    for (const v6 of [false, true]) {
      const payload = pattern(1200 * 5 + 300, 4);
      const packet = ipPacket({ v6, proto: UDP, transport: udpDatagram(payload) });
      const l4 = v6 ? 40 : 20;
      const input = Buffer.concat([
        vnet({
          flags: NEEDS_CSUM,
          gsoType: GSO.UDP_L4,
          hdrLen: l4 + 8,
          gsoSize: 1200,
          csumStart: l4,
          csumOffset: 6,
        }),
        packet,
      ]);
      const datagrams = lib().offloadSegment(input, 1500)!;
      expect(datagrams.map((d) => d.length - l4 - 8)).toEqual([1200, 1200, 1200, 1200, 1200, 300]);
      datagrams.forEach((d, k) => {
        expect(d.readUInt16BE(l4 + 4)).toBe(d.length - l4);
        const body = payload.subarray(k * 1200, k * 1200 + d.length - l4 - 8);
        expect(d.subarray(l4 + 8).equals(body)).toBe(true);
        expect(transportValid(d, v6, UDP, l4)).toBe(true);
        if (!v6) expect(d.readUInt16BE(4)).toBe(0x1234 + k);
      });
      // A datagram may not be cut: one that does not fit the room is dropped, not truncated.
      expect(lib().offloadSegment(input, 1000)).toBeNull();
    }
  });

  it("completes the checksum of single packets marked NEEDS_CSUM", () => {
    for (const v6 of [false, true]) {
      for (const proto of [TCP, UDP]) {
        const transport =
          proto === TCP
            ? tcpSegment(77, F.ACK | F.PSH, pattern(333, 6))
            : udpDatagram(pattern(333));
        const packet = ipPacket({ v6, proto, transport });
        const l4 = v6 ? 40 : 20;
        const input = Buffer.concat([
          vnet({ flags: NEEDS_CSUM, csumStart: l4, csumOffset: proto === TCP ? 16 : 6 }),
          packet,
        ]);
        const [out, ...rest] = lib().offloadSegment(input, 1500)!;
        expect(rest).toEqual([]);
        expect(out!.equals(finish(Buffer.from(packet), v6, proto))).toBe(true);
        expect(transportValid(out!, v6, proto, l4)).toBe(true);
      }
    }
  });

  it("follows the virtio rule for other partial checksums (seed in the field)", () => {
    // ICMPv6-like: protocol 58, checksum at offset 2 from csum_start, seeded with 0x1111.
    const body = pattern(101, 8);
    body.writeUInt16BE(0x1111, 2);
    const packet = ipPacket({ v6: true, proto: 58, transport: body });
    const input = Buffer.concat([
      vnet({ flags: NEEDS_CSUM, csumStart: 40, csumOffset: 2 }),
      packet,
    ]);
    const [out] = lib().offloadSegment(input, 1500)!;
    const want = Buffer.from(packet);
    want.writeUInt16BE(checksum(body), 42);
    expect(out!.equals(want)).toBe(true);
  });

  it("passes packets without offload flags through byte for byte, truncating like a read", () => {
    const odd = Buffer.concat([vnet({}), Buffer.from([0x00, 1, 2, 3, 4, 5])]);
    expect(lib().offloadSegment(odd, 1500)).toEqual([Buffer.from([0x00, 1, 2, 3, 4, 5])]);
    const big = ipPacket({ proto: UDP, transport: udpDatagram(pattern(3000)) });
    const [cut] = lib().offloadSegment(Buffer.concat([vnet({}), big]), 1400)!;
    expect(cut!.equals(big.subarray(0, 1400))).toBe(true);
  });

  it("drops what cannot be split or checksummed", () => {
    const { input } = tcpSuper(false, pattern(3000), 1000, F.ACK);
    const wrongType = Buffer.from(input);
    wrongType[1] = GSO.TCPV6; // IPv4 packet labelled TCPV6
    expect(lib().offloadSegment(wrongType, 1500)).toBeNull();
    const zeroSize = Buffer.from(input).fill(0, 4, 6); // gso_size 0
    expect(lib().offloadSegment(zeroSize, 1500)).toBeNull();
    const badStart = Buffer.from(input);
    badStart.set(vnet({ flags: NEEDS_CSUM, gsoType: GSO.TCPV4, gsoSize: 1000, csumStart: 24 }));
    badStart.writeUInt16BE(16, 8); // csum_start not at the TCP header
    expect(lib().offloadSegment(badStart, 1500)).toBeNull();
    const truncated = input.subarray(0, 10 + 30);
    expect(lib().offloadSegment(truncated, 1500)).toBeNull();
    expect(lib().offloadSegment(Buffer.alloc(10), 1500)).toBeNull(); // header only
    const ufo = Buffer.from(input);
    ufo[1] = 3; // UFO: never negotiated
    expect(lib().offloadSegment(ufo, 1500)).toBeNull();
    // Not even the headers fit the room.
    expect(lib().offloadSegment(input, 40)).toBeNull();
  });

  it("hands out a GSO packet without payload as one packet", () => {
    const { packet, input, l4, hdr } = tcpSuper(false, Buffer.alloc(0), 1448, F.ACK | F.FIN);
    const segments = lib().offloadSegment(input, 1500)!;
    expectSegmentsOf(packet, segments, false, l4, hdr, 1448);
  });
});

describe.skipIf(addon === undefined)("coalescing TCP segments written to the TUN", () => {
  function segmentsOf(v6: boolean, length: number, mss: number, flags = F.ACK | F.PSH, seq = 7) {
    const { input } = tcpSuper(v6, pattern(length, 9), mss, flags, seq);
    return lib().offloadSegment(input, 65536)!;
  }

  it("turns a run of segments into one super-packet that splits back into the same run", () => {
    for (const v6 of [false, true]) {
      const segments = segmentsOf(v6, 14000, 1400);
      const written = lib().offloadCoalesce(segments);
      expect(written).toHaveLength(1);
      const out = written[0]!;
      const h = readVnet(out.subarray(0, 10));
      const l4 = v6 ? 40 : 20;
      expect(h).toEqual({
        flags: NEEDS_CSUM,
        gsoType: v6 ? GSO.TCPV6 : GSO.TCPV4,
        hdrLen: l4 + 32,
        gsoSize: 1400,
        csumStart: l4,
        csumOffset: 16,
      });
      const packet = out.subarray(10);
      expect(packet.length).toBe(l4 + 32 + 14000);
      if (!v6) expect(sum16(packet.subarray(0, 20))).toBe(0xffff);
      // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, not complemented.
      expect(packet.readUInt16BE(l4 + 16)).toBe(
        sum16(Buffer.alloc(0), pseudoSum(packet, v6, TCP, packet.length - l4)),
      );
      expect(lib().offloadSegment(out, 65536)).toEqual(segments);
    }
  });

  it("writes anything else alone, with a zeroed header", () => {
    const udp = ipPacket({ proto: UDP, transport: udpDatagram(pattern(100)) });
    const [out] = lib().offloadCoalesce([udp]);
    expect(out!.equals(Buffer.concat([Buffer.alloc(10), udp]))).toBe(true);
  });

  it("ends a run at a gap, another flow, PSH, a short segment, a bad checksum or 64 KiB", () => {
    const lengthsOf = (packets: Buffer[]) =>
      lib()
        .offloadCoalesce(packets)
        .map((b) => {
          const h = readVnet(b.subarray(0, 10));
          return h.gsoSize === 0 ? 1 : Math.ceil((b.length - 10 - h.hdrLen) / h.gsoSize);
        });
    const run = segmentsOf(false, 1000 * 10, 1000, F.ACK);
    expect(lengthsOf(run)).toEqual([10]);

    const gap = [...run.slice(0, 4), ...run.slice(5)];
    expect(lengthsOf(gap)).toEqual([4, 5]);

    const otherFlow = run.map((p) => Buffer.from(p));
    otherFlow[6]!.writeUInt16BE(40001, 20);
    finish(otherFlow[6]!, false, TCP);
    expect(lengthsOf(otherFlow)).toEqual([6, 1, 3]);

    const push = run.map((p) => Buffer.from(p));
    push[2]![33] = F.ACK | F.PSH;
    finish(push[2]!, false, TCP);
    expect(lengthsOf(push)).toEqual([3, 7]);

    const short = segmentsOf(false, 1000 * 3 + 10, 1000, F.ACK);
    expect(lengthsOf([...short, ...segmentsOf(false, 100, 1000)])).toEqual([4, 1]);

    const corrupt = run.map((p) => Buffer.from(p));
    corrupt[5]![100] = corrupt[5]![100]! ^ 0x40;
    expect(lengthsOf(corrupt)).toEqual([5, 1, 4]);

    const long = segmentsOf(false, 500 * 100, 500, F.ACK);
    // 64 segments at most per run.
    expect(lengthsOf(long)).toEqual([64, 36]);
    const big = [
      ...segmentsOf(false, 1400 * 40, 1400, F.ACK, 7),
      ...segmentsOf(false, 1400 * 20, 1400, F.ACK, 7 + 1400 * 40),
    ];
    // 20 + 32 + 46 * 1400 <= 65535 < 20 + 32 + 47 * 1400
    expect(lengthsOf(big)).toEqual([46, 14]);
  });
});

describe.skipIf(addon === undefined)("coalescing UDP datagrams written to the TUN (USO)", () => {
  /** `count` datagrams of one flow, `size` bytes of payload each (the last `last`), as a
   * sender's stack makes them: IDs counting up, checksums complete. */
  function datagramsOf(v6: boolean, count: number, size: number, last = size, salt = 5) {
    const payload = pattern(size * (count - 1) + last, salt);
    return Array.from({ length: count }, (_, k) => {
      const body = payload.subarray(k * size, k * size + (k === count - 1 ? last : size));
      const packet = ipPacket({ v6, id: 0x1234 + k, proto: UDP, transport: udpDatagram(body) });
      return finish(packet, v6, UDP);
    });
  }
  const runLengths = (packets: Buffer[]) =>
    lib()
      .offloadCoalesce(packets)
      .map((b) => {
        const h = readVnet(b.subarray(0, 10));
        return h.gsoSize === 0 ? 1 : Math.ceil((b.length - 10 - h.hdrLen) / h.gsoSize);
      });

  it("turns a run of datagrams into one super-packet that splits back into the same run", () => {
    for (const v6 of [false, true]) {
      const datagrams = datagramsOf(v6, 10, 1392, 500);
      const written = lib().offloadCoalesce(datagrams);
      expect(written).toHaveLength(1);
      const out = written[0]!;
      const l4 = v6 ? 40 : 20;
      expect(readVnet(out.subarray(0, 10))).toEqual({
        flags: NEEDS_CSUM,
        gsoType: GSO.UDP_L4,
        hdrLen: l4 + 8,
        gsoSize: 1392,
        csumStart: l4,
        csumOffset: 6,
      });
      const packet = out.subarray(10);
      expect(packet.length).toBe(l4 + 8 + 1392 * 9 + 500);
      expect(packet.readUInt16BE(l4 + 4)).toBe(packet.length - l4);
      if (!v6) expect(packet.readUInt16BE(2)).toBe(packet.length);
      if (!v6) expect(sum16(packet.subarray(0, 20))).toBe(0xffff);
      if (v6) expect(packet.readUInt16BE(4)).toBe(packet.length - 40);
      // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, not complemented.
      expect(packet.readUInt16BE(l4 + 6)).toBe(
        sum16(Buffer.alloc(0), pseudoSum(packet, v6, UDP, packet.length - l4)),
      );
      // What the kernel's segmentation hands on is, byte for byte, what came in.
      expect(lib().offloadSegment(out, 65536)).toEqual(datagrams);
    }
  });

  it("coalesces runs of any count and sizes, and splits them back exactly (property)", () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.integer({ min: 2, max: 80 }),
        fc.integer({ min: 1, max: 1452 }),
        fc.integer({ min: 1, max: 1452 }),
        (v6, count, size, lastWanted) => {
          const last = Math.min(size, lastWanted);
          const datagrams = datagramsOf(v6, count, size, last);
          const written = lib().offloadCoalesce(datagrams);
          const back = written.flatMap((b) =>
            readVnet(b.subarray(0, 10)).gsoType === GSO.NONE
              ? [b.subarray(10)]
              : lib().offloadSegment(b, 65536)!,
          );
          expect(back).toEqual(datagrams);
          expect(written.length).toBeLessThanOrEqual(Math.ceil(count / 2) + 1);
        },
      ),
      { numRuns: 30 },
    );
  });

  it("ends a run at another flow, a longer or shorter datagram, a changed header, a bad or missing checksum, 64 datagrams or 64 KiB", () => {
    const run = datagramsOf(false, 10, 1000);
    expect(runLengths(run)).toEqual([10]);
    const changed = (at: number, edit: (p: Buffer) => void, refinish = true) => {
      const packets = run.map((p) => Buffer.from(p));
      edit(packets[at]!);
      if (refinish) {
        packets[at]!.writeUInt16BE(0, 10);
        packets[at]!.writeUInt16BE(checksum(packets[at]!.subarray(0, 20)), 10);
        finish(packets[at]!, false, UDP);
      }
      return packets;
    };

    expect(runLengths(changed(6, (p) => p.writeUInt16BE(40001, 20)))).toEqual([6, 1, 3]);
    expect(runLengths(changed(3, (p) => (p[8] = 63)))).toEqual([3, 1, 6]); // TTL
    expect(runLengths(changed(3, (p) => (p[1] = 0)))).toEqual([3, 1, 6]); // TOS
    expect(runLengths(changed(5, (p) => (p[100] = p[100]! ^ 1), false))).toEqual([5, 1, 4]);
    // An IPv4 zero checksum means "none": such a datagram is written alone.
    expect(runLengths(changed(0, (p) => p.writeUInt16BE(0, 26), false))).toEqual([1, 9]);
    // A header checksum that does not add up.
    expect(runLengths(changed(4, (p) => (p[10] = p[10]! ^ 1), false))).toEqual([4, 1, 5]);

    const short = datagramsOf(false, 4, 1000, 10);
    expect(runLengths([...short, ...datagramsOf(false, 3, 1000)])).toEqual([4, 3]);
    const longer = datagramsOf(false, 3, 1001, 1001, 9);
    expect(runLengths([...datagramsOf(false, 3, 1000), ...longer])).toEqual([3, 3]);

    // Without DF the IDs must count up, as the segmentation numbers them; with DF they may not.
    const noDf = run.map((p) => {
      const q = Buffer.from(p);
      q.writeUInt16BE(0, 6);
      q.writeUInt16BE(0, 10);
      q.writeUInt16BE(checksum(q.subarray(0, 20)), 10);
      return q;
    });
    expect(runLengths(noDf)).toEqual([10]);
    const idJump = (packets: Buffer[]) =>
      packets.map((p, k) => {
        const q = Buffer.from(p);
        if (k >= 7) q.writeUInt16BE((q.readUInt16BE(4) + 100) & 0xffff, 4);
        q.writeUInt16BE(0, 10);
        q.writeUInt16BE(checksum(q.subarray(0, 20)), 10);
        return q;
      });
    expect(runLengths(idJump(noDf))).toEqual([7, 3]);
    expect(runLengths(idJump(run))).toEqual([10]);

    expect(runLengths(datagramsOf(false, 100, 500))).toEqual([64, 36]);
    // 20 + 8 + 46 * 1400 <= 65535 < 20 + 8 + 47 * 1400
    expect(runLengths(datagramsOf(false, 60, 1400))).toEqual([46, 14]);

    // TCP and UDP runs side by side: each planned as what it is.
    const tcp = lib().offloadSegment(
      tcpSuper(false, pattern(4000, 1), 1000, F.ACK, 7).input,
      65536,
    )!;
    expect(runLengths([...run.slice(0, 3), ...tcp, ...run.slice(3)])).toEqual([3, 4, 7]);
  });
});

// ---- real traffic through two offload TUNs ----

const skipReason = tunUnavailableReason();
if (skipReason) console.warn(`TUN offload traffic tests skipped: ${skipReason}`);

interface FlowSummary {
  key: string;
  bytes: number;
  segments: number;
  gaps: number;
  retransmitted: number;
  sha256: string;
}

interface Verified {
  packets: number;
  tcpChecked: number;
  udpChecked: number;
  maxLength: number;
  errors: string[];
  flows: FlowSummary[];
}

interface PumpResult {
  offload: [boolean, boolean];
  udpOffload: [boolean, boolean];
  stats: [TunOffloadStats | null, TunOffloadStats | null];
  counts: {
    calls: number[];
    packets: number[];
    fullBatches: number[];
    maxPending: number[];
    maxPendingWaitMs: number[];
  };
  writeErrors: number[];
  verified: [Verified, Verified] | null;
}

interface ClientResult {
  bytes: number;
  sha256: string;
  ms: number;
  answer: { bytes: number; sha256: string };
}

interface TransferOptions {
  offload: boolean;
  gro?: boolean;
  batch: number;
  verify: boolean;
  bytes: number;
  v6?: boolean;
  mtu?: number;
}

const SERVER_PORT = 5201;

describe.skipIf(skipReason !== null)(
  `TCP through two offload TUNs bridged by a JS pump${skipReason ? ` (skipped: ${skipReason})` : ""}`,
  () => {
    const id = `eoff-${process.pid}-${randomBytes(3).toString("hex")}`;
    const nsA = `${id}-a`;
    const nsB = `${id}-b`;
    let scratch = "";
    let nativeModule = "";
    const children = new Set<ChildProcess>();

    beforeAll(() => {
      scratch = mkdtempSync(join(tmpdir(), "edgetun-offload-test-"));
      nativeModule = transpileNativeModule(scratch);
      for (const ns of [nsA, nsB]) {
        const add = spawnSync("ip", ["netns", "add", ns], { encoding: "utf8" });
        if (add.status !== 0) throw new Error(`ip netns add ${ns} failed: ${add.stderr}`);
        spawnSync("ip", ["-n", ns, "link", "set", "lo", "up"]);
      }
    });

    afterAll(() => {
      for (const child of children) {
        if (child.exitCode === null && child.signalCode === null && child.pid) {
          try {
            process.kill(child.pid, "SIGKILL");
          } catch {
            // already gone
          }
        }
      }
      // Always remove the namespaces, even when a helper failed or hung.
      for (const ns of [nsA, nsB]) spawnSync("ip", ["netns", "del", ns]);
      if (scratch) rmSync(scratch, { recursive: true, force: true });
    });

    /** Starts the helper in a namespace; resolves with it once a stdout line starts with `ready`. */
    function start(ns: string, role: string, argv: string[], ready: string, ms = 10_000) {
      const child = spawn(
        "ip",
        ["netns", "exec", ns, process.execPath, helperPath, role, ...argv],
        {
          stdio: ["pipe", "pipe", "pipe"],
          env: { ...process.env, EDGETUN_ADDON: addonPath },
        },
      );
      children.add(child);
      let out = "";
      let err = "";
      const lines: string[] = [];
      const waiters: Array<() => void> = [];
      child.stdout.setEncoding("utf8").on("data", (text: string) => {
        out += text;
        let nl;
        while ((nl = out.indexOf("\n")) !== -1) {
          lines.push(out.slice(0, nl));
          out = out.slice(nl + 1);
          waiters.splice(0).forEach((wake) => wake());
        }
      });
      child.stderr.setEncoding("utf8").on("data", (text: string) => (err += text));
      child.on("exit", () => waiters.splice(0).forEach((wake) => wake()));
      const line = (prefix: string, ms: number) =>
        new Promise<string>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`${role}: no "${prefix}" line in ${ms} ms; stderr: ${err}`)),
            ms,
          );
          const look = () => {
            const found = lines.find((l) => l.startsWith(prefix));
            if (found !== undefined) {
              clearTimeout(timer);
              resolve(found);
            } else if (child.exitCode !== null || child.signalCode !== null) {
              clearTimeout(timer);
              reject(new Error(`${role} exited (${child.exitCode}): ${err}`));
            } else {
              waiters.push(look);
            }
          };
          look();
        });
      return line(ready, ms).then(() => ({ child, line }));
    }

    function exited(child: ChildProcess): Promise<void> {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      return new Promise((resolve) => child.once("exit", () => resolve()));
    }

    async function transfer(options: TransferOptions) {
      const { v6 = false, mtu = 1500, gro = true } = options;
      const pump = await start(
        nsA,
        "pump",
        [
          nativeModule,
          JSON.stringify({ ...options, gro, mtu, serverPort: SERVER_PORT, peerNamespace: nsB }),
        ],
        "ready",
      );
      const address = v6 ? "fd00:201::2" : "10.201.0.2";
      const server = await start(nsB, "server", [address, String(SERVER_PORT)], "listening");
      try {
        const argv = [address, String(SERVER_PORT), String(options.bytes)];
        const client = await start(nsA, "client", argv, "{", 120_000);
        const result = JSON.parse(await client.line("{", 1)) as ClientResult;
        pump.child.stdin!.write("stop\n");
        const pumped = JSON.parse(await pump.line("{", 10_000)) as PumpResult;
        return { client: result, pump: pumped };
      } finally {
        // Both end when their stdin closes; the next transfer reuses the device names.
        server.child.stdin!.end();
        pump.child.stdin!.end();
        await Promise.all([exited(server.child), exited(pump.child)]);
      }
    }

    function expectIntact(client: ClientResult, bytes: number) {
      expect(client.bytes).toBe(bytes);
      expect(client.answer).toEqual({ bytes, sha256: client.sha256 });
    }

    function expectVerified(pump: PumpResult, client: ClientResult) {
      const [toServer, toClient] = pump.verified!;
      expect(toServer.errors).toEqual([]);
      expect(toClient.errors).toEqual([]);
      expect(toServer.maxLength).toBeLessThanOrEqual(1500);
      expect(toClient.maxLength).toBeLessThanOrEqual(1500);
      // Every data segment checked here, and the stream rebuilt from them is what was sent.
      const flow = toServer.flows.find((f) => f.bytes > 0)!;
      expect(flow).toBeDefined();
      expect(flow.gaps).toBe(0);
      expect(flow.bytes).toBe(client.bytes);
      expect(flow.sha256).toBe(client.sha256);
      expect(toClient.tcpChecked).toBeGreaterThan(0);
      expect(pump.writeErrors).toEqual([0, 0]);
    }

    for (const v6 of [false, true]) {
      it(`splits the kernel's IPv${v6 ? 6 : 4} super-packets into valid MTU-sized segments`, async () => {
        const bytes = 2_000_000;
        // 7 slots per read: a 64 KiB super-packet needs ~45, so most are handed out over
        // several callbacks while the TUN itself is not readable.
        const { client, pump } = await transfer({
          offload: true,
          batch: 7,
          verify: true,
          bytes,
          v6,
        });
        expect(pump.offload).toEqual([true, true]);
        expectIntact(client, bytes);
        expectVerified(pump, client);
        const a = pump.stats[0]!;
        expect(a.superPackets).toBeGreaterThan(0);
        expect(a.segments).toBeGreaterThan(a.reads);
        expect(a.dropped).toBe(0);
        expect(pump.counts.maxPending[0]).toBeGreaterThan(0);
        console.log(
          `IPv${v6 ? 6 : 4} split check: ${pump.verified![0].packets} packets checked, ` +
            `${pump.stats[0]!.superPackets} super-packets, ` +
            `longest wait for pending packets ${pump.counts.maxPendingWaitMs[0]!.toFixed(1)} ms, ` +
            `retransmitted segments ${pump.verified![0].flows.map((f) => f.retransmitted)}`,
        );
        // The segments were coalesced again on the way into the second TUN.
        expect(pump.stats[1]!.coalescedWrites).toBeGreaterThan(0);
        expect(pump.stats[1]!.groRefused).toBe(0);
      }, 60_000);
    }

    it("hands out what a read left pending on later callbacks, though the fd is not readable; writes with headers", async () => {
      const nsR = `${id}-r`;
      const add = spawnSync("ip", ["netns", "add", nsR], { encoding: "utf8" });
      if (add.status !== 0) throw new Error(`ip netns add ${nsR} failed: ${add.stderr}`);
      try {
        const run = spawnSync(
          "ip",
          ["netns", "exec", nsR, process.execPath, helperPath, "burst", nativeModule],
          { encoding: "utf8", timeout: 20_000, env: { ...process.env, EDGETUN_ADDON: addonPath } },
        );
        expect(run.status, run.stderr).toBe(0);
        const r = JSON.parse(run.stdout) as {
          udpOffload: boolean;
          socketGso: boolean;
          accepted: number;
          inOrder: boolean;
          received: number;
          calls: number;
          maxPending: number;
          errors: string[];
          stats: TunOffloadStats;
          queues: boolean[];
          written: number;
          writeStatus: number[];
          arrived: string[];
          mismatch: { code: string; message: string } | null;
        };
        expect(r.accepted).toBe(20);
        expect(r.errors).toEqual([]);
        expect(r.received).toBe(20);
        expect(r.inOrder).toBe(true);
        expect(r.written).toBe(3);
        expect(r.writeStatus).toEqual([0, -22, 0]); // EINVAL for the bad version nibble
        expect(r.arrived).toEqual(["first", "second"]);
        expect(r.queues).toEqual([true, true]);
        expect(r.mismatch?.code).toBe("EINVAL");
        expect(r.mismatch?.message).toMatch(/offload must match/);
        if (r.udpOffload && r.socketGso) {
          // One USO super-packet: one read, three packets per callback, seven callbacks.
          expect(r.stats.superPackets).toBe(1);
          expect(r.stats.reads).toBe(1);
          expect(r.maxPending).toBe(17);
          expect(r.calls).toBeGreaterThanOrEqual(7);
        } else {
          console.warn("no UDP segmentation offload here: the kernel sent 20 datagrams");
        }
      } finally {
        spawnSync("ip", ["netns", "del", nsR]);
      }
    }, 30_000);

    it("leaves the plain path unchanged: the same transfer without offload", async () => {
      const bytes = 1_000_000;
      const { client, pump } = await transfer({ offload: false, batch: 7, verify: true, bytes });
      expect(pump.offload).toEqual([false, false]);
      expect(pump.stats).toEqual([null, null]);
      expectIntact(client, bytes);
      expectVerified(pump, client);
    }, 60_000);

    // 50 MB by default; EDGETUN_OFFLOAD_BENCH_MB sets another size for a steadier figure.
    const benchMb = Number(process.env["EDGETUN_OFFLOAD_BENCH_MB"] ?? 50);
    it(`carries ${benchMb} MB intact with and without offload, and reports throughput`, async () => {
      const bytes = benchMb * 1000 * 1000;
      const rates: Record<string, number> = {};
      for (const [label, options] of [
        ["without offload", { offload: false }],
        ["offload, no coalescing", { offload: true, gro: false }],
        ["offload + coalescing", { offload: true, gro: true }],
      ] as const) {
        const { client, pump } = await transfer({ ...options, batch: 128, verify: false, bytes });
        expect(pump.offload).toEqual([options.offload, options.offload]);
        expectIntact(client, bytes);
        expect(pump.writeErrors).toEqual([0, 0]);
        rates[label] = bytes / 1e6 / (client.ms / 1000);
        const stats = pump.stats[0];
        console.log(
          `offload throughput, ${label}: ${rates[label]!.toFixed(0)} MB/s ` +
            `(${(rates[label]! * 8).toFixed(0)} Mbit/s, ${client.ms.toFixed(0)} ms for ${benchMb} MB)` +
            (stats
              ? `; A read ${stats.reads} times (${stats.superPackets} super-packets) for ` +
                `${stats.segments} packets; B wrote ${pump.stats[1]!.writes} times for ` +
                `${pump.counts.packets[0]} packets`
              : `; ${pump.counts.packets[0]} packets`),
        );
      }
    }, 180_000);
  },
);
