// The handshake lane (native/lane.c) over loopback: a thread reads the handshake socket of a
// real socket pair through the cookie gate. A bad mac1 is dropped, a valid one is handed to the
// JS thread with its sender, and under load the sender gets a cookie reply that the core's
// initiator side accepts, but only a few a second per sender; the counters say so. Load is how
// long passed messages wait: a burst is handed over whole, cookies come once the oldest has
// waited two seconds, and what waited past Rekey-Timeout is dropped as stale.
import { createSocket, type Socket } from "node:dgram";
import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { CookieChecker, CookieMaker } from "../../src/core/cookie.js";
import { PrivateKey, systemRandom } from "../../src/core/crypto.js";
import { MessageType } from "../../src/core/messages.js";
import {
  type HandshakeLane,
  LANE_MESSAGE_ROOM,
  PacketBatch,
  UdpBatchSocket,
  UdpSocketPair,
  nativeAvailable,
  readEndpoint,
  writeEndpoint,
} from "../../src/host/native/index.js";
import { waitFor } from "../support/netns.js";

const cleanups: Array<() => void> = [];
afterEach(() => {
  while (cleanups.length > 0) cleanups.pop()!();
});

/** The time the cookie secrets are made for and the initiations are stamped with. */
const NOW = 5_000;

interface LaneUnderTest {
  pair: UdpSocketPair;
  lane: HandshakeLane;
  responder: PrivateKey;
  checker: CookieChecker;
  /** How many times the lane has told the JS side. */
  wakes: { count: number };
}

/**
 * A lane on the handshake socket of a new loopback socket pair, gated by a fresh responder's
 * cookie checker; `undefined` where the kernel has no steering (nothing to read on a lane).
 */
function startLane(underLoad: boolean): LaneUnderTest | undefined {
  const pair = UdpSocketPair.open({ host: "127.0.0.1" });
  cleanups.push(() => pair.close());
  if (!pair.handshake) return undefined;
  const responder = PrivateKey.generate();
  const checker = new CookieChecker(systemRandom);
  checker.setPublicKey(responder.publicKey);
  const wakes = { count: 0 };
  const lane = pair.handshake.startLane(() => wakes.count++);
  lane.configure(checker.batchKeys(NOW), underLoad);
  return { pair, lane, responder, checker, wakes };
}

/** A plain loopback UDP socket and the replies it receives. */
async function replyingSender(): Promise<{ sender: Socket; replies: Buffer[] }> {
  const sender: Socket = createSocket("udp4");
  cleanups.push(() => sender.close());
  await new Promise<void>((resolve) => sender.bind(0, "127.0.0.1", resolve));
  const replies: Buffer[] = [];
  sender.on("message", (message) => replies.push(message));
  return { sender, replies };
}

function initiation(maker: CookieMaker, now: number): Buffer {
  const bytes = randomBytes(148);
  bytes.writeUInt32LE(MessageType.HandshakeInitiation, 0);
  maker.addMacs(bytes, MessageType.HandshakeInitiation, now);
  return bytes;
}

/** A sender that sends `messages` to `port` in one sendmmsg call (UDP GSO where it can). */
function batchSender(port: number, messages: Buffer[]): UdpBatchSocket {
  const socket = UdpBatchSocket.open({ host: "127.0.0.1" });
  cleanups.push(() => socket.close());
  const batch = new PacketBatch(messages.length, { slotSize: 160 });
  messages.forEach((message, i) => {
    batch.setPacket(i, message);
    writeEndpoint(batch.endpoints, i, { address: "127.0.0.1", port });
  });
  expect(socket.sendBatch(batch, messages.length)).toBe(messages.length);
  return socket;
}

