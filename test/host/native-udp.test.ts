// UDP batches over loopback only (127.0.0.1, 127.0.0.x and ::1): recvmmsg/sendmmsg keep
// addresses, order and contents; errors are the ones a user can act on.
import { spawnSync } from "node:child_process";
import { createSocket, type Socket } from "node:dgram";
import { constants as osConstants, release } from "node:os";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import {
  ENDPOINT_SIZE,
  MAX_BATCH,
  PacketBatch,
  UdpBatchSocket,
  UdpSocketPair,
  readEndpoint,
  writeEndpoint,
} from "../../src/host/native/index.js";

const addonPath = fileURLToPath(new URL("../../build/Release/edgetun.node", import.meta.url));

const cleanups: Array<() => void> = [];
afterEach(() => {
  while (cleanups.length > 0) {
    try {
      cleanups.pop()!();
    } catch {
      // already closed
    }
  }
});

function openNative(options: Parameters<typeof UdpBatchSocket.open>[0] = {}): UdpBatchSocket {
  const socket = UdpBatchSocket.open(options);
  cleanups.push(() => socket.close());
  return socket;
}

async function dgramSocket(type: "udp4" | "udp6", address: string): Promise<Socket> {
  const socket = createSocket(type);
  cleanups.push(() => socket.close());
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, address, () => resolve());
  });
  return socket;
}

function send(socket: Socket, payload: string, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) =>
    socket.send(payload, port, address, (error) => (error ? reject(error) : resolve())),
  );
}

/** Drains `socket` through readiness callbacks until `want` datagrams are in `batch`. */
function receiveAll(
  socket: UdpBatchSocket,
  batch: PacketBatch,
  want: number,
  calls: number[] = [],
): Promise<number> {
  let total = 0;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.onReadable(null);
      reject(new Error(`received ${total} of ${want} datagrams`));
    }, 3000);
    socket.onReadable(() => {
      const n = socket.recvBatch(batch, want - total, total);
      calls.push(n);
      total += n;
      if (total >= want) {
        clearTimeout(timer);
        socket.onReadable(null);
        resolve(total);
      }
    });
  });
}

function collect(
  socket: Socket,
  want: number,
): Promise<Array<{ data: string; from: string; port: number }>> {
  const received: Array<{ data: string; from: string; port: number }> = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`dgram got ${received.length} of ${want}`)),
      3000,
    );
    socket.on("message", (data, rinfo) => {
      received.push({ data: data.toString(), from: rinfo.address, port: rinfo.port });
      if (received.length === want) {
        clearTimeout(timer);
        resolve(received);
      }
    });
  });
}

function collectRaw(socket: Socket, want: number): Promise<Buffer[]> {
  const received: Buffer[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`dgram got ${received.length} of ${want}`)),
      3000,
    );
    socket.on("message", (data) => {
      received.push(data);
      if (received.length === want) {
        clearTimeout(timer);
        resolve(received);
      }
    });
  });
}

const ipv6Loopback = (() => {
  const probe = spawnSync(
    process.execPath,
    ["-e", "require('dgram').createSocket('udp6').bind(0,'::1',function(){this.close()})"],
    { timeout: 5000 },
  );
  return probe.status === 0;
})();

