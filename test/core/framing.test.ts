import { describe, expect, it } from "vitest";
import {
  DATA_HEADER_LENGTH,
  DATA_MIN_LENGTH,
  DATA_TRAILER_ROOM,
  MessageType,
  PADDING_MULTIPLE,
  TAG_LENGTH,
  frameDataInPlace,
  isTransportData,
  paddedLength,
  readCounter,
  readUint32,
} from "../../src/core/messages.js";
import type { Peer } from "../../src/core/peer.js";
import { ipv4Packet, pairOfNodes } from "../support/index.js";

describe("transport framing", () => {
  it("tells a data message by type, reserved bytes and length", () => {
    const message = Buffer.alloc(DATA_MIN_LENGTH + 8);
    message[0] = MessageType.TransportData;
    expect(isTransportData(message, 0, message.length)).toBe(true);
    expect(isTransportData(message, 0, DATA_MIN_LENGTH)).toBe(true);
    expect(isTransportData(message, 0, DATA_MIN_LENGTH - 1)).toBe(false);
    message[2] = 1;
    expect(isTransportData(message, 0, message.length)).toBe(false);
    message[2] = 0;
    message[0] = MessageType.HandshakeInitiation;
    expect(isTransportData(message, 0, message.length)).toBe(false);
    // At an offset inside an arena, as the batched path reads it.
    const arena = Buffer.alloc(200, 0xee);
    arena.fill(0, 64, 64 + DATA_MIN_LENGTH);
    arena[64] = MessageType.TransportData;
    expect(isTransportData(arena, 64, DATA_MIN_LENGTH)).toBe(true);
  });

  it("frames a packet where it lies: header in front, zero padding behind", () => {
    const arena = Buffer.alloc(DATA_HEADER_LENGTH + 64 + DATA_TRAILER_ROOM, 0xaa);
    const offset = DATA_HEADER_LENGTH;
    const length = 37;
    const padded = paddedLength(length, 1420);
    expect(padded).toBe(48);
    expect(padded - length).toBeLessThan(PADDING_MULTIPLE);
    expect(DATA_TRAILER_ROOM).toBeGreaterThanOrEqual(PADDING_MULTIPLE - 1 + TAG_LENGTH);
    frameDataInPlace(arena, offset, length, padded, 0x01020304, 2 ** 40 + 5);
    expect([...arena.subarray(0, 4)]).toEqual([MessageType.TransportData, 0, 0, 0]);
    expect(readUint32(arena, 4)).toBe(0x01020304);
    expect(readCounter(arena, 8)).toBe(2 ** 40 + 5);
    expect(arena.subarray(offset, offset + length).every((byte) => byte === 0xaa)).toBe(true);
    expect(arena.subarray(offset + length, offset + padded).every((byte) => byte === 0)).toBe(true);
    expect(arena[offset + padded]).toBe(0xaa);
  });
});

describe("the handshake-completed hook", () => {
  it("fires once on each side per handshake, with the new session current", () => {
    const { net, a, b } = pairOfNodes();
    const seen: Array<[string, Peer, boolean]> = [];
    a.device.onHandshakeCompleted = (peer) =>
      seen.push(["a", peer, peer.keypairs.current!.isInitiator]);
    b.device.onHandshakeCompleted = (peer) =>
      seen.push(["b", peer, peer.keypairs.current!.isInitiator]);
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "hello"));
    expect(b.delivered).toHaveLength(1);
    // a completes on b's response, b when a's first data (here the staged packet) arrives.
    expect(seen.map(([side, , initiator]) => [side, initiator])).toEqual([
      ["a", true],
      ["b", false],
    ]);
    expect(seen[0]![1]).toBe(a.device.peer(b.key.publicKey));
    expect(seen[1]![1]).toBe(b.device.peer(a.key.publicKey));
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "again"));
    expect(seen).toHaveLength(2);
  });
});
