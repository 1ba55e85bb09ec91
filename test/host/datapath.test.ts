// The daemon's data path without root: two daemons over in-memory TUN devices and UDP
// sockets (test/support/fake-io.ts), sealing and opening with the real native AEAD in batches.
// The namespace tests (daemon-interop, interop-wireguard-go) stay the acceptance layer.
import { afterEach, describe, expect, it } from "vitest";
import type { Endpoint } from "../../src/core/endpoint.js";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import {
  DATA_HEADER_LENGTH,
  INITIATION_LENGTH,
  MessageType,
  isTransportData,
} from "../../src/core/messages.js";
import { parseConfig } from "../../src/host/config.js";
import { Daemon } from "../../src/host/daemon.js";
import { createLogger } from "../../src/host/log.js";
import { nativeLoadError } from "../../src/host/native/index.js";
import { FakeNetwork, FakeTun } from "../support/fake-io.js";
import { ipv4Packet } from "../support/index.js";
import { waitFor } from "../support/netns.js";

const addonMissing = nativeLoadError();
const skipReason = addonMissing ? `needs the native addon (${addonMissing.message})` : null;
if (skipReason) console.warn(`data path tests skipped: ${skipReason}`);

const A: Endpoint = { address: "192.0.2.1", port: 51820 };
const B: Endpoint = { address: "192.0.2.2", port: 51820 };

interface Side {
  daemon: Daemon;
  tun: FakeTun;
}

const running: Daemon[] = [];
afterEach(async () => {
  for (const daemon of running.splice(0)) await daemon.stop();
});

async function twoDaemons(options: { receiveQueue?: number } = {}): Promise<{
  network: FakeNetwork;
  a: Side;
  b: Side;
}> {
  const network = new FakeNetwork();
  const keyA = generatePrivateKey();
  const keyB = generatePrivateKey();
  const logger = createLogger({ level: "error", write: () => {} });
  const config = (key: string, port: number, peerKey: string, peerIp: string, peer: Endpoint) =>
    parseConfig(
      [
        "[Interface]",
        `PrivateKey = ${key}`,
        `ListenPort = ${port}`,
        "[Peer]",
        `PublicKey = ${publicKeyOf(peerKey)}`,
        `AllowedIPs = ${peerIp}/32`,
        `Endpoint = ${peer.address}:${peer.port}`,
      ].join("\n"),
      "fake.conf",
    );
  const start = async (
    me: Endpoint,
    key: string,
    peerKey: string,
    peerIp: string,
    peer: Endpoint,
  ) => {
    const tun = new FakeTun();
    const daemon = await Daemon.startDataPath({
      tun,
      openSocket: network.opener(me.address, options),
      config: config(key, me.port, peerKey, peerIp, peer),
      logger,
    });
    running.push(daemon);
    return { daemon, tun };
  };
  const a = await start(A, keyA, keyB, "10.0.0.2", B);
  const b = await start(B, keyB, keyA, "10.0.0.1", A);
  return { network, a, b };
}

const payloadsOf = (packets: Buffer[]) => packets.map((packet) => packet.subarray(20).toString());