describe("endpoint records", () => {
  it("stores IPv4 as IPv4-mapped with the port in network order", () => {
    const table = new Uint8Array(2 * ENDPOINT_SIZE);
    writeEndpoint(table, 1, { address: "10.1.2.3", port: 51820 });
    expect(Buffer.from(table.subarray(ENDPOINT_SIZE, 2 * ENDPOINT_SIZE)).toString("hex")).toBe(
      "00000000000000000000ffff0a010203" + "ca6c" + "0000" + "00000000",
    );
    expect(readEndpoint(table, 1)).toEqual({ address: "10.1.2.3", port: 51820 });
  });

  it("round-trips IPv6 with a scope id", () => {
    const table = new Uint8Array(ENDPOINT_SIZE);
    for (const endpoint of [
      { address: "::1", port: 1 },
      { address: "2001:db8::ff:0:1", port: 65535 },
      { address: "fe80::1", port: 500, zone: "3" },
    ]) {
      writeEndpoint(table, 0, endpoint);
      expect(readEndpoint(table, 0)).toEqual(endpoint);
    }
    writeEndpoint(table, 0, { address: "fe80::2%7", port: 9 });
    expect(readEndpoint(table, 0)).toEqual({ address: "fe80::2", port: 9, zone: "7" });
  });

  it("rejects what is not an address, a port or a record", () => {
    const table = new Uint8Array(ENDPOINT_SIZE);
    expect(() => writeEndpoint(table, 0, { address: "example.com", port: 1 })).toThrow(TypeError);
    expect(() => writeEndpoint(table, 0, { address: "10.0.0.0/8", port: 1 })).toThrow(TypeError);
    expect(() => writeEndpoint(table, 0, { address: "10.0.0.1", port: 65536 })).toThrow(RangeError);
    expect(() => writeEndpoint(table, 1, { address: "10.0.0.1", port: 1 })).toThrow(RangeError);
    expect(() => readEndpoint(table, -1)).toThrow(RangeError);
  });
});

