// Helper for test/native-tun-offload.test.ts, run under `ip netns exec` in namespaces the test
// creates (this process cannot enter one itself). Three roles:
//
//   pump NATIVE_JS OPTIONS_JSON  in namespace A: opens two TUN devices, keeps one ("A side")
//       and moves the other into namespace B, addresses both, then copies packets between
//       them with readBatch/writeBatch, one batch per readiness callback as the daemon does.
//       With `verify`, every packet is checked on the way (length <= MTU, IPv4 header
//       checksum, TCP/UDP checksum computed here in JS) and the TCP byte stream towards the
//       server port is reassembled from the segments and hashed. Prints "ready", then one
//       JSON line when stdin says "stop".
//   server ADDRESS PORT  in namespace B: accepts connections; for each, hashes what arrives
//       and answers with {bytes, sha256} when the client half-closes.
//   client ADDRESS PORT BYTES  in namespace A: sends BYTES pseudo-random bytes in large
//       writes, half-closes, waits for the answer; prints {bytes, sha256, ms, answer}.
//   burst NATIVE_JS  in a namespace of its own, IPv6 off so that nothing else crosses the
//       device: one UDP GSO send of 20 datagrams into an offload TUN becomes one USO
//       super-packet; a handler that reads 3 packets per callback must still get all 20,
//       although the device is readable only once. Prints one JSON line.
//
// All traffic stays inside the two namespaces.
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { createSocket } from "node:dgram";
import { connect, createServer } from "node:net";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { setTimeout } from "node:timers";
import { pathToFileURL } from "node:url";

const [role, ...args] = process.argv.slice(2);

function ip(...argv) {
  execFileSync("ip", argv, { stdio: ["ignore", "ignore", "inherit"] });
}

// ---- checks, written independently of the addon ----