describe.skipIf(skipReason !== null)("the data path over in-memory devices", () => {
  it("two daemons ping each other: handshake, then sealed data both ways", async () => {
    const { a, b } = await twoDaemons();
    a.tun.inject(ipv4Packet("10.0.0.1", "10.0.0.2", "ping"));
    await waitFor("the ping at b", () => b.tun.written.length === 1);
    expect(payloadsOf(b.tun.written)).toEqual(["ping"]);
    b.tun.inject(ipv4Packet("10.0.0.2", "10.0.0.1", "pong"));
    await waitFor("the pong at a", () => a.tun.written.length === 1);
    expect(payloadsOf(a.tun.written)).toEqual(["pong"]);
    expect(a.daemon.device.stats.handshakesCompleted).toBe(1);
    expect(b.daemon.device.stats.handshakesCompleted).toBe(1);
    expect(a.daemon.device.stats.totalDrops).toBe(0);
    expect(b.daemon.device.stats.totalDrops).toBe(0);
  });

  it("a batch of 100 packets each way arrives whole and in order, batched", async () => {
    const { network, a, b } = await twoDaemons();
    a.tun.inject(ipv4Packet("10.0.0.1", "10.0.0.2", "hello"));
    await waitFor("the session", () => b.tun.written.length === 1);
    let sealedData = 0;
    network.tap = (datagram) => {
      if (isTransportData(datagram, 0, datagram.length)) sealedData++;
      return true;
    };
    const toB = Array.from({ length: 100 }, (_, i) => `a->b ${i} ${"x".repeat(i * 13)}`);
    const toA = Array.from({ length: 100 }, (_, i) => `b->a ${i} ${"y".repeat(1300 - i * 13)}`);
    a.tun.inject(...toB.map((text) => ipv4Packet("10.0.0.1", "10.0.0.2", text)));
    b.tun.inject(...toA.map((text) => ipv4Packet("10.0.0.2", "10.0.0.1", text)));
    await waitFor("100 packets each way", () => {
      return b.tun.written.length === 101 && a.tun.written.length === 100;
    });
    expect(payloadsOf(b.tun.written.slice(1))).toEqual(toB);
    expect(payloadsOf(a.tun.written)).toEqual(toA);
    expect(sealedData).toBe(200);
    // One TUN read took all 100, and the receiving side opened them in batches too.
    expect(a.tun.readSizes.at(-1)).toBe(100);
    expect(b.tun.readSizes.at(-1)).toBe(100);
    expect(a.daemon.observations.udpReceive.counts.slice(-2).reduce((x, y) => x + y)).toBe(1);
    expect(a.daemon.device.stats.totalDrops + b.daemon.device.stats.totalDrops).toBe(0);
  });

  it("replayed, forged and malformed datagrams are dropped and counted", async () => {
    const { network, a, b } = await twoDaemons();
    let captured: Buffer | null = null;
    network.tap = (datagram, from) => {
      if (from.port === A.port && from.address === A.address && !captured) {
        if (isTransportData(datagram, 0, datagram.length)) captured = Buffer.from(datagram);
      }
      return true;
    };
    a.tun.inject(ipv4Packet("10.0.0.1", "10.0.0.2", "once"));
    await waitFor("the packet at b", () => b.tun.written.length === 1);
    expect(captured).not.toBeNull();
    const drops = b.daemon.device.stats.drops;

    network.inject(captured!, A, B);
    await waitFor("the replay counted", () => drops.replayed === 1);

    const forged = Buffer.from(captured!);
    forged[DATA_HEADER_LENGTH + 3]! ^= 0x40;
    // A fresh counter, so it is the tag that fails, not the replay window.
    forged.writeUInt32LE(1000, 8);
    network.inject(forged, A, B);
    await waitFor("the forgery counted", () => drops.decryption_failed === 1);

    const unknownIndex = Buffer.from(captured!);
    unknownIndex.writeUInt32LE((unknownIndex.readUInt32LE(4) ^ 0xffffffff) >>> 0, 4);
    network.inject(unknownIndex, A, B);
    network.inject(Buffer.from([MessageType.TransportData, 0, 0]), A, B);
    network.inject(Buffer.alloc(64, 9), A, B);
    await waitFor("the garbage counted", () => {
      return drops.unknown_index === 1 && drops.bad_length === 1 && drops.unknown_type === 1;
    });
    expect(b.tun.written).toHaveLength(1);
    // And the session still carries data.
    a.tun.inject(ipv4Packet("10.0.0.1", "10.0.0.2", "still here"));
    await waitFor("the next packet", () => b.tun.written.length === 2);
    expect(payloadsOf(b.tun.written)).toEqual(["once", "still here"]);
  });

  it("a flood of initiations from one source gets its share of each turn, and data flows", async () => {
    const flood = 5000;
    const { network, a, b } = await twoDaemons({ receiveQueue: flood + 100 });
    a.tun.inject(ipv4Packet("10.0.0.1", "10.0.0.2", "before"));
    await waitFor("the session", () => b.tun.written.length === 1);
    // Well-formed initiations (type and length right) from one stranger, all arriving before
    // the daemon reads any: full batches, so the source gets 4 a turn, the rest dropped unread.
    const drops = b.daemon.device.stats.drops;
    for (let i = 0; i < flood; i++) {
      const initiation = Buffer.alloc(INITIATION_LENGTH, i & 0xff);
      initiation.writeUInt32LE(MessageType.HandshakeInitiation, 0);
      network.inject(initiation, { address: "198.51.100.7", port: 1000 + (i % 50000) }, B);
    }
    await waitFor("every initiation handled or dropped", () => {
      return drops.bad_mac1 + drops.handshake_over_share === flood;
    });
    expect(drops.handshake_over_share).toBeGreaterThan(flood / 2);
    expect(drops.bad_mac1).toBeGreaterThan(0);
    a.tun.inject(ipv4Packet("10.0.0.1", "10.0.0.2", "after"));
    await waitFor("data after the flood", () => b.tun.written.length === 2);
    expect(payloadsOf(b.tun.written)).toEqual(["before", "after"]);
  });

  it("stop closes the devices and the socket", async () => {
    const { a } = await twoDaemons();
    await a.daemon.stop();
    expect(a.tun.closed).toBe(true);
  });
});
