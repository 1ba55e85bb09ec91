// A data path outside the core (the daemon's native threads) opens and seals transport data
// itself and reports per peer at most every 100 ms: what it received and sent since the last
// report (src/core/receive.ts receivedElsewhere, src/core/send.ts sentElsewhere). The daemon
// refills one report object of each kind for every peer, and the peer's timers are re-armed
// lazily in the wheel. Here node b of a pair gets such reports on a fake clock, through
// steady traffic, quiet periods longer than a rotation of the wheel, and bursts; its counters
// must be the sums of the reports and its timers must do what they would per packet.
import { describe, expect, it } from "vitest";
import { MessageType } from "../../src/core/messages.js";
import { receivedElsewhere, type ReceivedElsewhere } from "../../src/core/receive.js";
import { sentElsewhere, type SentElsewhere } from "../../src/core/send.js";
import { ipv4Packet, pairOfNodes } from "../support/index.js";

describe("reports of a data path outside the core", () => {
  it("counters add up and the timers act as per packet across steady traffic, quiet periods and bursts", () => {
    const { net, a, b } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "hello"));
    net.advance(11_000); // b's keepalive answers a's data; nothing else is pending
    const peer = b.device.peer(a.key.publicKey)!;
    expect(peer.keypairs.current).not.toBeNull();

    const fromB = (type: number, length?: number) =>
      net.log.filter(
        (e) =>
          e.from === "b" &&
          e.datagram[0] === type &&
          (length === undefined || e.datagram.length === length),
      ).length;
    const keepalives = () => fromB(MessageType.TransportData, 32);
    const initiations = () => fromB(MessageType.HandshakeInitiation);

    // One object of each kind, refilled for every report, as the daemon does.
    const received: ReceivedElsewhere = {
      authenticated: 0,
      data: 0,
      rxBytes: 0,
      rxPackets: 0,
      rxPayloadBytes: 0,
      keepalives: 0,
      source: a.endpoint,
    };
    const sent: SentElsewhere = { txPackets: 0, txBytes: 0, txPayloadBytes: 0 };
    const report = (rxData: number, rxKeepalives: number, txData: number) => {
      received.authenticated = rxData + rxKeepalives;
      received.data = rxData;
      received.rxBytes = rxData * 128 + rxKeepalives * 32;
      received.rxPackets = rxData;
      received.rxPayloadBytes = rxData * 84;
      received.keepalives = rxKeepalives;
      receivedElsewhere(b.device, peer, received);
      sent.txPackets = txData;
      sent.txBytes = txData * 128;
      sent.txPayloadBytes = txData * 84;
      sentElsewhere(b.device, peer, sent);
      net.run();
    };
    const before = {
      rxBytes: peer.rxBytes,
      txBytes: peer.txBytes,
      rxPackets: peer.rxPackets,
      txPackets: peer.txPackets,
      keepalivesReceived: peer.keepalivesReceived,
      keepalives: keepalives(),
      initiations: initiations(),
    };

    // Steady: an echo in and its answer out each second, reported every 100 ms, for 30 s;
    // then three quiet periods of 14 s (each longer than a quarter of the wheel's rotation,
    // together more than a rotation of 51.2 s) each followed by a second of reports, one of
    // them with a keepalive received. Per packet nothing would fire: every data packet sent
    // is answered within 15 s, every one received answered at once.
    let reports = 0;
    for (let t = 0; t < 30_000; t += 100) {
      if (t % 1_000 === 0) {
        report(1, 0, 1);
        reports++;
      }
      net.advance(100);
    }
    for (const quietMs of [14_000, 14_000, 14_000]) {
      net.advance(quietMs);
      report(3, 1, 3);
      net.advance(1_000);
    }
    expect(keepalives()).toBe(before.keepalives);
    expect(initiations()).toBe(before.initiations);
    expect(peer.rxPackets - before.rxPackets).toBe(reports + 9);
    expect(peer.txPackets - before.txPackets).toBe(reports + 9);
    expect(peer.rxBytes - before.rxBytes).toBe((reports + 9) * 128 + 3 * 32);
    expect(peer.txBytes - before.txBytes).toBe((reports + 9) * 128);
    expect(peer.keepalivesReceived - before.keepalivesReceived).toBe(3);

    // The last report's answer went out; the new-handshake timer it armed is cancelled by a
    // received burst with no answer: b owes a keepalive 10 s later (Keepalive-Timeout), and
    // only one.
    report(50, 0, 0);
    net.advance(9_900);
    expect(keepalives()).toBe(before.keepalives);
    net.advance(200);
    expect(keepalives()).toBe(before.keepalives + 1);
    net.advance(20_000);
    expect(keepalives()).toBe(before.keepalives + 1);
    expect(initiations()).toBe(before.initiations);

    // A burst sent and never answered: a new handshake 15 s later (Keepalive-Timeout +
    // Rekey-Timeout, plus up to 333 ms of jitter), not before.
    net.filter = (from) => from !== "a"; // a's answers to that handshake are lost
    report(0, 0, 20);
    net.advance(14_900);
    expect(initiations()).toBe(before.initiations);
    net.advance(500);
    expect(initiations()).toBe(before.initiations + 1);
  });
});
