// Runs inside a throw-away network namespace (`ip netns exec NS node native-tun-helper.mjs
// path/to/native.js`), started by test/native-tun.test.ts, which cannot enter a namespace
// itself. Exercises the TUN device from both sides and prints one JSON object; all traffic
// stays inside the namespace.
import { execFileSync } from "node:child_process";
import { createSocket } from "node:dgram";
import { clearTimeout, setTimeout } from "node:timers";
import { setTimeout as sleep } from "node:timers/promises";
import { pathToFileURL } from "node:url";

const { TunDevice, PacketBatch } = await import(pathToFileURL(process.argv[2]).href);

const TUN_ADDRESS = "10.77.0.1";
const PEER_ADDRESS = "10.77.0.2";
const PEER_PORT = 9999;

function ip(...args) {
  execFileSync("ip", args, { stdio: ["ignore", "ignore", "inherit"] });
}

function errorInfo(fn) {
  try {
    fn();
    return null;
  } catch (error) {
    return { name: error.name, code: error.code, message: error.message };
  }
}

function bind(socket, address) {
  return new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, address, resolve);
  });
}

function send(socket, payload, port, address) {
  return new Promise((resolve, reject) =>
    socket.send(payload, port, address, (error) => (error ? reject(error) : resolve())),
  );
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function checksum(bytes) {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) sum += (bytes[i] << 8) | (bytes[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function ipv4Udp(source, destination, sourcePort, destinationPort, payload) {
  const packet = Buffer.alloc(28 + payload.length);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet[8] = 64;
  packet[9] = 17;
  Buffer.from(source.split(".").map(Number)).copy(packet, 12);
  Buffer.from(destination.split(".").map(Number)).copy(packet, 16);
  packet.writeUInt16BE(checksum(packet.subarray(0, 20)), 10);
  packet.writeUInt16BE(sourcePort, 20);
  packet.writeUInt16BE(destinationPort, 22);
  packet.writeUInt16BE(8 + payload.length, 24); // UDP checksum 0: none, allowed for IPv4
  Buffer.from(payload).copy(packet, 28);
  return packet;
}

function parseIpv4Udp(packet) {
  if (packet.length < 28 || packet[0] >> 4 !== 4 || packet[9] !== 17) return null;
  const headerLength = (packet[0] & 0x0f) * 4;
  return {
    source: Array.from(packet.subarray(12, 16)).join("."),
    destination: Array.from(packet.subarray(16, 20)).join("."),
    sourcePort: packet.readUInt16BE(headerLength),
    destinationPort: packet.readUInt16BE(headerLength + 2),
    payload: packet.subarray(headerLength + 8).toString(),
  };
}

const result = {};
const tun = TunDevice.open({ name: "etun0" });
try {
  ip("link", "set", "lo", "up");
  result.name = tun.name;
  tun.setMtu(1400);
  result.mtu = tun.mtu;
  ip("addr", "add", `${TUN_ADDRESS}/24`, "dev", tun.name);
  tun.up();

  result.busy = errorInfo(() => TunDevice.open({ name: "etun0" }));
  result.mismatch = errorInfo(() => TunDevice.open({ name: "etun0", multiQueue: true }));
  const auto = TunDevice.open();
  result.autoName = auto.name;
  auto.close();
  const queues = TunDevice.openQueues(3, { name: "etunmq" });
  result.queueNames = queues.map((queue) => queue.name);
  result.queueFds = new Set(queues.map((queue) => queue.fd)).size;
  queues.forEach((queue) => queue.close());

  // Kernel -> TUN: datagrams routed into the tunnel subnet come out of the TUN as packets.
  const sender = createSocket("udp4");
  await bind(sender, TUN_ADDRESS);
  const sent = [];
  for (let i = 0; i < 8; i++) {
    const payload = `to the tunnel ${i}`;
    sent.push(payload);
    await send(sender, payload, PEER_PORT, PEER_ADDRESS);
  }
  const batch = new PacketBatch(64, { slotSize: 2048, headroom: 16, tailroom: 32 });
  const reads = [];
  const fromTun = [];
  await withTimeout(
    new Promise((resolve) => {
      tun.onReadable(() => {
        const n = tun.readBatch(batch);
        reads.push(n);
        for (let i = 0; i < n; i++) {
          const parsed = parseIpv4Udp(batch.packet(i));
          // Other traffic (IPv6 router solicitations, ...) may share the device.
          if (parsed && parsed.destinationPort === PEER_PORT) fromTun.push(parsed);
        }
        if (fromTun.length >= sent.length) {
          tun.onReadable(null);
          resolve();
        }
      });
    }),
    5000,
    "packets from the TUN",
  );
  sender.close();
  result.reads = reads;
  result.fromTun = fromTun;

  // TUN -> kernel: packets written to the TUN arrive on a socket as if from the peer.
  const receiver = createSocket("udp4");
  await bind(receiver, TUN_ADDRESS);
  const receiverPort = receiver.address().port;
  const arrived = [];
  const allArrived = new Promise((resolve) => {
    receiver.on("message", (data, rinfo) => {
      arrived.push({ payload: data.toString(), address: rinfo.address, port: rinfo.port });
      if (arrived.length === 5) resolve();
    });
  });
  const out = new PacketBatch(6, { slotSize: 256 });
  const expected = [];
  for (let i = 0, k = 0; i < 6; i++) {
    if (i === 3) {
      out.setPacket(i, Buffer.alloc(40)); // version nibble 0: not IPv4 or IPv6
      continue;
    }
    const payload = `from the tunnel ${k++}`;
    expected.push(payload);
    out.setPacket(i, ipv4Udp(PEER_ADDRESS, TUN_ADDRESS, 4000, receiverPort, payload));
  }
  out.status.fill(1);
  result.written = tun.writeBatch(out, 6);
  result.writeStatus = Array.from(out.status);
  await withTimeout(allArrived, 5000, "packets written to the TUN");
  receiver.close();
  result.expectedArrivals = expected;
  result.arrived = arrived;
} finally {
  tun.close();
}
result.closedTwice = errorInfo(() => tun.close());
process.stdout.write(JSON.stringify(result));
// No explicit exit: the test's timeout catches a descriptor or poll handle left open.
await sleep(0);
