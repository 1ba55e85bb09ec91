// Throughput of the native batched data path against what Node offers without it, for
// 1420-byte packets (a full WireGuard payload at MTU 1420):
//
//   - ChaCha20-Poly1305 seal/open: native batches vs one crypto.createCipheriv per packet vs
//     pure-JS @noble/ciphers; and the batched path as a share of OpenSSL's single-call rate
//     (`openssl speed`, and the same measured in C on Node's own OpenSSL).
//   - UDP over loopback: sendmmsg/recvmmsg batches (with and without UDP GSO) vs node:dgram.
//
//   npx tsc -p tsconfig.build.json && npm run bench:native
//
// Candidates are timed in short rounds that alternate with their rivals, and each one's best
// round is reported, so that a burst of load from elsewhere on a shared machine spoils one
// round of one candidate rather than a whole column or a ratio. Total run time stays well
// under 30 s. BENCH_ROUND_MS (default 150) and BENCH_ROUNDS (default 5) change the rounds.
import { execFileSync } from "node:child_process";
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { createSocket, type Socket } from "node:dgram";
import { performance } from "node:perf_hooks";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import {
  AeadKeyTable,
  PacketBatch,
  UdpBatchSocket,
  measureOpenSslReference,
  nativeTransportCipher,
  openBatch,
  sealBatch,
  wireguardNonce,
  writeEndpoint,
} from "../src/host/native/index.js";

const PACKET = 1420;
const TAG = 16;
const BATCH = 128;
const ROUND_MS = positiveNumber(process.env["BENCH_ROUND_MS"], 150);
const ROUNDS = Math.floor(positiveNumber(process.env["BENCH_ROUNDS"], 5));

function positiveNumber(text: string | undefined, fallback: number): number {
  const value = Number(text);
  return text !== undefined && Number.isFinite(value) && value > 0 ? value : fallback;
}

/** Some packets done, and the seconds spent on the part being measured. */
interface Step {
  packets: number;
  seconds: number;
}

interface Candidate {
  name: string;
  /** One synchronous step, or an asynchronous one for event-driven candidates. */
  step: () => Step | Promise<Step>;
  best: number;
}

function candidate(name: string, step: () => Step | Promise<Step>): Candidate {
  return { name, step, best: 0 };
}