describe("UdpBatchSocket", () => {
  it("binds dual-stack on :: with a kernel-chosen port and raised buffers", () => {
    const socket = openNative({ receiveBufferSize: 1 << 20, sendBufferSize: 1 << 20 });
    expect(socket.port).toBeGreaterThan(0);
    expect(socket.family).toBe(ipv6Loopback ? 6 : 4);
    expect(socket.dualStack).toBe(ipv6Loopback);
    if (process.getuid?.() === 0) {
      // SO_RCVBUFFORCE ignores rmem_max; the kernel reports double the request.
      expect(socket.receiveBufferSize).toBeGreaterThanOrEqual(1 << 20);
      expect(socket.sendBufferSize).toBeGreaterThanOrEqual(1 << 20);
    } else {
      expect(socket.receiveBufferSize).toBeGreaterThan(0);
    }
  });

  it("receives a batch from IPv4 and IPv6 peers with their addresses, in order", async () => {
    const native = openNative({ host: ipv6Loopback ? "::" : "0.0.0.0" });
    const peer4 = await dgramSocket("udp4", "127.0.0.1");
    const peer6 = ipv6Loopback ? await dgramSocket("udp6", "::1") : undefined;
    const expected: Array<{ data: string; address: string; port: number }> = [];
    for (let i = 0; i < 10; i++) {
      await send(peer4, `v4 datagram ${i}`, native.port, "127.0.0.1");
      expected.push({ data: `v4 datagram ${i}`, address: "127.0.0.1", port: peer4.address().port });
    }
    if (peer6) {
      for (let i = 0; i < 10; i++) {
        await send(peer6, `v6 datagram ${i} ${"x".repeat(i * 50)}`, native.port, "::1");
        expected.push({
          data: `v6 datagram ${i} ${"x".repeat(i * 50)}`,
          address: "::1",
          port: peer6.address().port,
        });
      }
    }
    const batch = new PacketBatch(64, { slotSize: 1024 });
    const calls: number[] = [];
    expect(await receiveAll(native, batch, expected.length, calls)).toBe(expected.length);
    // Everything was queued before the first callback, so one recvmmsg took it all.
    expect(calls[0]).toBe(expected.length);

    expected.forEach((want, i) => {
      expect(batch.packet(i).toString()).toBe(want.data);
      expect(readEndpoint(batch.endpoints, i)).toEqual({ address: want.address, port: want.port });
      // The local address each datagram was sent to, from IP(V6)_PKTINFO.
      expect(readEndpoint(batch.locals, i).address).toBe(want.address);
    });
  });

  it("sends a batch to several peers, each seeing its packets in order from our port", async () => {
    const native = openNative();
    const peer4 = await dgramSocket("udp4", "127.0.0.1");
    const peer6 = ipv6Loopback ? await dgramSocket("udp6", "::1") : undefined;
    const count = 40;
    const batch = new PacketBatch(count, { slotSize: 1500 });
    let want4 = 0;
    for (let i = 0; i < count; i++) {
      const toV6 = peer6 !== undefined && i % 3 === 0;
      batch.setPacket(i, Buffer.from(`packet ${i} ${"y".repeat(i * 30)}`));
      const target = toV6 ? peer6 : peer4;
      writeEndpoint(batch.endpoints, i, {
        address: toV6 ? "::1" : "127.0.0.1",
        port: target.address().port,
      });
      if (!toV6) want4++;
    }
    const got4 = collect(peer4, want4);
    const got6 = peer6 ? collect(peer6, count - want4) : Promise.resolve([]);
    batch.status.fill(1);
    expect(native.sendBatch(batch, count)).toBe(count);
    expect(Array.from(batch.status).every((status) => status === 0)).toBe(true);

    const all = [...(await got4), ...(await got6)];
    const byIndex = (text: string): number => Number(text.split(" ")[1]);
    for (const list of [await got4, await got6]) {
      const indexes = list.map((entry) => byIndex(entry.data));
      expect(indexes).toEqual([...indexes].sort((a, b) => a - b));
    }
    expect(all).toHaveLength(count);
    for (const entry of all) {
      expect(entry.port).toBe(native.port);
      expect(entry.data).toBe(batch.packet(byIndex(entry.data)).toString());
    }
  });

  it("sends runs of equal-sized packets with GSO, arriving as separate datagrams", async () => {
    const withGso = openNative({ host: "127.0.0.1" });
    const without = openNative({ host: "127.0.0.1", gso: false });
    expect(without.gso).toBe(false);
    const [major = 0, minor = 0] = release().split(".").map(Number);
    if (major > 4 || (major === 4 && minor >= 18)) expect(withGso.gso).toBe(true);
    const peerA = await dgramSocket("udp4", "127.0.0.1");
    const peerB = await dgramSocket("udp4", "127.0.0.1");
    for (const sender of [withGso, without]) {
      // Runs: 70 equal packets to A (more than one GSO message can carry), one shorter tail,
      // then B, then A again with mixed sizes, and an empty datagram.
      const sizes = [...Array<number>(70).fill(1200), 300, 1200, 1200, 500, 900, 900, 0, 40];
      const targets = sizes.map((_, i) => (i >= 71 && i < 73 ? peerB : peerA));
      const batch = new PacketBatch(sizes.length, { slotSize: 1280 });
      sizes.forEach((size, i) => {
        const payload = Buffer.alloc(size, i);
        if (size >= 2) payload.writeUInt16BE(i, 0);
        batch.setPacket(i, payload);
        writeEndpoint(batch.endpoints, i, {
          address: "127.0.0.1",
          port: targets[i]!.address().port,
        });
      });
      const wantA = targets.filter((t) => t === peerA).length;
      const gotA = collectRaw(peerA, wantA);
      const gotB = collectRaw(peerB, sizes.length - wantA);
      batch.status.fill(1);
      expect(sender.sendBatch(batch, sizes.length)).toBe(sizes.length);
      expect(Array.from(batch.status).every((status) => status === 0)).toBe(true);
      const expectedFor = (peer: Socket) =>
        sizes.flatMap((_, i) => (targets[i] === peer ? [batch.packet(i).toString("hex")] : []));
      expect((await gotA).map((d) => d.toString("hex"))).toEqual(expectedFor(peerA));
      expect((await gotB).map((d) => d.toString("hex"))).toEqual(expectedFor(peerB));
      peerA.removeAllListeners("message");
      peerB.removeAllListeners("message");
    }
  });

  it("pins the source address from the locals table", async () => {
    const native = openNative();
    const peer = await dgramSocket("udp4", "127.0.0.1");
    const batch = new PacketBatch(2, { slotSize: 64 });
    for (let i = 0; i < 2; i++) {
      batch.setPacket(i, Buffer.from(`pinned ${i}`));
      writeEndpoint(batch.endpoints, i, { address: "127.0.0.1", port: peer.address().port });
    }
    writeEndpoint(batch.locals, 0, { address: "127.0.0.2", port: 0 });
    writeEndpoint(batch.locals, 1, { address: "127.0.0.3", port: 0 });
    const got = collect(peer, 2);
    expect(native.sendBatch(batch, 2)).toBe(2);
    expect((await got).map((entry) => entry.from).sort()).toEqual(["127.0.0.2", "127.0.0.3"]);
  });

  it("marks a packet it cannot send and still sends the rest", async () => {
    const native = openNative({ host: "127.0.0.1" });
    expect(native.family).toBe(4);
    const peer = await dgramSocket("udp4", "127.0.0.1");
    const batch = new PacketBatch(3, { slotSize: 64 });
    for (let i = 0; i < 3; i++) {
      batch.setPacket(i, Buffer.from(`p${i}`));
      writeEndpoint(batch.endpoints, i, { address: "127.0.0.1", port: peer.address().port });
    }
    // An IPv6 destination on an IPv4 socket.
    writeEndpoint(batch.endpoints, 1, { address: "::1", port: peer.address().port });
    const got = collect(peer, 2);
    expect(native.sendBatch(batch, 3)).toBe(3);
    expect(Array.from(batch.status)).toEqual([0, -osConstants.errno.EAFNOSUPPORT, 0]);
    expect((await got).map((entry) => entry.data)).toEqual(["p0", "p2"]);
  });

  it("moves hundreds of packets between two batch sockets in few calls", async () => {
    const sender = openNative({ host: "127.0.0.1" });
    const receiver = openNative({ host: "127.0.0.1" });
    const count = 300;
    const out = new PacketBatch(count, { slotSize: 256 });
    for (let i = 0; i < count; i++) {
      const payload = Buffer.alloc(200, i & 0xff);
      payload.writeUInt32BE(i, 0);
      out.setPacket(i, payload);
      writeEndpoint(out.endpoints, i, { address: "127.0.0.1", port: receiver.port });
    }
    let sent = 0;
    while (sent < count) {
      sent += sender.sendBatch(out, count - sent, sent);
    }
    const incoming = new PacketBatch(count, { slotSize: 256 });
    const calls: number[] = [];
    await receiveAll(receiver, incoming, count, calls);
    expect(calls.length).toBeLessThanOrEqual(3);
    for (let i = 0; i < count; i++) {
      expect(incoming.packet(i).equals(out.packet(i))).toBe(true);
      expect(readEndpoint(incoming.endpoints, i)).toEqual({
        address: "127.0.0.1",
        port: sender.port,
      });
    }
  });

  it("truncates a datagram to the slot room", async () => {
    const native = openNative({ host: "127.0.0.1" });
    const peer = await dgramSocket("udp4", "127.0.0.1");
    await send(peer, "0123456789abcdef", native.port, "127.0.0.1");
    const batch = new PacketBatch(1, { slotSize: 16, tailroom: 8 });
    await receiveAll(native, batch, 1);
    expect(batch.packet(0).toString()).toBe("01234567");
  });

  it.skipIf(process.getuid?.() !== 0)("sets and clears the fwmark (root only)", () => {
    const native = openNative({ host: "127.0.0.1" });
    native.setFwmark(51820);
    native.setFwmark(0);
    expect(() => native.setFwmark(-1)).toThrow(RangeError);
    expect(() => native.setFwmark(2 ** 32)).toThrow(RangeError);
  });

  it("returns 0 when nothing is waiting, and calls a writable handler once", async () => {
    const native = openNative({ host: "127.0.0.1" });
    expect(native.recvBatch(new PacketBatch(4))).toBe(0);
    let calls = 0;
    await new Promise<void>((resolve) => {
      native.onceWritable(() => {
        calls++;
        setTimeout(resolve, 50);
      });
    });
    expect(calls).toBe(1);
  });

  it("lets the process exit after close(), and with an unreferenced watch", () => {
    const script = (closeIt: boolean) => `
      const a = require(${JSON.stringify(addonPath)});
      const s = a.udpBind("127.0.0.1", 0, 0, 0, false);
      a.watch(s.fd, a.READABLE, () => {});
      ${closeIt ? "a.close(s.fd);" : "a.watchRef(s.fd, false);"}
    `;
    for (const closeIt of [true, false]) {
      const child = spawnSync(process.execPath, ["-e", script(closeIt)], { timeout: 10_000 });
      expect(child.error).toBeUndefined();
      expect(child.status).toBe(0);
    }
  });

  it("survives worker threads terminated with live watches, and process.exit()", () => {
    // Teardown must close the poll handles and wait for libuv's close callbacks, which live
    // in the addon and would crash if they ran after it is unloaded.
    const script = `
      const { Worker } = require("node:worker_threads");
      const body = \`
        const a = require(${JSON.stringify(addonPath)});
        const s = a.udpBind("127.0.0.1", 0, 0, 0, false);
        a.watch(s.fd, a.READABLE | a.WRITABLE, () => {});
        require("node:worker_threads").parentPort.postMessage(s.port);
        setInterval(() => {}, 1000);
      \`;
      let left = 10;
      const spawn = () => {
        const worker = new Worker(body, { eval: true });
        worker.on("message", () => worker.terminate());
        worker.on("exit", () => (--left > 0 ? spawn() : process.exit(0)));
      };
      spawn();
      const a = require(${JSON.stringify(addonPath)});
      const s = a.udpBind("127.0.0.1", 0, 0, 0, false);
      a.watch(s.fd, a.READABLE, () => {});
    `;
    const child = spawnSync(process.execPath, ["-e", script], {
      timeout: 30_000,
      encoding: "utf8",
    });
    expect(child.signal, child.stderr).toBeNull();
    expect(child.status, child.stderr).toBe(0);
  });
});

