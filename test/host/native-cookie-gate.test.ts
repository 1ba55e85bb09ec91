// The native cookie gate against the protocol core's own mac and cookie code (src/core/
// cookie.ts): the same mac1 verdicts, cookie replies the core's initiator side accepts, and a
// cookie the core's responder side agrees with; for both handshake message kinds, IPv4 and
// IPv6 senders.
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { CookieChecker, CookieMaker } from "../../src/core/cookie.js";
import { PrivateKey, systemRandom } from "../../src/core/crypto.js";
import { MessageType } from "../../src/core/messages.js";
import { parseCidr } from "../../src/core/ipaddr.js";
import type { Endpoint } from "../../src/core/endpoint.js";
import {
  CookieGate,
  GateVerdict,
  PacketBatch,
  nativeAvailable,
  readEndpoint,
  writeEndpoint,
} from "../../src/host/native/index.js";

const SIZES = { [MessageType.HandshakeInitiation]: 148, [MessageType.HandshakeResponse]: 92 };
const NOW = 1_000_000;

function sourceBytes(endpoint: Endpoint): Uint8Array {
  const ip = parseCidr(endpoint.address).address;
  return Uint8Array.from([...ip, endpoint.port >> 8, endpoint.port & 0xff]);
}

/** A message of `type` with random contents and the macs an initiator of `responder` adds. */
function message(maker: CookieMaker, type: keyof typeof SIZES): Buffer {
  const bytes = randomBytes(SIZES[type]);
  bytes.writeUInt32LE(type, 0);
  maker.addMacs(bytes, type, NOW);
  return bytes;
}

describe.skipIf(!nativeAvailable())("cookie gate (native/cookie.c)", () => {
  const responder = PrivateKey.generate();
  const checker = new CookieChecker(systemRandom);
  checker.setPublicKey(responder.publicKey);
  const keys = checker.batchKeys(NOW)!;

  function judge(messages: Buffer[], sources: Endpoint[], underLoad: boolean) {
    const batch = new PacketBatch(messages.length, { slotSize: 256 });
    messages.forEach((bytes, i) => {
      batch.setPacket(i, bytes);
      writeEndpoint(batch.endpoints, i, sources[i]!);
    });
    const gate = new CookieGate(messages.length);
    const replies = gate.judge(batch, messages.length, keys, underLoad);
    return { gate, replies, verdicts: [...gate.verdicts] };
  }

  for (const type of [MessageType.HandshakeInitiation, MessageType.HandshakeResponse] as const) {
    for (const address of ["198.51.100.7", "2001:db8::42"]) {
      it(`type ${type} from ${address}: mac1 checked, cookie replies the initiator accepts`, () => {
        const source: Endpoint = { address, port: 40_000 + type };
        const maker = new CookieMaker(responder.publicKey);
        const valid = message(maker, type);
        const badMac1 = Buffer.from(valid);
        badMac1[SIZES[type] - 20]! ^= 1;
        const wrongLength = Buffer.concat([valid, Buffer.alloc(1)]);

        const calm = judge([valid, badMac1, wrongLength], [source, source, source], false);
        expect(calm.verdicts).toEqual([GateVerdict.Pass, GateVerdict.BadMac1, GateVerdict.Pass]);
        expect(calm.replies).toBe(0);
        expect(checker.check(valid, type, sourceBytes(source), NOW, false)).toBe(
          "valid_mac1_no_cookie",
        );
        expect(checker.check(badMac1, type, sourceBytes(source), NOW, false)).toBe("invalid_mac1");

        const loaded = judge([valid, badMac1], [source, source], true);
        expect(loaded.verdicts).toEqual([GateVerdict.CookieReply, GateVerdict.BadMac1]);
        expect(loaded.replies).toBe(1);
        const reply = Buffer.from(loaded.gate.replies.packet(0));
        expect(reply.length).toBe(64);
        expect(reply.readUInt32LE(0)).toBe(MessageType.CookieReply);
        expect(reply.readUInt32LE(4)).toBe(valid.readUInt32LE(4));
        expect(readEndpoint(loaded.gate.replies.endpoints, 0)).toEqual(source);
        // The initiator opens the cookie, and its next message passes the gate and the core.
        expect(maker.consumeReply(reply, NOW)).toBe(true);
        const withCookie = message(maker, type);
        expect(judge([withCookie], [source], true).verdicts).toEqual([GateVerdict.Pass]);
        expect(checker.check(withCookie, type, sourceBytes(source), NOW, true)).toBe(
          "valid_mac1_and_cookie",
        );
        // The cookie is bound to the sender's address and port.
        const elsewhere: Endpoint = { address, port: source.port + 1 };
        expect(judge([withCookie], [elsewhere], true).verdicts).toEqual([GateVerdict.CookieReply]);
      });
    }
  }

  it("agrees with the core on random and mangled messages", () => {
    const maker = new CookieMaker(responder.publicKey);
    const source: Endpoint = { address: "203.0.113.9", port: 51_820 };
    const messages: Buffer[] = [];
    for (let i = 0; i < 200; i++) {
      const type = i % 2 === 0 ? MessageType.HandshakeInitiation : MessageType.HandshakeResponse;
      const bytes = i % 3 === 0 ? randomBytes(SIZES[type]) : message(maker, type);
      bytes.writeUInt32LE(type, 0);
      if (i % 5 === 0) bytes[randomBytes(1)[0]! % bytes.length]! ^= 0x80;
      messages.push(bytes);
    }
    const { verdicts } = judge(
      messages,
      messages.map(() => source),
      false,
    );
    messages.forEach((bytes, i) => {
      const type = bytes.readUInt32LE(0);
      const core =
        type === MessageType.HandshakeInitiation || type === MessageType.HandshakeResponse
          ? checker.check(bytes, type, sourceBytes(source), NOW, false)
          : "other";
      const expected = core === "invalid_mac1" ? GateVerdict.BadMac1 : GateVerdict.Pass;
      expect(verdicts[i], `message ${i}`).toBe(expected);
    });
  });
});
