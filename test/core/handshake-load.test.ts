// When a hub asks for cookies: handshake work that came to nothing is the evidence of load,
// not how many messages come. A flood of initiations with a valid mac1 (the hub's public key
// is all it takes) but unknown static keys puts the hub under load after the threshold; a
// fleet's genuine initiations, as many at once, do not.
import { describe, expect, it } from "vitest";
import { Device, WASTED_HANDSHAKES_PER_SECOND } from "../../src/core/device.js";
import type { Endpoint } from "../../src/core/endpoint.js";
import { MessageType } from "../../src/core/messages.js";
import { sendInitiation } from "../../src/core/send.js";
import { FakeClock, keyFromSeed, seededRandom } from "../support/index.js";

/** More than the threshold: enough to put the hub under load if they count. */
const BURST = 2 * WASTED_HANDSHAKES_PER_SECOND + 88;
const HUB_ENDPOINT: Endpoint = { address: "192.0.2.1", port: 51820 };

function hubDevice(clock: FakeClock): Device {
  // As the daemon sets it up beside its handshake lane: no rate threshold, only this rule.
  return new Device({
    clock,
    random: seededRandom("hub"),
    privateKey: keyFromSeed("hub").raw,
    underLoadHandshakesPerSecond: Infinity,
  });
}

interface Initiator {
  device: Device;
  endpoint: Endpoint;
}

function initiator(clock: FakeClock, name: string, index: number): Initiator {
  const device = new Device({
    clock,
    random: seededRandom(`initiator:${name}`),
    privateKey: keyFromSeed(name).raw,
  });
  device.addPeer({ publicKey: keyFromSeed("hub").publicKey, endpoint: HUB_ENDPOINT });
  const endpoint = { address: `10.${(index >> 8) & 255}.${index & 255}.2`, port: 40000 };
  return { device, endpoint };
}

/** A fresh initiation (valid mac1, and mac2 once the initiator holds a cookie). */
function initiationOf(initiator: Initiator): Buffer {
  const peer = initiator.device.peer(keyFromSeed("hub").publicKey)!;
  peer.lastSentHandshakeAt = -Infinity;
  initiator.device.actions.clear();
  sendInitiation(initiator.device, peer, false);
  const message = initiator.device.actions.datagrams.find(
    (d) => d[0] === MessageType.HandshakeInitiation,
  );
  initiator.device.actions.clear();
  return Buffer.from(message!);
}

/** Hands `message` to the hub; returns the types of what it sent back. */
function deliver(hub: Device, message: Uint8Array, from: Endpoint): number[] {
  hub.actions.clear();
  hub.handleDatagram(message, from);
  const types = hub.actions.datagrams.map((d) => d[0]!);
  hub.actions.clear();
  return types;
}

describe("the handshake load rule", () => {
  it("puts a hub under load once a burst of unknown-key initiations passes the threshold", () => {
    const clock = new FakeClock();
    const hub = hubDevice(clock);
    const flood = Array.from({ length: 300 }, (_, i) => initiator(clock, `stranger${i}`, i));
    const messages = flood.map(initiationOf);
    const replies: number[][] = [];
    for (let i = 0; i < BURST; i++) {
      const n = i % flood.length;
      replies.push(deliver(hub, messages[n]!, flood[n]!.endpoint));
      clock.advance(1); // a flood of 1,000 a second, well above the threshold's rate
    }
    // Exactly the threshold went through Diffie-Hellman for nothing; the next one tipped the
    // verdict, and every later message was answered with a cookie reply instead.
    const wasted = WASTED_HANDSHAKES_PER_SECOND + 1;
    expect(hub.stats.drops.unknown_peer).toBe(wasted);
    expect(hub.underLoad).toBe(true);
    expect(replies.slice(0, wasted).every((types) => types.length === 0)).toBe(true);
    expect(replies.slice(wasted).every((t) => t.length === 1 && t[0] === 3)).toBe(true);
    expect(hub.stats.drops.cookie_required).toBe(BURST - wasted);

    // While the flood goes on, what is turned away keeps the verdict: no more Diffie-Hellman.
    for (let i = 0; i < 3_000; i++) {
      const n = i % flood.length;
      deliver(hub, messages[n]!, flood[n]!.endpoint);
      clock.advance(1);
    }
    expect(hub.stats.drops.unknown_peer).toBe(wasted);
    expect(hub.underLoad).toBe(true);
    // A second after it ends, the verdict lapses.
    clock.advance(1_000);
    expect(hub.underLoad).toBe(false);
  });

  it("does not for the same burst of genuine initiations from known peers", () => {
    const clock = new FakeClock();
    const hub = hubDevice(clock);
    const fleet = Array.from({ length: BURST }, (_, i) => initiator(clock, `edge${i}`, i));
    for (let i = 0; i < fleet.length; i++)
      hub.addPeer({ publicKey: keyFromSeed(`edge${i}`).publicKey });
    const messages = fleet.map(initiationOf);
    let responses = 0;
    for (let i = 0; i < fleet.length; i++) {
      const types = deliver(hub, messages[i]!, fleet[i]!.endpoint);
      if (types.length === 1 && types[0] === MessageType.HandshakeResponse) responses++;
    }
    expect(hub.underLoad).toBe(false);
    expect(responses).toBe(BURST);
    expect(hub.stats.cookieRepliesSent).toBe(0);
  });

  it("counts a captured initiation replayed as wasted: its timestamp is stale", () => {
    const clock = new FakeClock();
    const hub = hubDevice(clock);
    const edge = initiator(clock, "edge", 1);
    hub.addPeer({ publicKey: keyFromSeed("edge").publicKey });
    const captured = initiationOf(edge);
    expect(deliver(hub, captured, edge.endpoint)).toEqual([MessageType.HandshakeResponse]);
    for (let i = 0; i < WASTED_HANDSHAKES_PER_SECOND; i++) {
      clock.advance(1);
      deliver(hub, captured, { address: "203.0.113.9", port: 1000 + i });
    }
    expect(hub.stats.drops.handshake_replay).toBe(WASTED_HANDSHAKES_PER_SECOND);
    expect(hub.underLoad).toBe(false);
    clock.advance(1);
    deliver(hub, captured, { address: "203.0.113.9", port: 999 });
    expect(hub.underLoad).toBe(true);
    // The edge itself, proving its address with the cookie, still gets in.
    const cookieReply = deliver(hub, initiationOf(edge), edge.endpoint);
    expect(cookieReply).toEqual([MessageType.CookieReply]);
  });

  it("does not count a wasted message a second old: the threshold is a rate", () => {
    const clock = new FakeClock();
    const hub = hubDevice(clock);
    const stranger = initiator(clock, "stranger", 1);
    const message = initiationOf(stranger);
    // Just below the threshold each second, for five seconds.
    for (let second = 0; second < 5; second++) {
      for (let i = 0; i < WASTED_HANDSHAKES_PER_SECOND; i++) {
        deliver(hub, message, stranger.endpoint);
        clock.advance(1000 / WASTED_HANDSHAKES_PER_SECOND);
      }
    }
    expect(hub.stats.drops.unknown_peer).toBe(5 * WASTED_HANDSHAKES_PER_SECOND);
    expect(hub.underLoad).toBe(false);
  });
});