function sum16(bytes, start, end, initial = 0) {
  let sum = initial;
  for (let i = start; i + 1 < end; i += 2) sum += (bytes[i] << 8) | bytes[i + 1];
  if ((end - start) & 1) sum += bytes[end - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** True when the transport checksum of the segment at [l4, end) is right. */
function transportChecksumOk(p, v6, proto, l4, end) {
  const length = end - l4;
  let pseudo = v6 ? sum16(p, 8, 40) : sum16(p, 12, 20);
  pseudo += proto + length;
  return sum16(p, l4, end, pseudo) === 0xffff;
}

class Verifier {
  constructor(mtu, serverPort) {
    this.mtu = mtu;
    this.serverPort = serverPort;
    this.packets = 0;
    this.tcpChecked = 0;
    this.udpChecked = 0;
    this.maxLength = 0;
    this.errors = [];
    this.flows = new Map();
  }

  error(message) {
    if (this.errors.length < 20) this.errors.push(message);
  }

  check(p) {
    this.packets++;
    this.maxLength = Math.max(this.maxLength, p.length);
    if (p.length > this.mtu) this.error(`packet of ${p.length} bytes exceeds MTU ${this.mtu}`);
    const version = p[0] >> 4;
    let v6, proto, l4, total;
    if (version === 4) {
      const ihl = (p[0] & 15) * 4;
      if (sum16(p, 0, ihl) !== 0xffff) this.error("bad IPv4 header checksum");
      total = p.readUInt16BE(2);
      v6 = false;
      proto = p[9];
      l4 = ihl;
    } else if (version === 6) {
      total = 40 + p.readUInt16BE(4);
      v6 = true;
      proto = p[6];
      l4 = 40;
    } else {
      this.error(`version ${version}`);
      return;
    }
    if (total !== p.length) this.error(`IP length ${total} but ${p.length} bytes read`);
    if (proto === 6) {
      this.tcpChecked++;
      if (!transportChecksumOk(p, v6, 6, l4, p.length)) this.error("bad TCP checksum");
      this.trackTcp(p, v6, l4);
    } else if (proto === 17) {
      this.udpChecked++;
      if (p.readUInt16BE(l4 + 6) !== 0 && !transportChecksumOk(p, v6, 17, l4, p.length))
        this.error("bad UDP checksum");
    }
  }

  /** Data towards the server port, by flow: segments in arrival order. */
  trackTcp(p, v6, l4) {
    const dport = p.readUInt16BE(l4 + 2);
    if (dport !== this.serverPort) return;
    const key = `${v6 ? 6 : 4}:${p.readUInt16BE(l4)}`;
    let flow = this.flows.get(key);
    const seq = p.readUInt32BE(l4 + 4);
    const flags = p[l4 + 13];
    const dataStart = l4 + (p[l4 + 12] >> 4) * 4;
    if (!flow) {
      flow = { v6, next: null, chunks: [], gaps: 0, retransmitted: 0, bytes: 0, segments: 0 };
      this.flows.set(key, flow);
    }
    if (flags & 0x02) {
      flow.next = (seq + 1) >>> 0; // SYN
      return;
    }
    const payload = p.subarray(dataStart);
    if (payload.length === 0 || flow.next === null) return;
    flow.segments++;
    const delta = (seq - flow.next) | 0;
    if (delta <= 0) {
      // delta < 0: sent again (after a loss or a probe); keep only what is new.
      if (delta < 0) flow.retransmitted++;
      if (-delta < payload.length) {
        const fresh = payload.subarray(-delta);
        flow.chunks.push(Buffer.from(fresh));
        flow.bytes += fresh.length;
        flow.next = (flow.next + fresh.length) >>> 0;
      }
    } else {
      flow.gaps++;
      this.error(`sequence gap of ${delta} bytes in flow ${key}`);
    }
  }

  summary() {
    const flows = [...this.flows.entries()].map(([key, flow]) => ({
      key,
      bytes: flow.bytes,
      segments: flow.segments,
      gaps: flow.gaps,
      retransmitted: flow.retransmitted,
      sha256: createHash("sha256").update(Buffer.concat(flow.chunks)).digest("hex"),
    }));
    return {
      packets: this.packets,
      tcpChecked: this.tcpChecked,
      udpChecked: this.udpChecked,
      maxLength: this.maxLength,
      errors: this.errors,
      flows,
    };
  }
}

/** An IPv4/UDP packet with a complete UDP checksum. */
function ipv4Udp(source, destination, sourcePort, destinationPort, text) {
  const payload = Buffer.from(text);
  const p = Buffer.alloc(28 + payload.length);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  p[8] = 64;
  p[9] = 17;
  p.set(source.split(".").map(Number), 12);
  p.set(destination.split(".").map(Number), 16);
  p.writeUInt16BE(~sum16(p, 0, 20) & 0xffff, 10);
  p.writeUInt16BE(sourcePort, 20);
  p.writeUInt16BE(destinationPort, 22);
  p.writeUInt16BE(8 + payload.length, 24);
  payload.copy(p, 28);
  const pseudo = sum16(p, 12, 20) + 17 + 8 + payload.length;
  p.writeUInt16BE(~sum16(p, 20, p.length, pseudo) & 0xffff || 0xffff, 26);
  return p;
}

// ---- roles ----

async function pump() {
  const [nativeModule, optionsJson] = args;
  const options = JSON.parse(optionsJson);
  const { TunDevice, PacketBatch } = await import(pathToFileURL(nativeModule).href);
  const { peerNamespace, offload, gro, batch: capacity, verify, mtu, serverPort } = options;
  ip("link", "set", "lo", "up");
  const a = TunDevice.open({ name: "eoffa", offload, gro });
  const b = TunDevice.open({ name: "eoffb", offload, gro });
  for (const [tun, here, there, ns] of [
    [a, "10.201.0.1", "10.201.0.2", null],
    [b, "10.201.0.2", "10.201.0.1", peerNamespace],
  ]) {
    tun.setMtu(mtu);
    const n = ns ? ["-n", ns] : [];
    if (ns) ip("link", "set", tun.name, "netns", ns);
    // Up first: an IPv6 peer route added while the link is down is not installed.
    ip(...n, "link", "set", tun.name, "up");
    ip(...n, "addr", "add", here, "peer", there, "dev", tun.name);
    const v6here = here.replace("10.201.0.", "fd00:201::");
    const v6there = there.replace("10.201.0.", "fd00:201::");
    ip(...n, "-6", "addr", "add", v6here, "peer", v6there, "dev", tun.name, "nodad");
  }

  const verifiers = verify ? [new Verifier(mtu, serverPort), new Verifier(mtu, serverPort)] : [];
  const counts = {
    calls: [0, 0],
    packets: [0, 0],
    fullBatches: [0, 0],
    maxPending: [0, 0],
    // Longest wait from a callback that left packets pending in the addon to the next
    // callback: short when TunDevice calls again by itself, a TCP timeout when it waits for
    // the TUN to become readable again.
    maxPendingWaitMs: [0, 0],
  };
  const writeErrors = [0, 0];
  // Read one batch per readiness callback, like the daemon: packets left in the addon
  // must come back through the callback by themselves.
  function forward(from, to, index) {
    const slots = new PacketBatch(capacity, { slotSize: 2048, headroom: 16, tailroom: 32 });
    slots.status.fill(0);
    let leftPendingAt = null;
    from.onReadable(() => {
      if (leftPendingAt !== null) {
        const wait = performance.now() - leftPendingAt;
        counts.maxPendingWaitMs[index] = Math.max(counts.maxPendingWaitMs[index], wait);
        leftPendingAt = null;
      }
      const n = from.readBatch(slots);
      counts.calls[index]++;
      if (n === 0) return;
      counts.packets[index] += n;
      if (n === capacity) {
        counts.fullBatches[index]++;
        const pending = from.pendingPackets;
        counts.maxPending[index] = Math.max(counts.maxPending[index], pending);
        if (pending > 0) leftPendingAt = performance.now();
      }
      if (verify) for (let i = 0; i < n; i++) verifiers[index].check(slots.packet(i));
      const written = to.writeBatch(slots, n);
      writeErrors[index] += n - written;
      for (let i = 0; i < written; i++) if (slots.status[i] < 0) writeErrors[index]++;
    });
  }
  forward(a, b, 0);
  forward(b, a, 1);
  process.stdout.write(`ready ${JSON.stringify({ offload: [a.offload, b.offload] })}\n`);

  // "stop" reports and ends; stdin closing without it (the test gave up) just ends.
  const lines = createInterface({ input: process.stdin });
  lines.on("close", () => {
    a.close();
    b.close();
  });
  for await (const line of lines) {
    if (line.trim() !== "stop") continue;
    const result = {
      offload: [a.offload, b.offload],
      udpOffload: [a.udpOffload, b.udpOffload],
      stats: [a.offloadStats, b.offloadStats],
      counts,
      writeErrors,
      verified: verify ? verifiers.map((v) => v.summary()) : null,
    };
    a.close();
    b.close();
    process.stdout.write(`${JSON.stringify(result)}\n`);
    lines.close();
    break;
  }
}

async function server() {
  const [address, port] = args;
  const srv = createServer((socket) => {
    const hash = createHash("sha256");
    let bytes = 0;
    socket.on("data", (chunk) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    socket.on("end", () => {
      socket.end(JSON.stringify({ bytes, sha256: hash.digest("hex") }));
    });
    socket.on("error", () => {});
  });
  srv.listen(Number(port), address, () => process.stdout.write("listening\n"));
  // Ends with the namespace's pump or when the test kills it; stdin closing ends it too.
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
}

async function client() {
  const [address, port, total] = args;
  const size = Number(total);
  // Pseudo-random, cheap to make: a 1 MiB block of SHA-256 output, each copy salted.
  const block = Buffer.alloc(1 << 20);
  for (let i = 0; i < block.length; i += 32) {
    createHash("sha256").update(`block ${i}`).digest().copy(block, i);
  }
  // Made and hashed before the clock starts: the time is the tunnel's, not the hashing's.
  const chunks = [];
  const hash = createHash("sha256");
  for (let sent = 0, round = 0; sent < size; round++) {
    const chunk = Buffer.from(block.subarray(0, Math.min(block.length, size - sent)));
    chunk.writeUInt32BE(round, 0);
    hash.update(chunk);
    chunks.push(chunk);
    sent += chunk.length;
  }
  const started = performance.now();
  const socket = connect({ host: address, port: Number(port) });
  let answer = "";
  socket.setEncoding("utf8");
  socket.on("data", (text) => (answer += text));
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  let sent = 0;
  for (const chunk of chunks) {
    sent += chunk.length;
    if (!socket.write(chunk)) await new Promise((resolve) => socket.once("drain", resolve));
  }
  socket.end();
  await new Promise((resolve, reject) => {
    socket.once("close", resolve);
    socket.once("error", reject);
  });
  const ms = performance.now() - started;
  process.stdout.write(
    `${JSON.stringify({ bytes: sent, sha256: hash.digest("hex"), ms, answer: JSON.parse(answer) })}\n`,
  );
}

async function burst() {
  const [nativeModule] = args;
  const { TunDevice, PacketBatch, UdpBatchSocket, writeEndpoint } = await import(
    pathToFileURL(nativeModule).href
  );
  execFileSync("sysctl", ["-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
  execFileSync("sysctl", ["-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
  ip("link", "set", "lo", "up");
  const tun = TunDevice.open({ name: "eoffr", offload: true });
  tun.setMtu(1500);
  tun.up();
  ip("addr", "add", "10.202.0.1", "peer", "10.202.0.2", "dev", tun.name);
  const socket = UdpBatchSocket.open({ host: "10.202.0.1" });

  const COUNT = 20;
  const slots = new PacketBatch(3, { slotSize: 2048, headroom: 16, tailroom: 32 });
  const received = [];
  const errors = [];
  let calls = 0;
  let maxPending = 0;
  const done = new Promise((resolve) => {
    tun.onReadable(() => {
      calls++;
      const n = tun.readBatch(slots); // once per callback, like the daemon
      maxPending = Math.max(maxPending, tun.pendingPackets);
      for (let i = 0; i < n; i++) {
        const p = slots.packet(i);
        if (p[0] !== 0x45 || p[9] !== 17 || p.readUInt16BE(22) !== 9999) continue;
        if (p.length > 1500) errors.push(`packet of ${p.length} bytes`);
        if (sum16(p, 0, 20) !== 0xffff) errors.push("bad IPv4 header checksum");
        if (!transportChecksumOk(p, false, 17, 20, p.length)) errors.push("bad UDP checksum");
        received.push(p.subarray(28).toString());
      }
      if (received.length >= COUNT) resolve();
    });
  });
  const out = new PacketBatch(COUNT, { slotSize: 2048 });
  const sent = [];
  for (let i = 0; i < COUNT; i++) {
    const payload = `datagram ${String(i).padStart(2, "0")} `.padEnd(1000, "x");
    sent.push(payload);
    out.setPacket(i, Buffer.from(payload));
    writeEndpoint(out.endpoints, i, { address: "10.202.0.2", port: 9999 });
  }
  const started = performance.now();
  const accepted = socket.sendBatch(out, COUNT);
  const timeout = new Promise((resolve) => setTimeout(resolve, 3000).unref());
  await Promise.race([done, timeout]);
  const result = {
    udpOffload: tun.udpOffload,
    socketGso: socket.gso,
    accepted,
    sendStatus: Array.from(out.status),
    inOrder: received.length === sent.length && received.every((r, i) => r === sent[i]),
    received: received.length,
    ms: performance.now() - started,
    calls,
    maxPending,
    errors,
    stats: tun.offloadStats,
  };
  socket.close();

  // Writing: each packet goes with a zeroed virtio header; a malformed one fails alone.
  const receiver = createSocket("udp4");
  await new Promise((resolve) => receiver.bind(0, "10.202.0.1", resolve));
  const arrived = [];
  const allArrived = new Promise((resolve) =>
    receiver.on("message", (data) => {
      arrived.push(data.toString());
      if (arrived.length === 2) resolve();
    }),
  );
  const writes = new PacketBatch(3, { slotSize: 256 });
  const port = receiver.address().port;
  writes.setPacket(0, ipv4Udp("10.202.0.2", "10.202.0.1", 4000, port, "first"));
  writes.setPacket(1, Buffer.alloc(40)); // version nibble 0: neither IPv4 nor IPv6
  writes.setPacket(2, ipv4Udp("10.202.0.2", "10.202.0.1", 4000, port, "second"));
  writes.status.fill(1);
  result.written = tun.writeBatch(writes, 3);
  result.writeStatus = Array.from(writes.status);
  await Promise.race([allArrived, new Promise((resolve) => setTimeout(resolve, 3000).unref())]);
  result.arrived = arrived;
  receiver.close();
  tun.close();

  // Queues of one device share its virtio-header mode: a mismatched one is refused.
  const queues = TunDevice.openQueues(2, { name: "eoffq", offload: true });
  result.queues = queues.map((queue) => queue.offload);
  try {
    TunDevice.open({ name: "eoffq", multiQueue: true }).close();
    result.mismatch = null;
  } catch (error) {
    result.mismatch = { code: error.code, message: error.message };
  }
  queues.forEach((queue) => queue.close());
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

const roles = { pump, server, client, burst };
if (!roles[role]) {
  process.stderr.write(`unknown role ${role}\n`);
  process.exit(2);
}
await roles[role]();