function timed(fn: () => void): number {
  const start = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** ROUNDS rounds; in each, every candidate runs for ROUND_MS in turn. Keeps the best rate. */
async function race(candidates: Candidate[]): Promise<void> {
  for (const c of candidates) await c.step(); // warm-up: JIT, key setup, page faults
  for (let round = 0; round < ROUNDS; round++) {
    for (const c of candidates) {
      let packets = 0;
      let seconds = 0;
      const end = performance.now() + ROUND_MS;
      while (performance.now() < end) {
        const done = await c.step();
        packets += done.packets;
        seconds += done.seconds;
      }
      c.best = Math.max(c.best, packets / seconds);
    }
  }
}

function line(name: string, packetsPerSecond: number): string {
  const pps = Math.round(packetsPerSecond).toLocaleString("en-US");
  const gbps = ((packetsPerSecond * PACKET * 8) / 1e9).toFixed(2);
  return `  ${name.padEnd(50)} ${pps.padStart(11)} packets/s ${gbps.padStart(7)} Gbit/s`;
}

function percent(part: number, whole: number): string {
  return `${((100 * part) / whole).toFixed(0)}%`;
}

// ---------------------------------------------------------------------------------------
// AEAD

async function aeadBenchmarks(): Promise<void> {
  const key = randomBytes(32);
  const keys = new AeadKeyTable(1);
  keys.set(0, key);
  const plaintext = randomBytes(PACKET);

  const sealing = new PacketBatch(BATCH, { slotSize: 1536, headroom: 16, tailroom: 32 });
  for (let i = 0; i < BATCH; i++) sealing.setPacket(i, plaintext);
  let counter = 0n;
  const seal = candidate(`native sealBatch (${BATCH} per call)`, () => {
    for (let i = 0; i < BATCH; i++) sealing.counters[i] = counter++;
    sealing.lengths.fill(PACKET);
    return { packets: BATCH, seconds: timed(() => sealBatch(sealing, keys, BATCH)) };
  });

  // Opening decrypts in place; sealing again with the same counters restores the
  // ciphertext, outside the timed part.
  const opening = new PacketBatch(BATCH, { slotSize: 1536, headroom: 16, tailroom: 32 });
  for (let i = 0; i < BATCH; i++) opening.setPacket(i, plaintext);
  sealBatch(opening, keys, BATCH);
  const open = candidate(`native openBatch (${BATCH} per call)`, () => {
    const seconds = timed(() => {
      if (openBatch(opening, keys, BATCH) !== 0) throw new Error("authentication failed");
    });
    sealBatch(opening, keys, BATCH);
    return { packets: BATCH, seconds };
  });

  const out = Buffer.alloc(PACKET + TAG);
  let single = 0;
  const perCall = candidate("native, one call per packet (seal)", () => ({
    packets: BATCH,
    seconds: timed(() => {
      for (let i = 0; i < BATCH; i++) nativeTransportCipher.seal(key, single++, plaintext, out);
    }),
  }));

  let nodeCounter = 0n;
  const nodeSeal = candidate("node:crypto createCipheriv per packet (seal)", () => ({
    packets: BATCH,
    seconds: timed(() => {
      for (let i = 0; i < BATCH; i++) {
        const cipher = createCipheriv("chacha20-poly1305", key, wireguardNonce(nodeCounter++), {
          authTagLength: TAG,
        });
        cipher.update(plaintext);
        cipher.final();
        cipher.getAuthTag();
      }
    }),
  }));

  const sealedByNode = (() => {
    const cipher = createCipheriv("chacha20-poly1305", key, wireguardNonce(7n), {
      authTagLength: TAG,
    });
    return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  })();
  const nodeOpen = candidate("node:crypto createDecipheriv per packet (open)", () => ({
    packets: BATCH,
    seconds: timed(() => {
      for (let i = 0; i < BATCH; i++) {
        const decipher = createDecipheriv("chacha20-poly1305", key, wireguardNonce(7n), {
          authTagLength: TAG,
        });
        decipher.setAuthTag(sealedByNode.subarray(PACKET));
        decipher.update(sealedByNode.subarray(0, PACKET));
        decipher.final();
      }
    }),
  }));

  let nobleCounter = 0n;
  const noble = candidate("@noble/ciphers chacha20poly1305 (seal)", () => ({
    packets: 16,
    seconds: timed(() => {
      for (let i = 0; i < 16; i++) {
        chacha20poly1305(key, wireguardNonce(nobleCounter++)).encrypt(plaintext);
      }
    }),
  }));

  // OpenSSL alone, measured in C inside this process: one call does a whole round, split
  // between the streaming and the per-packet loop; they are kept as two figures.
  let streamingBest = 0;
  const reference = candidate("(OpenSSL in C)", () => {
    const rates = measureOpenSslReference(PACKET, 2 * ROUND_MS);
    streamingBest = Math.max(streamingBest, rates.streaming);
    return { packets: rates.perPacket, seconds: 1 };
  });

  console.log(`ChaCha20-Poly1305, ${PACKET}-byte packets`);
  await race([seal, open, perCall, nodeSeal, nodeOpen, noble, reference]);
  for (const c of [seal, open, perCall, nodeSeal, nodeOpen, noble]) {
    console.log(line(c.name, c.best));
  }
  console.log(
    `  batched seal is ${(seal.best / nodeSeal.best).toFixed(1)}x createCipheriv, ` +
      `${(seal.best / noble.best).toFixed(1)}x noble`,
  );

  console.log("\nReference: OpenSSL alone on this core");
  const speed = opensslSpeed();
  if (speed !== undefined) {
    console.log(line("openssl speed -evp chacha20-poly1305 -bytes 1420", speed));
  }
  console.log(line("Node's OpenSSL in C, streaming EVP_EncryptUpdate", streamingBest));
  console.log(line("Node's OpenSSL in C, full AEAD per packet", reference.best));
  if (speed !== undefined) {
    console.log(
      `  batched path vs openssl speed: seal ${percent(seal.best, speed)}, ` +
        `open ${percent(open.best, speed)} (target >= 70%)`,
    );
  }
  console.log(
    `  batched path vs streaming in C, same process: seal ${percent(seal.best, streamingBest)}, ` +
      `open ${percent(open.best, streamingBest)}`,
  );
  console.log(
    `  batched seal vs full AEAD per packet in C: ${percent(seal.best, reference.best)} ` +
      "(the rest is OpenSSL's per-message cost, which no binding avoids)",
  );
}

/** `openssl speed` for this packet size, in packets per second; undefined without openssl. */
function opensslSpeed(): number | undefined {
  try {
    const output = execFileSync(
      "openssl",
      ["speed", "-evp", "chacha20-poly1305", "-bytes", String(PACKET), "-seconds", "2"],
      { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 15_000 },
    );
    // Last line: "ChaCha20-Poly1305  2110948.57k" (thousands of bytes per second).
    const match = /([0-9.]+)k\s*$/.exec(output.trim());
    if (match) return (Number(match[1]) * 1000) / PACKET;
    console.log("  could not read the `openssl speed` output");
  } catch {
    console.log("  `openssl` command not available: `openssl speed` skipped");
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------
// UDP

interface Closable {
  close(): void;
}

function nativeUdp(name: string, gso: boolean, sockets: Closable[]): Candidate {
  const sender = UdpBatchSocket.open({ host: "127.0.0.1", gso });
  const receiver = UdpBatchSocket.open({ host: "127.0.0.1" });
  sockets.push(sender, receiver);
  const out = new PacketBatch(BATCH, { slotSize: 1536 });
  const incoming = new PacketBatch(BATCH, { slotSize: 1536 });
  const payload = randomBytes(PACKET);
  for (let i = 0; i < BATCH; i++) {
    out.setPacket(i, payload);
    writeEndpoint(out.endpoints, i, { address: "127.0.0.1", port: receiver.port });
  }
  // Send a batch, then drain what arrived: one thread doing both ends, as a node would.
  return candidate(name, () => {
    let received = 0;
    const seconds = timed(() => {
      let sent = 0;
      while (sent < BATCH) sent += sender.sendBatch(out, BATCH - sent, sent);
      for (let n = receiver.recvBatch(incoming); n > 0; n = receiver.recvBatch(incoming)) {
        received += n;
      }
    });
    return { packets: received, seconds };
  });
}

async function dgramUdp(sockets: Closable[]): Promise<Candidate> {
  const bind = (socket: Socket) =>
    new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", () => resolve()));
  const sender = createSocket("udp4");
  const receiver = createSocket({ type: "udp4", recvBufferSize: 4 << 20 });
  sockets.push(sender, receiver);
  await Promise.all([bind(sender), bind(receiver)]);
  const port = receiver.address().port;
  const payload = randomBytes(PACKET);
  let received = 0;
  let target = 0;
  let arrived: (() => void) | null = null;
  receiver.on("message", () => {
    received++;
    if (arrived && received >= target) arrived();
  });
  // A burst of BATCH datagrams, then wait for them (or a short timeout, should the kernel
  // drop some): the same shape as the native loop.
  return candidate("node:dgram send / 'message'", async () => {
    const before = received;
    const start = performance.now();
    target = received + BATCH;
    const done = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 20);
      arrived = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    for (let i = 0; i < BATCH; i++) sender.send(payload, port, "127.0.0.1");
    await done;
    arrived = null;
    return { packets: received - before, seconds: (performance.now() - start) / 1000 };
  });
}

async function udpBenchmarks(): Promise<void> {
  console.log(`\nUDP over 127.0.0.1, ${PACKET}-byte datagrams, send + receive on one thread`);
  const sockets: Closable[] = [];
  try {
    const batched = nativeUdp(`sendmmsg/recvmmsg (${BATCH} per call)`, false, sockets);
    const gso = nativeUdp("sendmmsg with UDP GSO + recvmmsg", true, sockets);
    const dgram = await dgramUdp(sockets);
    await race([batched, gso, dgram]);
    for (const c of [batched, gso, dgram]) console.log(line(c.name, c.best));
    console.log(
      `  batched UDP is ${(batched.best / dgram.best).toFixed(1)}x node:dgram, ` +
        `${(gso.best / dgram.best).toFixed(1)}x with GSO`,
    );
  } finally {
    for (const socket of sockets) socket.close();
  }
}

const started = performance.now();
console.log(
  `edgetun native data path, Node ${process.version}, OpenSSL ${process.versions.openssl}, ` +
    `best of ${ROUNDS} interleaved ${ROUND_MS} ms rounds\n`,
);
await aeadBenchmarks();
await udpBenchmarks();
console.log(`\n(total ${((performance.now() - started) / 1000).toFixed(1)} s)`);