describe("UDP errors", () => {
  it("reports a port in use with EADDRINUSE", () => {
    const first = openNative({ host: "127.0.0.1" });
    let caught: unknown;
    try {
      openNative({ host: "127.0.0.1", port: first.port });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(Error);
    expect(caught).toMatchObject({
      code: "EADDRINUSE",
      errno: -osConstants.errno.EADDRINUSE,
      message: `EADDRINUSE: UDP port ${first.port} in use`,
    });
  });

  it("reports a port held by a node:dgram socket too", async () => {
    const holder = await dgramSocket("udp4", "127.0.0.1");
    expect(() => openNative({ host: "127.0.0.1", port: holder.address().port })).toThrow(
      /^EADDRINUSE: UDP port \d+ in use$/,
    );
  });

  it("reports an address that is not on this host", () => {
    expect(() => openNative({ host: "192.0.2.1" })).toThrow(/EADDRNOTAVAIL/);
  });

  it("throws TypeError/RangeError for bad bind arguments", () => {
    expect(() => openNative({ host: "localhost" })).toThrow(TypeError);
    expect(() => openNative({ port: 65536 })).toThrow(RangeError);
    expect(() => openNative({ port: -1 })).toThrow(RangeError);
    expect(() => openNative({ receiveBufferSize: 1.5 })).toThrow(RangeError);
  });

  it("throws RangeError for batches that do not fit their arrays", () => {
    const native = openNative({ host: "127.0.0.1" });
    const batch = new PacketBatch(4, { slotSize: 64 });
    // room larger than what is left after the last offset
    expect(() => native.recvBatch({ ...batch, room: 65, endpoints: batch.endpoints })).toThrow(
      /outside the arena/,
    );
    expect(() => native.recvBatch(batch, 5)).toThrow(/offsets is too short/);
    expect(() => native.recvBatch(batch, MAX_BATCH + 1)).toThrow(RangeError);
    expect(() =>
      native.recvBatch({ ...batch, room: batch.room, endpoints: new Uint8Array(ENDPOINT_SIZE) }, 2),
    ).toThrow(/endpoints is too short/);
    batch.lengths[3] = 65;
    expect(() => native.sendBatch(batch, 4)).toThrow(/outside the arena/);
    expect(() =>
      native.sendBatch({ ...batch, endpoints: "nope" as unknown as Uint8Array }, 1),
    ).toThrow(TypeError);
  });

  it("throws EBADF after close, and close is idempotent", () => {
    const native = openNative({ host: "127.0.0.1" });
    native.close();
    native.close();
    expect(native.closed).toBe(true);
    expect(() => native.recvBatch(new PacketBatch(1))).toThrow(
      expect.objectContaining({ code: "EBADF" }),
    );
    expect(() => native.onReadable(() => {})).toThrow(/closed/);
  });
});

describe("UdpSocketPair", () => {
  function openPair(port = 0): UdpSocketPair {
    const pair = UdpSocketPair.open({ host: "127.0.0.1", port });
    cleanups.push(() => pair.close());
    return pair;
  }

  it("steers transport data to one socket and everything else to the other", async () => {
    const pair = openPair();
    expect(pair.handshake, "this kernel cannot steer (SO_ATTACH_REUSEPORT_CBPF)").not.toBeNull();
    const sender = await dgramSocket("udp4", "127.0.0.1");
    const kinds = [4, 1, 4, 2, 3, 4, 0, 4, 7];
    for (const [i, type] of kinds.entries()) {
      const message = Buffer.alloc(32);
      message[0] = type;
      message[31] = i;
      await send(sender, message.toString("latin1"), pair.port, "127.0.0.1");
    }
    const dataBatch = new PacketBatch(16, { slotSize: 64 });
    const otherBatch = new PacketBatch(16, { slotSize: 64 });
    const data = kinds.filter((type) => type === 4).length;
    await receiveAll(pair.data, dataBatch, data);
    await receiveAll(pair.handshake!, otherBatch, kinds.length - data);
    const typesIn = (batch: PacketBatch, count: number): number[] =>
      Array.from({ length: count }, (_, i) => batch.arena[batch.offsets[i]!]!);
    expect(typesIn(dataBatch, data)).toEqual([4, 4, 4, 4]);
    expect(typesIn(otherBatch, kinds.length - data)).toEqual([1, 2, 3, 0, 7]);
    expect(pair.handshake!.queueStats()).toMatchObject({ queuedBytes: 0, drops: 0 });
  });

  it("counts what the handshake socket drops when its buffer is full, and never data", async () => {
    const pair = openPair();
    const sender = await dgramSocket("udp4", "127.0.0.1");
    const initiation = Buffer.alloc(148);
    initiation[0] = 1;
    // Far more than the 4 MiB buffer holds (each datagram costs about 1 KiB of it).
    for (let i = 0; i < 16_000; i++) sender.send(initiation, pair.port, "127.0.0.1");
    const transport = Buffer.alloc(32);
    transport[0] = 4;
    await send(sender, transport.toString("latin1"), pair.port, "127.0.0.1");
    await new Promise((resolve) => setTimeout(resolve, 200));
    const stats = pair.handshake!.queueStats();
    expect(stats.drops).toBeGreaterThan(0);
    expect(stats.queuedBytes).toBeGreaterThan(0);
    expect(pair.data.queueStats().drops).toBe(0);
    const batch = new PacketBatch(4, { slotSize: 64 });
    expect(pair.data.recvBatch(batch)).toBe(1);
  });

  it("keeps the port: a second instance is refused, a same-user joiner gets nothing", async () => {
    const pair = openPair();
    expect(() => UdpBatchSocket.open({ host: "127.0.0.1", port: pair.port })).toThrow(/EADDRINUSE/);
    expect(() => UdpSocketPair.open({ host: "127.0.0.1", port: pair.port })).toThrow(/EADDRINUSE/);
    // The kernel lets a socket of the same user with SO_REUSEPORT join the group, but the
    // steering program only ever picks the pair's two sockets.
    const joiner = openNative({ host: "127.0.0.1", port: pair.port, reusePort: true });
    const sender = await dgramSocket("udp4", "127.0.0.1");
    for (const type of [1, 4, 1, 4]) {
      await send(sender, String.fromCharCode(type).repeat(32), pair.port, "127.0.0.1");
    }
    await receiveAll(pair.data, new PacketBatch(4, { slotSize: 64 }), 2);
    await receiveAll(pair.handshake!, new PacketBatch(4, { slotSize: 64 }), 2);
    expect(joiner.recvBatch(new PacketBatch(4, { slotSize: 64 }))).toBe(0);
  });
});