describe.skipIf(!nativeAvailable())("handshake lane", () => {
  it("drops bad mac1s, hands valid ones over, answers with cookies under load", async () => {
    const started = startLane(false);
    if (!started) return;
    const { pair, lane, responder, checker, wakes } = started;
    const now = NOW;

    const { sender, replies } = await replyingSender();
    const maker = new CookieMaker(responder.publicKey);
    const good = initiation(maker, now);
    const bad = Buffer.from(good);
    bad[10]! ^= 1;
    sender.send(bad, pair.port, "127.0.0.1");
    sender.send(good, pair.port, "127.0.0.1");
    await waitFor("the valid initiation handed over", () => wakes.count > 0, 5_000);
    const batch = new PacketBatch(4, { slotSize: LANE_MESSAGE_ROOM });
    expect(lane.take(batch, 4)).toBe(1);
    expect(batch.packet(0)).toEqual(good);
    expect(readEndpoint(batch.endpoints, 0)).toEqual({
      address: "127.0.0.1",
      port: sender.address().port,
    });
    expect(lane.stats()).toMatchObject({ received: 2, badMac1: 1, cookieReplies: 0, waiting: 0 });

    lane.configure(checker.batchKeys(now), true);
    const next = initiation(maker, now);
    sender.send(next, pair.port, "127.0.0.1");
    await waitFor("a cookie reply", () => replies.length > 0, 5_000);
    expect(replies[0]!.length).toBe(64);
    expect(maker.consumeReply(replies[0]!, now)).toBe(true);
    expect(lane.stats()).toMatchObject({ received: 3, cookieReplies: 1, waiting: 0 });
    // A sender that ignores its cookies gets a few replies a second, not one per message.
    const ignorer = new CookieMaker(responder.publicKey);
    for (let i = 0; i < 12; i++) sender.send(initiation(ignorer, now), pair.port, "127.0.0.1");
    await waitFor("the twelve judged", () => lane.stats().received === 15, 5_000);
    const { cookieReplies, overBudget } = lane.stats();
    expect(cookieReplies + overBudget).toBe(13);
    // 13 within at most two seconds' budgets of 5 each.
    expect(overBudget).toBeGreaterThanOrEqual(3);
    await new Promise((resolve) => setTimeout(resolve, 1_100)); // a new second, a new budget
    // With the cookie, the retry is handed over even under load.
    sender.send(initiation(maker, now), pair.port, "127.0.0.1");
    await waitFor("the retry handed over", () => lane.stats().waiting === 1, 5_000);
    expect(lane.take(batch, 4)).toBe(1);

    // Stopped with the socket (close stops the lane first), twice is harmless.
    pair.close();
    pair.close();
    expect(lane.take(batch, 4)).toBe(0);
  });

  it("cuts a run the kernel coalesced into its datagrams, each judged", async () => {
    const started = startLane(false);
    if (!started) return;
    const { pair, lane, responder, wakes } = started;
    const now = NOW;
    const maker = new CookieMaker(responder.publicKey);
    // 40 equal-sized initiations in one send, every other one with a broken mac1.
    const messages = Array.from({ length: 40 }, (_, i) => {
      const message = initiation(maker, now);
      if (i % 2 === 1) message[20]! ^= 1;
      return message;
    });
    const sender = batchSender(pair.port, messages);
    await waitFor("the 40 judged", () => lane.stats().received === 40, 5_000);
    const stats = lane.stats();
    expect(stats).toMatchObject({ badMac1: 20, waiting: 20, overBudget: 0 });
    // Sent with UDP GSO, loopback keeps the run whole, and the lane reads it as one.
    if (sender.gso) expect(stats.coalesced).toBeGreaterThan(0);
    const batch = new PacketBatch(32, { slotSize: LANE_MESSAGE_ROOM });
    expect(lane.take(batch, 32)).toBe(20);
    for (let i = 0; i < 20; i++) {
      expect(batch.packet(i)).toEqual(messages[2 * i]);
      expect(readEndpoint(batch.endpoints, i)).toEqual({
        address: "127.0.0.1",
        port: sender.port,
      });
    }
    // The wake-up is posted after the messages are counted: wait for it rather than race it.
    await waitFor("the JS side told", () => wakes.count > 0, 5_000);
  });

  it("under load, looks at only a share of one source's messages a second", async () => {
    const started = startLane(true);
    if (!started) return;
    const { pair, lane, responder } = started;
    const now = NOW;
    const flooderMaker = new CookieMaker(responder.publicKey);
    // 200 from one source, valid mac1 and no cookie: the first 64 of a second are looked at
    // (5 of them answered), the rest dropped unread.
    batchSender(
      pair.port,
      Array.from({ length: 200 }, () => initiation(flooderMaker, now)),
    );
    await waitFor("the 200 judged", () => lane.stats().received === 200, 5_000);
    const flooded = lane.stats();
    expect(flooded.cookieReplies + flooded.overBudget).toBe(200);
    // Within at most two seconds' shares of 64.
    expect(flooded.overBudget).toBeGreaterThanOrEqual(200 - 2 * 64);
    expect(flooded.cookieReplies).toBeLessThanOrEqual(2 * 5);
    // Another source is not held back by the first one's flood: it gets its cookie reply.
    const { sender: joiner, replies } = await replyingSender();
    const joinerMaker = new CookieMaker(responder.publicKey);
    joiner.send(initiation(joinerMaker, now), pair.port, "127.0.0.1");
    await waitFor("the joiner's cookie reply", () => replies.length > 0, 5_000);
    expect(joinerMaker.consumeReply(replies[0]!, now)).toBe(true);
  });

  it("hands a burst over without cookies, asks for them once messages wait, drops the stale", async () => {
    const started = startLane(false);
    if (!started) return;
    const { pair, lane, responder } = started;
    const now = NOW;
    const { sender, replies } = await replyingSender();
    const maker = new CookieMaker(responder.publicKey);

    // A fleet starting at once: more in a fraction of a second than a rate threshold of 1,000
    // a second would let through, in chunks the socket's buffer holds. None is taken yet.
    const burst = 1_200;
    const burstStart = performance.now();
    for (let sent = 0; sent < burst; sent += 100) {
      for (let i = 0; i < 100; i++) sender.send(initiation(maker, now), pair.port, "127.0.0.1");
      await waitFor("the chunk read", () => lane.stats().received === sent + 100, 5_000);
    }
    const burstEnd = performance.now();
    expect(lane.stats()).toMatchObject({ waiting: burst, cookieReplies: 0, kernelDrops: 0 });
    expect(replies).toEqual([]);

    // Once the oldest has waited past the target (2 s), a message without a cookie gets one.
    await new Promise((resolve) => setTimeout(resolve, 2_100 - (performance.now() - burstStart)));
    sender.send(initiation(new CookieMaker(responder.publicKey), now), pair.port, "127.0.0.1");
    await waitFor("a cookie reply", () => replies.length === 1, 5_000);
    expect(lane.stats()).toMatchObject({ waiting: burst, cookieReplies: 1 });

    // Past Rekey-Timeout (5 s) every one of the burst is worth nothing: dropped, not handed over.
    await new Promise((resolve) => setTimeout(resolve, 5_200 - (performance.now() - burstEnd)));
    const batch = new PacketBatch(16, { slotSize: LANE_MESSAGE_ROOM });
    expect(lane.take(batch, 16)).toBe(0);
    expect(lane.stats()).toMatchObject({ waiting: 0, stale: burst });
  }, 20_000);

  it("wakes a JS side that stopped polling at the next datagram, once, bad mac1 or not", async () => {
    const started = startLane(false);
    if (!started) return;
    const { pair, lane, wakes } = started;
    const { sender } = await replyingSender();
    const junk = randomBytes(148);
    junk.writeUInt32LE(MessageType.HandshakeInitiation, 0); // a bad mac1: nothing passes

    // Not asked: a dropped message tells nobody.
    sender.send(junk, pair.port, "127.0.0.1");
    await waitFor("the first judged", () => lane.stats().received === 1, 5_000);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(wakes.count).toBe(0);

    // Asked: told at the next datagram though it is dropped too, and only once.
    expect(lane.wakeOnActivity()).toBe(1);
    sender.send(junk, pair.port, "127.0.0.1");
    await waitFor("the wake", () => wakes.count === 1, 5_000);
    sender.send(junk, pair.port, "127.0.0.1");
    await waitFor("the third judged", () => lane.stats().received === 3, 5_000);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(wakes.count).toBe(1);
    expect(lane.stats()).toMatchObject({ received: 3, badMac1: 3, waiting: 0 });
  });
});
