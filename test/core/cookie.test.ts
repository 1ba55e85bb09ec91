// Under load a responder answers initiations with cookie replies instead of doing
// Diffie-Hellman; an initiator that proves its address with mac2 gets through.
import { describe, expect, it } from "vitest";
import { CookieChecker, CookieMaker } from "../../src/core/cookie.js";
import { MessageType } from "../../src/core/messages.js";
import { sendInitiation } from "../../src/core/send.js";
import { ipv4Packet, keyFromSeed, pairOfNodes, seededRandom } from "../support/index.js";

const types = (log: Array<{ from: string; datagram: Buffer }>) =>
  log.map((e) => `${e.from}:${e.datagram[0]}`);

describe("cookies under load", () => {
  it("a responder under load sends a cookie reply; the retransmission with mac2 succeeds", () => {
    const { net, a, b } = pairOfNodes({ underLoad: 0 }); // every handshake counts as load
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "knock"));
    expect(types(net.log)).toEqual(["a:1", "b:3"]);
    expect(b.device.stats.cookieRepliesSent).toBe(1);
    expect(b.device.stats.drops.cookie_required).toBe(1);
    expect(a.device.stats.cookieRepliesReceived).toBe(1);
    expect(b.device.peer(a.key.publicKey)!.keypairs.next).toBeNull(); // no DH was spent

    net.advance(5_500); // the retransmit timer resends, now with mac2
    expect(types(net.log)).toEqual(["a:1", "b:3", "a:1", "b:2", "a:4"]);
    expect(b.delivered.map((p) => p.subarray(20).toString())).toEqual(["knock"]);
  });

  it("a cookie is bound to the source address and port", () => {
    const { net, a, b } = pairOfNodes({ underLoad: 0 });
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "knock"));
    a.endpoint = { address: a.endpoint.address, port: a.endpoint.port + 1 };
    net.advance(5_500);
    // The retransmission carries a mac2 for the old port, so b asks again.
    expect(b.device.stats.cookieRepliesSent).toBe(2);
    net.advance(5_500);
    expect(b.delivered.length).toBe(1);
  });

  it("an initiator stops using a cookie before the responder's secret rotates (120 s)", () => {
    const responder = keyFromSeed("responder");
    const random = seededRandom("cookie");
    const checker = new CookieChecker(random);
    checker.setPublicKey(responder.publicKey);
    const maker = new CookieMaker(responder.publicKey);
    const source = Uint8Array.of(192, 0, 2, 1, 0xca, 0x6c);
    const message = Buffer.alloc(148);
    message[0] = MessageType.HandshakeInitiation;

    maker.addMacs(message, MessageType.HandshakeInitiation, 0);
    const reply = checker.createReply(message, MessageType.HandshakeInitiation, source, 0)!;
    expect(maker.consumeReply(reply, 0)).toBe(true);
    expect(maker.consumeReply(reply, 0)).toBe(false); // only one reply per mac1 sent

    maker.addMacs(message, MessageType.HandshakeInitiation, 100_000);
    expect(checker.check(message, MessageType.HandshakeInitiation, source, 100_000, true)).toBe(
      "valid_mac1_and_cookie",
    );
    maker.addMacs(message, MessageType.HandshakeInitiation, 116_000);
    expect(message.subarray(132).every((b) => b === 0)).toBe(true);
    // And the responder's secret has moved on by 120 s, so an old cookie no longer counts.
    const stale = Buffer.from(message);
    maker.addMacs(stale, MessageType.HandshakeInitiation, 100_000);
    expect(checker.check(stale, MessageType.HandshakeInitiation, source, 121_000, true)).toBe(
      "valid_mac1_no_cookie",
    );
  });

  it("under load, initiations with a valid cookie are still rate-limited per source", () => {
    const { net, a, b } = pairOfNodes({ underLoad: 0 });
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "knock"));
    net.advance(5_500);
    expect(b.delivered.length).toBe(1);
    // Replay fresh initiations from a's address as fast as a can make them.
    const peer = a.device.peer(b.key.publicKey)!;
    for (let i = 0; i < 30; i++) {
      peer.lastSentHandshakeAt = -Infinity;
      net.clock.advance(21); // past the 50-per-second initiation flood guard
      a.device.actions.clear();
      sendInitiation(a.device, peer, false);
      const { datagrams } = a.device.actions;
      const initiation = datagrams.find((d) => d[0] === MessageType.HandshakeInitiation);
      a.device.actions.clear();
      if (initiation) b.device.handleDatagram(initiation, a.endpoint);
      b.device.actions.clear();
    }
    // A burst of 5, then 20 per second: 30 initiations in 630 ms leave well over 10 refused.
    expect(b.device.stats.drops.rate_limited).toBeGreaterThan(10);
    expect(b.device.stats.drops.rate_limited).toBeLessThan(30);
  });
});
