import { describe, expect, it } from "vitest";
import { MessageType } from "../../src/core/messages.js";
import { ipv4Packet, ipv6Packet, pairOfNodes } from "../support/index.js";

function typesOnWire(log: Array<{ from: string; datagram: Buffer }>): string[] {
  return log.map(({ from, datagram }) => `${from}:${datagram[0]}`);
}

describe("two in-memory devices", () => {
  for (const psk of [false, true]) {
    it(`complete a handshake and exchange data both ways${psk ? " with a pre-shared key" : ""}`, () => {
      const { net, a, b } = pairOfNodes({ psk });
      const ping = ipv4Packet("10.0.0.1", "10.0.0.2", "ping");
      net.send("a", ping);
      // initiation, response, then the staged packet on the new session
      expect(typesOnWire(net.log)).toEqual(["a:1", "b:2", "a:4"]);
      expect(b.delivered).toEqual([ping]);

      // b may send at once: the session was confirmed by a's first data packet.
      const pong = ipv4Packet("10.0.0.2", "10.0.0.1", "pong");
      net.send("b", pong);
      expect(a.delivered).toEqual([pong]);
      expect(typesOnWire(net.log).slice(3)).toEqual(["b:4"]);

      const peerOfA = a.device.peer(b.key.publicKey)!;
      const peerOfB = b.device.peer(a.key.publicKey)!;
      expect(peerOfA.keypairs.current?.isInitiator).toBe(true);
      expect(peerOfB.keypairs.current?.isInitiator).toBe(false);
      expect(peerOfA.keypairs.current!.sendingKey).toEqual(peerOfB.keypairs.current!.receivingKey);
      expect(peerOfA.lastHandshakeWallMs).toBe(net.clock.wallMs);
      expect(peerOfB.rxPayloadBytes).toBe(ping.length);
      expect(a.device.stats.totalDrops + b.device.stats.totalDrops).toBe(0);
    });
  }

  it("fails the handshake when only one side has the pre-shared key", () => {
    const { net, a, b } = pairOfNodes();
    b.device.peer(a.key.publicKey)!.presharedKey = Buffer.alloc(32, 9);
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "x"));
    expect(b.delivered).toEqual([]);
    expect(a.device.stats.drops.handshake_decryption_failed).toBe(1);
  });

  it("lets the responder initiate too (roles swapped)", () => {
    const { net, a } = pairOfNodes();
    const packet = ipv6Packet("fd00::2", "fd00::1", "from b");
    net.send("b", packet);
    expect(typesOnWire(net.log)).toEqual(["b:1", "a:2", "b:4"]);
    expect(a.delivered).toEqual([packet]);
  });

  it("pads transport plaintext to a multiple of 16 and trims it on receipt", () => {
    const { net, b } = pairOfNodes();
    const packet = ipv4Packet("10.0.0.1", "10.0.0.2", "abc"); // 23 bytes -> 32 padded
    net.send("a", packet);
    const data = net.log.find((e) => e.datagram[0] === MessageType.TransportData)!;
    expect(data.datagram.length).toBe(16 + 32 + 16);
    expect(b.delivered[0]).toEqual(packet);
  });

  it("learns the initiator's endpoint from the handshake and follows it when it roams", () => {
    const { net, a, b } = pairOfNodes({ bKnowsA: false });
    const bsPeer = b.device.peer(a.key.publicKey)!;
    expect(bsPeer.endpoint).toBeNull();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "hello"));
    expect(bsPeer.endpoint).toEqual(a.endpoint);

    a.endpoint = { address: "198.51.100.7", port: 40000 };
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "moved"));
    expect(bsPeer.endpoint).toEqual(a.endpoint);
    expect(bsPeer.endpointChanges).toBe(1);
    net.send("b", ipv4Packet("10.0.0.2", "10.0.0.1", "reply"));
    expect(a.delivered.at(-1)?.subarray(20).toString()).toBe("reply");
  });

  it("settles a handshake racing from both sides at once", () => {
    const { net, a, b } = pairOfNodes();
    // Both send before either hears from the other.
    a.device.handleTunnelPacket(ipv4Packet("10.0.0.1", "10.0.0.2", "a first"));
    b.device.handleTunnelPacket(ipv4Packet("10.0.0.2", "10.0.0.1", "b first"));
    net.run();
    net.advance(20_000);
    const peerOfA = a.device.peer(b.key.publicKey)!;
    const peerOfB = b.device.peer(a.key.publicKey)!;
    expect(peerOfA.keypairs.current).not.toBeNull();
    expect(peerOfB.keypairs.current).not.toBeNull();
    expect(peerOfA.keypairs.current!.sendingKey).toEqual(peerOfB.keypairs.current!.receivingKey);
    // And the tunnel works both ways afterwards.
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "after a"));
    net.send("b", ipv4Packet("10.0.0.2", "10.0.0.1", "after b"));
    expect(b.delivered.map((p) => p.subarray(20).toString())).toContain("after a");
    expect(a.delivered.map((p) => p.subarray(20).toString())).toContain("after b");
  });

  it("drops an inner packet whose source is not the sending peer's allowed IP", () => {
    const { net, b } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "ok"));
    net.send("a", ipv4Packet("10.9.9.9", "10.0.0.2", "spoofed"));
    expect(b.delivered.length).toBe(1);
    expect(b.device.stats.drops.source_not_allowed).toBe(1);
  });

  it("counts a packet with no route", () => {
    const { net, a } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.7.7.7", "nowhere"));
    expect(a.device.stats.drops.no_route).toBe(1);
    expect(net.log).toEqual([]);
  });

  it("queues packets while the handshake is in flight, bounded", () => {
    const { net, a, b } = pairOfNodes();
    net.filter = () => false; // the network is down
    for (let i = 0; i < 200; i++) net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", `p${i}`));
    expect(a.device.peer(b.key.publicKey)!.staged.length).toBe(128);
    expect(a.device.stats.drops.queue_full).toBe(72);
    net.filter = () => true;
    net.advance(6_000); // the retransmitted initiation gets through
    expect(b.delivered.length).toBe(128);
    expect(b.delivered[0]!.subarray(20).toString()).toBe("p72");
  });

  it("drops replayed transport packets", () => {
    const { net, b } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "once"));
    const data = net.log.find((e) => e.datagram[0] === MessageType.TransportData)!;
    b.device.handleDatagram(data.datagram, net.node("a").endpoint);
    expect(b.device.stats.drops.replayed).toBe(1);
    expect(b.delivered.length).toBe(1);
  });

  it("keeps no session or handshake secret in Node's shared buffer pool", () => {
    // A slice of the 8 KiB pool keeps the whole block alive: thousands of peers each holding
    // one would keep most blocks resident (the hub's memory with 5,000 sessions, issue 11).
    const { net, a, b } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "x"));
    net.send("b", ipv4Packet("10.0.0.2", "10.0.0.1", "y"));
    expect(b.delivered.length).toBe(1);
    expect(a.delivered.length).toBe(1);
    for (const [node, other] of [
      [a, b],
      [b, a],
    ] as const) {
      const peer = node.device.peer(other.key.publicKey)!;
      const keypair = peer.keypairs.current!;
      const kept = [
        keypair.sendingKey,
        keypair.receivingKey,
        peer.handshake.chainingKey,
        peer.handshake.hash,
        peer.handshake.remoteEphemeral,
        peer.handshake.latestTimestamp,
      ];
      for (const bytes of kept) expect(bytes.buffer.byteLength).toBeLessThan(Buffer.poolSize);
      // The keys were copied, not lost: both sides still agree.
      const otherKeypair = other.device.peer(node.key.publicKey)!.keypairs.current!;
      expect(keypair.sendingKey).toEqual(otherKeypair.receivingKey);
      expect(peer.handshake.chainingKey).toEqual(Buffer.alloc(32));
    }
    // A replayed initiation is still refused: the newest timestamp was kept (copied).
    const initiation = net.log.find((e) => e.datagram[0] === MessageType.HandshakeInitiation)!;
    const before = b.device.stats.drops.handshake_replay;
    b.device.handleDatagram(initiation.datagram, net.node("a").endpoint);
    expect(b.device.stats.drops.handshake_replay).toBe(before + 1);
  });

  it("removes a peer with its routes and sessions", () => {
    const { net, a, b } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "x"));
    expect(a.device.indexTable.size).toBe(1);
    expect(a.device.removePeer(b.key.publicKey)).toBe(true);
    expect(a.device.indexTable.size).toBe(0);
    expect(a.device.allowedIps.size).toBe(0);
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "y"));
    expect(a.device.stats.drops.no_route).toBe(1);
  });
});
