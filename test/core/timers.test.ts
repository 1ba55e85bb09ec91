import fc from "fast-check";
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

  it("re-armed later or cancelled (lazily, in place), fires only by its last arming", () => {
    // Against a model of what each timer is armed for: never before the deadline, at most a
    // granule after it, once per arming; a cancelled one never. Delays cross rotations (16 ×
    // 50 ms) and re-arming goes both earlier and later, as a peer's timers do per report.
    const op = fc.oneof(
      fc.record({ kind: fc.constant("arm" as const), timer: fc.nat(5), delay: fc.nat(3_000) }),
      fc.record({ kind: fc.constant("cancel" as const), timer: fc.nat(5) }),
      fc.record({ kind: fc.constant("wait" as const), ms: fc.nat(400) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        const wheel = new TimerWheel(0, 50, 16);
        let now = 0;
        const armedFor: Array<number | null> = Array.from({ length: 6 }, () => null);
        const fired: number[] = [];
        const timers = armedFor.map((_, i) => new Timer(() => fired.push(i)));
        // Plain checks rather than expect() here: this runs thousands of times per case.
        const advanceTo = (to: number) => {
          now = to;
          fired.length = 0;
          wheel.advance(now);
          for (const i of fired) {
            const deadline = armedFor[i];
            if (deadline === null || deadline === undefined || deadline > now) {
              throw new Error(`timer ${i} fired at ${now}, armed for ${deadline}`);
            }
            armedFor[i] = null;
          }
          armedFor.forEach((deadline, i) => {
            if (deadline !== null && deadline + 50 <= now) {
              throw new Error(`timer ${i} armed for ${deadline} had not fired at ${now}`);
            }
            if (timers[i]!.pending !== (deadline !== null)) {
              throw new Error(`timer ${i}: pending is ${timers[i]!.pending} at ${now}`);
            }
          });
        };
        for (const step of ops) {
          if (step.kind === "arm") {
            wheel.schedule(timers[step.timer]!, now + step.delay);
            armedFor[step.timer] = now + step.delay;
          } else if (step.kind === "cancel") {
            wheel.cancel(timers[step.timer]!);
            armedFor[step.timer] = null;
          } else {
            advanceTo(now + step.ms);
          }
        }
        // Whatever is still armed fires within a granule of its deadline, in steps of 10 ms.
        const last = Math.max(now, ...armedFor.map((d) => d ?? 0)) + 60;
        while (now < last) advanceTo(now + 10);
        expect(armedFor.every((d) => d === null)).toBe(true);
        return true;
      }),
      { numRuns: 500 },
    );
  });

  it("keeps no timer of a removed peer, though nothing is swept while the host sleeps", () => {
    // Cancelling leaves a timer in its slot until the sweep; a peer's removal must not, or
    // peers added and removed on an idle daemon (no wake, no sweep) would pile up in the wheel.
    const { net, a, b } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "data")); // timers armed on both sides
    const wheel = a.device.wheel;
    expect(wheel.held).toBeGreaterThan(0);
    const churned = Array.from({ length: 50 }, (_, i) => {
      const key = new Uint8Array(32).fill(i + 1);
      const peer = a.device.addPeer({
        publicKey: key,
        endpoint: { address: `192.0.2.${100 + i}`, port: 51820 },
        allowedIps: [],
      });
      a.device.setPersistentKeepalive(peer, 25); // arms its timers
      return key;
    });
    const withChurned = wheel.held;
    for (const key of churned) expect(a.device.removePeer(key)).toBe(true);
    expect(wheel.held).toBeLessThan(withChurned - 49);
    a.device.removePeer(b.key.publicKey);
    expect(wheel.held).toBe(0);
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

describe("timer wheel for a host that sleeps", () => {
  it("nextDueMs is at or up to a granule after the earliest deadline, and advancing to it fires", () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant("arm" as const), timer: fc.nat(7), delay: fc.nat(200_000) }),
      fc.record({ kind: fc.constant("cancel" as const), timer: fc.nat(7) }),
      fc.record({ kind: fc.constant("wait" as const), ms: fc.nat(120_000) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const wheel = new TimerWheel(0, 50, 64);
        let fired = 0;
        const timers = Array.from({ length: 8 }, () => new Timer(() => fired++));
        let now = 0;
        for (const step of ops) {
          if (step.kind === "arm") wheel.schedule(timers[step.timer]!, now + step.delay);
          else if (step.kind === "cancel") wheel.cancel(timers[step.timer]!);
          else {
            now += step.ms;
            wheel.advance(now);
          }
        }
        const pending = timers.filter((t) => t.pending);
        const due = wheel.nextDueMs();
        if (pending.length === 0) return due === Infinity;
        // Due at the earliest deadline rounded up to the granule, never before the cursor.
        const earliest = Math.min(...pending.map((t) => t.deadline));
        expect(due).toBeGreaterThanOrEqual(earliest);
        expect(due).toBeGreaterThan(now);
        expect(due - Math.max(earliest, now)).toBeLessThanOrEqual(50);
        const before = fired;
        if (earliest - 1 > now) wheel.advance(earliest - 1);
        expect(fired).toBe(before);
        wheel.advance(due); // the host's wake is never wasted
        expect(fired).toBeGreaterThan(before);
        return true;
      }),
      { numRuns: 300 },
    );
  });

  it("tells the host of every timer armed before its planned wake, and of no later one", () => {
    const wheel = new TimerWheel(0, 50, 16);
    const told: number[] = [];
    wheel.onEarlierDue = (dueMs) => told.push(dueMs);
    const a = new Timer(() => undefined);
    const b = new Timer(() => undefined);
    wheel.schedule(a, 10_000);
    expect(told).toEqual([10_000]);
    wheel.schedule(b, 20_000); // later than the planned wake: nothing to tell
    expect(told).toEqual([10_000]);
    wheel.schedule(b, 1_001); // re-armed earlier: rounded up to the granule
    expect(told).toEqual([10_000, 1_050]);
    // Re-armed into the same slot one rotation (16 × 50 ms) earlier still counts.
    wheel.schedule(a, 10_000 - 16 * 50);
    expect(told).toEqual([10_000, 1_050]); // 9,200 is after 1,050
    wheel.advance(1_050); // the host's wake: b fires
    expect(b.pending).toBe(false);
    expect(wheel.nextDueMs()).toBe(9_200);
    wheel.schedule(b, 5_000);
    expect(told).toEqual([10_000, 1_050, 5_000]);
  });

  it("a host waking only at nextDueMs fires every timer in the same granule as a ticking one", () => {
    const deadlines = [3, 70, 70, 120, 999, 5_000, 61_000, 61_020];
    const run = (sleeping: boolean): number[] => {
      const wheel = new TimerWheel(0, 50, 16);
      const firedAt: number[] = [];
      let now = 0;
      // One timer re-arms itself twice, as a retransmit does.
      let rearm = 2;
      const retry: Timer = new Timer(() => {
        firedAt.push(now);
        if (rearm-- > 0) wheel.schedule(retry, now + 5_000);
      });
      wheel.schedule(retry, 10);
      for (const deadline of deadlines)
        wheel.schedule(new Timer(() => firedAt.push(now)), deadline);
      while (now < 100_000) {
        now = sleeping ? Math.min(wheel.nextDueMs(), 100_000) : now + 50;
        wheel.advance(now);
      }
      return firedAt;
    };
    const sleeping = run(true);
    expect(sleeping).toHaveLength(deadlines.length + 3);
    expect(sleeping).toEqual(run(false));
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
