import { describe, expect, it } from "vitest";
import { MessageType } from "../../src/core/messages.js";
import { Timer, TimerWheel } from "../../src/core/timers.js";
import { ipv4Packet, pairOfNodes } from "../support/index.js";

const count = (log: Array<{ from: string; datagram: Buffer }>, from: string, type: number) =>
  log.filter((e) => e.from === from && e.datagram[0] === type).length;

describe("timer wheel", () => {
  it("fires at or after the deadline, never before, and at most one granule late", () => {
    const wheel = new TimerWheel(0, 50, 16);
    const fired: number[] = [];
    let now = 0;
    for (const deadline of [1, 49, 50, 51, 777, 5_000]) {
      const timer = new Timer(() => fired.push(now - deadline));
      wheel.schedule(timer, deadline);
    }
    for (now = 0; now <= 6_000; now += 7) wheel.advance(now);
    expect(fired.length).toBe(6);
    for (const lateness of fired) {
      expect(lateness).toBeGreaterThanOrEqual(0);
      expect(lateness).toBeLessThan(50 + 7);
    }
  });

  it("cancels and re-arms", () => {
    const wheel = new TimerWheel(0, 50, 16);
    let fired = 0;
    const timer = new Timer(() => fired++);
    wheel.schedule(timer, 100);
    wheel.cancel(timer);
    wheel.advance(1_000);
    expect(fired).toBe(0);
    wheel.schedule(timer, 1_500);
    wheel.schedule(timer, 2_500); // re-arming moves it
    wheel.advance(2_000);
    expect(fired).toBe(0);
    wheel.advance(2_550);
    expect(fired).toBe(1);
    expect(timer.pending).toBe(false);
  });

  it("survives a jump of the clock past a whole rotation", () => {
    const wheel = new TimerWheel(0, 50, 16);
    let fired = 0;
    wheel.schedule(new Timer(() => fired++), 10_000);
    wheel.advance(5_000);
    expect(fired).toBe(0);
    wheel.advance(1_000_000);
    expect(fired).toBe(1);
  });
});

describe("WireGuard timers on a fake clock", () => {
  it("rekeys after Rekey-After-Time (120 s) when the initiator sends", () => {
    const { net, a } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "first"));
    expect(count(net.log, "a", MessageType.HandshakeInitiation)).toBe(1);
    // Keep traffic flowing both ways so no other timer asks for a handshake.
    for (let t = 0; t < 119; t++) {
      net.advance(1_000);
      net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", `t${t}`));
      net.send("b", ipv4Packet("10.0.0.2", "10.0.0.1", `r${t}`));
    }
    expect(count(net.log, "a", MessageType.HandshakeInitiation)).toBe(1);
    net.advance(1_000);
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "after 120 s"));
    expect(count(net.log, "a", MessageType.HandshakeInitiation)).toBe(2);
    expect(a.device.peer(net.node("b").key.publicKey)!.handshakesCompleted).toBe(2);
  });

  it("retransmits the initiation every ~5 s and gives up after Rekey-Attempt-Time (90 s)", () => {
    const { net, a, b } = pairOfNodes();
    net.filter = () => false; // b never answers
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "lost"));
    const sentAt: number[] = [net.clock.now()];
    let seen = 1;
    for (let t = 0; t < 200_000; t += 50) {
      net.advance(50);
      const now = count(net.log, "a", MessageType.HandshakeInitiation);
      if (now > seen) sentAt.push(net.clock.now());
      seen = now;
    }
    const gaps = sentAt.slice(1).map((t, i) => t - sentAt[i]!);
    for (const gap of gaps) {
      expect(gap).toBeGreaterThanOrEqual(5_000);
      expect(gap).toBeLessThanOrEqual(5_000 + 333 + 50);
    }
    // One initiation, then retries until 90 s of attempts: 18 retransmissions.
    expect(sentAt.length).toBe(19);
    expect(sentAt.at(-1)! - sentAt[0]!).toBeGreaterThanOrEqual(90_000);
    expect(sentAt.at(-1)! - sentAt[0]!).toBeLessThan(90_000 + 18 * 383);
    // The staged packet was dropped when the attempts ran out.
    expect(a.device.peer(b.key.publicKey)!.staged.length).toBe(0);
    expect(a.device.stats.drops.handshake_abandoned).toBe(1);
  });

  it("sends a keepalive after Keepalive-Timeout (10 s) of receive-only traffic", () => {
    const { net } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "data"));
    const before = net.log.length;
    net.advance(9_900);
    expect(net.log.length).toBe(before);
    net.advance(200);
    const after = net.log.slice(before);
    expect(after.map((e) => [e.from, e.datagram.length])).toEqual([["b", 32]]);
  });

  it("starts a new handshake when data sent gets no answer within 15 s", () => {
    const { net } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "data"));
    net.filter = (from) => from !== "b"; // b's answers are lost
    net.advance(14_900);
    expect(count(net.log, "a", MessageType.HandshakeInitiation)).toBe(1);
    net.advance(500);
    expect(count(net.log, "a", MessageType.HandshakeInitiation)).toBe(2);
  });

  it("zeroes all key material after 3 × Reject-After-Time (540 s) without a new session", () => {
    const { net, a, b } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "data"));
    const peer = a.device.peer(b.key.publicKey)!;
    net.filter = () => false; // everything is lost from now on
    net.advance(539_000, 500);
    expect(peer.keypairs.current).not.toBeNull();
    net.advance(1_500, 500);
    expect(peer.keypairs.current).toBeNull();
    expect(a.device.indexTable.size).toBe(0);
  });

  it("sends persistent keepalives at the configured interval, and one at once when enabled", () => {
    const { net, a, b } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "data"));
    const peer = a.device.peer(b.key.publicKey)!;
    net.advance(11_000); // b's passive keepalive goes by first
    const start = net.log.length;
    a.device.setPersistentKeepalive(peer, 25);
    net.run();
    expect(net.log.slice(start).map((e) => [e.from, e.datagram.length])).toEqual([["a", 32]]);
    net.advance(24_900);
    expect(count(net.log.slice(start + 1), "a", MessageType.TransportData)).toBe(0);
    net.advance(200);
    expect(count(net.log.slice(start + 1), "a", MessageType.TransportData)).toBe(1);
    net.advance(25_000);
    expect(count(net.log.slice(start + 1), "a", MessageType.TransportData)).toBe(2);
  });

  it("drops data on a session older than Reject-After-Time (180 s)", () => {
    const { net, a, b } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "data"));
    const data = net.log.find((e) => e.datagram[0] === MessageType.TransportData)!;
    net.filter = () => false;
    net.advance(180_000, 1_000);
    // Re-deliver a forged-in-time copy: the keypair is too old to accept anything.
    const peer = b.device.peer(a.key.publicKey)!;
    expect(peer.keypairs.current).not.toBeNull();
    b.device.handleDatagram(data.datagram, a.endpoint);
    expect(b.device.stats.drops.key_expired).toBe(1);
  });
});
