// Every malformed, forged or replayed datagram is dropped and counted under its reason, and
// nothing received from the network throws out of the core.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Device } from "../../src/core/device.js";
import { INITIATION_LENGTH, MessageType, RESPONSE_LENGTH } from "../../src/core/messages.js";
import { ipv4Packet, pairOfNodes, type Network } from "../support/index.js";

/** A working pair with one datagram of each kind captured from the wire. */
function capturedPair() {
  const { net, a, b } = pairOfNodes();
  net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "hello"));
  const of = (type: number) => Buffer.from(net.log.find((e) => e.datagram[0] === type)!.datagram);
  return {
    net,
    a,
    b,
    initiation: of(MessageType.HandshakeInitiation),
    response: of(MessageType.HandshakeResponse),
    data: of(MessageType.TransportData),
  };
}

function deliverTo(net: Network, to: string, datagram: Buffer, from = "a"): void {
  net.node(to).device.handleDatagram(datagram, net.node(from).endpoint);
  net.run();
}

function drops(device: Device): Record<string, number> {
  return Object.fromEntries(Object.entries(device.stats.drops).filter(([, n]) => n > 0));
}

function flipped(datagram: Buffer, offset: number): Buffer {
  const copy = Buffer.from(datagram);
  copy[offset]! ^= 0x01;
  return copy;
}

describe("malformed datagrams are counted by reason", () => {
  it.each([
    ["empty", Buffer.alloc(0), "bad_length"],
    ["3 bytes", Buffer.from([1, 0, 0]), "bad_length"],
    ["initiation one byte short", Buffer.alloc(INITIATION_LENGTH - 1), "bad_length"],
    ["initiation one byte long", Buffer.alloc(INITIATION_LENGTH + 1), "bad_length"],
    ["response one byte long", Buffer.alloc(RESPONSE_LENGTH + 1), "bad_length"],
    ["cookie reply one byte short", Buffer.alloc(63), "bad_length"],
    ["data shorter than a keepalive", Buffer.alloc(31), "bad_length"],
    ["type 0", Buffer.alloc(148), "unknown_type"],
    ["type 5", Buffer.alloc(148), "unknown_type"],
    ["non-zero reserved byte", Buffer.alloc(148), "unknown_type"],
  ])("%s → %s", (name, datagram, reason) => {
    const { net, b } = pairOfNodes();
    const message = Buffer.from(datagram);
    if (name.startsWith("initiation")) message[0] = 1;
    if (name.startsWith("response")) message[0] = 2;
    if (name.startsWith("cookie")) message[0] = 3;
    if (name.startsWith("data")) message[0] = 4;
    if (name === "type 5") message[0] = 5;
    if (name === "non-zero reserved byte") message.set([1, 0, 1, 0]);
    deliverTo(net, "b", message);
    expect(drops(b.device)).toEqual({ [reason]: 1 });
  });

  it("a bit flipped anywhere before mac2 of an initiation fails mac1", () => {
    for (const offset of [0 + 4, 8, 40, 100, 116, 131]) {
      const { net, b, initiation } = capturedPair();
      const before = b.device.stats.drops.bad_mac1;
      deliverTo(net, "b", flipped(initiation, offset));
      expect(b.device.stats.drops.bad_mac1, `offset ${offset}`).toBe(before + 1);
    }
  });

  it("an initiation replayed from the wire is refused by its timestamp", () => {
    const { net, b, initiation } = capturedPair();
    net.advance(1_000);
    deliverTo(net, "b", initiation);
    expect(drops(b.device)).toEqual({ handshake_replay: 1 });
  });

  it("a response to no initiation of ours is an unknown index; a replayed one too", () => {
    const { net, a, response } = capturedPair();
    deliverTo(net, "a", response, "b");
    expect(drops(a.device)).toEqual({ unknown_index: 1 });
  });

  it("transport data: flipped index, counter, ciphertext and tag; replays", () => {
    const { net, b, data } = capturedPair();
    deliverTo(net, "b", flipped(data, 4));
    deliverTo(net, "b", flipped(data, 8));
    deliverTo(net, "b", flipped(data, 20));
    deliverTo(net, "b", flipped(data, data.length - 1));
    deliverTo(net, "b", data);
    expect(drops(b.device)).toEqual({ unknown_index: 1, decryption_failed: 3, replayed: 1 });
    expect(b.delivered.length).toBe(1);
  });

  it("a cookie reply that does not authenticate", () => {
    const { net, a, b, initiation } = capturedPair();
    const reply = Buffer.alloc(64);
    reply[0] = MessageType.CookieReply;
    initiation.copy(reply, 4, 4, 8); // a's sender index, which is now a's keypair index
    deliverTo(net, "a", reply, "b");
    expect(drops(a.device)).toEqual({ bad_cookie_reply: 1 });
    expect(drops(b.device)).toEqual({});
  });

  it("inner packets that are not IP or lie about their length", () => {
    const { net, a, b } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "ok"));
    // Encrypt a bad inner packet as a would, by handing it to a's send path with a route.
    const lying = ipv4Packet("10.0.0.1", "10.0.0.2", "short");
    lying.writeUInt16BE(200, 2); // claims 200 bytes
    a.device.handleTunnelPacket(lying);
    net.run();
    expect(drops(b.device)).toEqual({ bad_inner_packet: 1 });
  });
});

describe("random input never throws and is always counted", () => {
  it("random datagrams", () => {
    const { net, b } = capturedPair();
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 300 }), (bytes) => {
        const before = b.device.stats.totalDrops;
        b.device.handleDatagram(Buffer.from(bytes), net.node("a").endpoint);
        b.device.actions.clear();
        return b.device.stats.totalDrops === before + 1;
      }),
      { numRuns: 2000 },
    );
  });

  it("valid messages with random mutations", () => {
    const { net, a, b, initiation, response, data } = capturedPair();
    const samples = [initiation, response, data];
    fc.assert(
      fc.property(
        fc.constantFrom(...samples),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), {
          minLength: 1,
          maxLength: 4,
        }),
        fc.integer({ min: -3, max: 3 }),
        (sample, edits, resize) => {
          const message = Buffer.from(sample);
          for (const [offset, xor] of edits) message[offset % message.length]! ^= xor;
          const mutated =
            resize >= 0
              ? Buffer.concat([message, Buffer.alloc(resize)])
              : message.subarray(0, message.length + resize);
          for (const device of [a.device, b.device]) {
            device.handleDatagram(mutated, net.node("a").endpoint);
            device.actions.clear();
          }
        },
      ),
      { numRuns: 1000 },
    );
    // Still a working tunnel afterwards.
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "still here"));
    expect(b.delivered.at(-1)?.subarray(20).toString()).toBe("still here");
  });

  it("random inner packets from the tunnel side", () => {
    const { a } = capturedPair();
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 200 }), (bytes) => {
        const before = a.device.stats.totalDrops;
        a.device.handleTunnelPacket(Buffer.from(bytes));
        // Either sent on the session (a packet routed to b) or dropped with a reason.
        const handled = a.device.actions.datagrams.length + a.device.stats.totalDrops - before;
        a.device.actions.clear();
        return handled === 1;
      }),
      { numRuns: 1000 },
    );
  });
});
