// Side-by-side timings of the candidate implementations of the WireGuard primitives
// (Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s), used to pick what src/crypto.ts builds on.
//
//   npx tsc -p tsconfig.build.json && npm run bench:crypto
//
// Absolute numbers from a shared machine are noisy; read the "vs best" ratios, which compare
// candidates measured in the same run. Every candidate is timed in several short rounds that
// alternate with its rivals, and its best round is reported, so that a burst of load from
// elsewhere hurts one round of one candidate rather than a whole column.
// BENCH_ROUND_MS (default 150) and BENCH_ROUNDS (default 3) change the measuring time.
import {
  createCipheriv,
  createHash,
  createHmac,
  diffieHellman,
  randomBytes,
  type KeyObject,
} from "node:crypto";
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";
import nacl from "tweetnacl";
import { x25519 } from "@noble/curves/ed25519.js";
import { blake2s } from "@noble/hashes/blake2.js";
import { hmac as nobleHmac } from "@noble/hashes/hmac.js";
import { chacha20poly1305, xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { blake2s as ownBlake2s, blake2sHash, hmacBlake2s } from "../src/core/blake2s.js";
import {
  aeadOpen,
  aeadSeal,
  dh,
  hash,
  hmac,
  mac,
  PrivateKey,
  publicKeyObject,
} from "../src/core/crypto.js";

const ROUND_MS = positiveNumber(process.env.BENCH_ROUND_MS, 150);
const ROUNDS = Math.floor(positiveNumber(process.env.BENCH_ROUNDS, 3));
const WARMUP_MS = 50;
/** Calls are made in batches so that reading the clock costs little next to fast primitives. */
const BATCH_TARGET_MS = 4;

function positiveNumber(text: string | undefined, fallback: number): number {
  const value = Number(text);
  return text !== undefined && Number.isFinite(value) && value > 0 ? value : fallback;
}

// ---------------------------------------------------------------------------------------------
// Measuring

/** One call of the operation under test; `i` counts calls and selects the input. */
type Operation = (i: number) => Uint8Array | null;

interface Candidate {
  name: string;
  run: Operation;
}

interface Job {
  title: string;
  /** Plaintext bytes per call, for the MB/s column (AEAD jobs only). */
  bytes?: number;
  /** How many distinct inputs the candidates cycle through (used by the agreement check). */
  inputs: number;
  candidates: Candidate[];
  /** Printed under the table, one line each, as a single note. */
  notes?: string[];
  /** Candidates that also count for a restricted choice, e.g. those taking raw peer keys. */
  alsoChoose?: { label: string; names: string[] };
}

/** Every result is folded into this value, which is printed at the end, so none is dead code. */
let sink = 0;

function consume(out: Uint8Array | null): void {
  sink = out === null ? (sink + 1) | 0 : (sink * 31 + out.length + out[out.length - 1]!) | 0;
}

interface Tally {
  calls: number;
  ms: number;
}

function timeFor(run: Operation, start: number, budgetMs: number): Tally {
  let i = start;
  let batch = 1;
  const begin = performance.now();
  let elapsed = 0;
  while (elapsed < budgetMs) {
    const batchStart = performance.now();
    for (let k = 0; k < batch; k++) consume(run(i++));
    const now = performance.now();
    elapsed = now - begin;
    if (now - batchStart < BATCH_TARGET_MS) batch *= 2;
  }
  return { calls: i - start, ms: elapsed };
}

interface Result {
  name: string;
  opsPerSec: number;
}

function measureJob(job: Job): Result[] {
  const best = job.candidates.map(() => 0);
  const next = job.candidates.map(() => 0);
  job.candidates.forEach((c, k) => {
    next[k] = timeFor(c.run, 0, WARMUP_MS).calls;
  });
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate the order between rounds so no candidate always runs right after another.
    const order = job.candidates.map((_, k) => k);
    if (round % 2 === 1) order.reverse();
    for (const k of order) {
      const tally = timeFor(job.candidates[k]!.run, next[k]!, ROUND_MS);
      next[k]! += tally.calls;
      best[k] = Math.max(best[k]!, (tally.calls * 1000) / tally.ms);
    }
  }
  return job.candidates.map((c, k) => ({ name: c.name, opsPerSec: best[k]! }));
}

/** Runs every candidate on the same inputs and reports whether they all return the same bytes. */
function agreement(job: Job): string {
  if (job.candidates.length < 2) return "single candidate";
  for (let i = 0; i < job.inputs; i++) {
    const outputs = job.candidates.map((c) => {
      const out = c.run(i);
      return out === null ? "null" : Buffer.from(out).toString("hex");
    });
    const first = outputs[0]!;
    const odd = outputs.findIndex((o) => o !== first);
    if (odd >= 0) {
      return `MISMATCH on input ${i}: "${job.candidates[0]!.name}" vs "${job.candidates[odd]!.name}"`;
    }
  }
  return `all candidates agree on ${job.inputs} inputs`;
}

// ---------------------------------------------------------------------------------------------
// Printing

function formatNumber(value: number, digits = 0): string {
  return value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function formatMicros(opsPerSec: number): string {
  const micros = 1e6 / opsPerSec;
  return micros >= 100 ? formatNumber(micros, 0) : formatNumber(micros, micros >= 10 ? 1 : 2);
}

function fastest(results: Result[], names?: string[]): Result {
  const pool = names ? results.filter((r) => names.includes(r.name)) : results;
  return pool.reduce((a, b) => (b.opsPerSec > a.opsPerSec ? b : a));
}

const chosenLines: string[] = [];

function report(job: Job, results: Result[], check: string): void {
  const top = fastest(results);
  const nameWidth = Math.max(30, ...results.map((r) => r.name.length));
  const header = ["candidate".padEnd(nameWidth), "ops/s".padStart(12), "µs/op".padStart(9)];
  if (job.bytes !== undefined) header.push("MB/s".padStart(9));
  header.push("vs best".padStart(8));
  console.log(`\n== ${job.title} ==`);
  console.log(`  ${header.join("  ")}`);
  for (const r of results) {
    const row = [
      r.name.padEnd(nameWidth),
      formatNumber(r.opsPerSec).padStart(12),
      formatMicros(r.opsPerSec).padStart(9),
    ];
    if (job.bytes !== undefined) {
      row.push(formatNumber((r.opsPerSec * job.bytes) / 1e6, 1).padStart(9));
    }
    row.push(`${(r.opsPerSec / top.opsPerSec).toFixed(2)}x`.padStart(8));
    console.log(`  ${row.join("  ")}`);
  }
  (job.notes ?? []).forEach((line, k) => console.log(`  ${k === 0 ? "note:" : "     "} ${line}`));
  console.log(`  check: ${check}`);
  let chosen = `${job.title}: ${top.name}`;
  if (results.length > 1) {
    const runnerUp = results
      .filter((r) => r !== top)
      .reduce((a, b) => (b.opsPerSec > a.opsPerSec ? b : a));
    chosen += ` (${(top.opsPerSec / runnerUp.opsPerSec).toFixed(2)}x faster than ${runnerUp.name})`;
  } else {
    chosen += " (only candidate)";
  }
  if (job.alsoChoose) {
    const restricted = fastest(results, job.alsoChoose.names);
    if (restricted !== top) chosen += `; ${job.alsoChoose.label}: ${restricted.name}`;
  }
  console.log(`  chosen: ${chosen}`);
  chosenLines.push(chosen);
}

// ---------------------------------------------------------------------------------------------
// Inputs

function pool(count: number, length: number | ((k: number) => number)): Buffer[] {
  return Array.from({ length: count }, (_, k) =>
    randomBytes(typeof length === "number" ? length : length(k)),
  );
}

function pick<T>(items: readonly T[], i: number): T {
  return items[i % items.length]!;
}

/** Writes the transport nonce (four zero bytes, then the counter little-endian) in place. */
function setCounter(nonce: Buffer, counter: number): Buffer {
  nonce.writeUInt32LE(0, 0);
  nonce.writeUInt32LE(counter >>> 0, 4);
  nonce.writeUInt32LE(Math.floor(counter / 0x100000000), 8);
  return nonce;
}

const TAG = 16;

// X25519
const DH_PAIRS = 16;
const localKeys = pool(DH_PAIRS, 32).map((raw) => new PrivateKey(raw));
const peerPublics = pool(DH_PAIRS, 32).map((raw) => new PrivateKey(raw).publicKey);
const peerObjects = peerPublics.map((raw) => publicKeyObject(raw));
const seeds = pool(64, 32);

// BLAKE2s: handshake-sized inputs, from a bare chaining value up to a whole initiation.
const HASH_LENGTHS = [32, 60, 64, 80, 116, 148];
const hashInputs = pool(HASH_LENGTHS.length * 4, (k) => pick(HASH_LENGTHS, k));
// HMAC-BLAKE2s as the KDF uses it: 32-byte keys, messages of 1, 32 and 33 bytes.
const hmacKeys = pool(8, 32);
const hmacInputs = pool(9, (k) => pick([1, 32, 33], k));
// mac1: 32-byte key over the first 116 bytes of an initiation or 60 of a response.
const macKeys = pool(4, 32);
const macInputs = pool(8, (k) => pick([116, 60], k));

// ChaCha20-Poly1305
const PACKET = 1420;
const HANDSHAKE_PAYLOAD = 48;
const aeadKey = randomBytes(32);
const packet = randomBytes(PACKET);
const handshakePayload = randomBytes(HANDSHAKE_PAYLOAD);
const handshakeAd = randomBytes(32);
const nodeNonce = Buffer.alloc(12);
const nobleNonce = Buffer.alloc(12);
const nodeOut = new Uint8Array(PACKET + TAG);
const nobleOut = new Uint8Array(PACKET + TAG);

// XChaCha20-Poly1305 cookie reply: 16-byte cookie, 24-byte nonce, the mac1 as AD.
const cookieKey = randomBytes(32);
const cookies = pool(4, 16);
const cookieNonces = pool(4, 24);
const cookieAds = pool(4, 16);

// ---------------------------------------------------------------------------------------------
// Jobs

const NODE_CACHED = "node diffieHellman, cached KeyObject";
const NODE_IMPORT = "node dh() + JWK import of raw peer";
const NACL_DH = "tweetnacl scalarMult";
const NOBLE_DH = "noble x25519.getSharedSecret";

const jobs: Job[] = [
  {
    title: "X25519 shared secret",
    inputs: DH_PAIRS,
    candidates: [
      {
        name: NODE_CACHED,
        run: (i) =>
          diffieHellman({
            privateKey: pick(localKeys, i).keyObject,
            publicKey: pick(peerObjects, i),
          }),
      },
      { name: NODE_IMPORT, run: (i) => dh(pick(localKeys, i), pick(peerPublics, i)) },
      { name: NACL_DH, run: (i) => nacl.scalarMult(pick(localKeys, i).raw, pick(peerPublics, i)) },
      {
        name: NOBLE_DH,
        run: (i) => x25519.getSharedSecret(pick(localKeys, i).raw, pick(peerPublics, i)),
      },
    ],
    notes: [
      "a cached KeyObject fits a peer's static key (imported once per peer); ephemeral keys",
      "arrive as raw bytes in every handshake message, so they pay for the import",
    ],
    alsoChoose: { label: "raw peer key", names: [NODE_IMPORT, NACL_DH, NOBLE_DH] },
  },
  {
    title: "X25519 key generation (public key from 32 random bytes)",
    inputs: seeds.length,
    candidates: [
      {
        name: "src/crypto.ts PrivateKey (node JWK)",
        run: (i) => new PrivateKey(pick(seeds, i)).publicKey,
      },
      { name: "tweetnacl scalarMult.base", run: (i) => nacl.scalarMult.base(pick(seeds, i)) },
      { name: "noble x25519.getPublicKey", run: (i) => x25519.getPublicKey(pick(seeds, i)) },
    ],
    notes: ["PrivateKey also keeps a KeyObject ready for dh(); the others return bytes only"],
  },
  {
    title: "BLAKE2s-256 hash (32..148-byte inputs)",
    inputs: hashInputs.length,
    candidates: [
      {
        name: 'node createHash("blake2s256")',
        run: (i) => createHash("blake2s256").update(pick(hashInputs, i)).digest(),
      },
      { name: "noble blake2s", run: (i) => blake2s(pick(hashInputs, i)) },
      { name: "edgetun blake2s.ts", run: (i) => blake2sHash([pick(hashInputs, i)]) },
    ],
  },
  {
    title: "HMAC-BLAKE2s (32-byte key, 1..33-byte message)",
    inputs: hmacKeys.length * hmacInputs.length,
    candidates: [
      {
        name: 'node createHmac("blake2s256")',
        run: (i) =>
          createHmac("blake2s256", pick(hmacKeys, i)).update(pick(hmacInputs, i)).digest(),
      },
      {
        name: "noble hmac(blake2s)",
        run: (i) => nobleHmac(blake2s, pick(hmacKeys, i), pick(hmacInputs, i)),
      },
      {
        name: "edgetun blake2s.ts",
        run: (i) => hmacBlake2s(pick(hmacKeys, i), [pick(hmacInputs, i)]),
      },
    ],
  },
  {
    title: "keyed BLAKE2s-128 MAC (mac1, 60/116-byte messages)",
    inputs: macKeys.length * macInputs.length,
    candidates: [
      {
        name: "noble blake2s({key, dkLen: 16})",
        run: (i) => blake2s(pick(macInputs, i), { key: pick(macKeys, i), dkLen: 16 }),
      },
      {
        name: "edgetun blake2s.ts",
        run: (i) => ownBlake2s(pick(macInputs, i), pick(macKeys, i), 16),
      },
    ],
    notes: [
      "node:crypto has no keyed BLAKE2s: createHash('blake2s256') takes no key, and",
      "HMAC-BLAKE2s is a different function",
    ],
  },
  {
    title: `ChaCha20-Poly1305 seal, ${PACKET}-byte transport packet`,
    bytes: PACKET,
    inputs: 8,
    candidates: [
      {
        name: "node createCipheriv per packet",
        run: (i) => {
          const cipher = createCipheriv("chacha20-poly1305", aeadKey, setCounter(nodeNonce, i), {
            authTagLength: TAG,
          });
          nodeOut.set(cipher.update(packet), 0);
          cipher.final();
          nodeOut.set(cipher.getAuthTag(), PACKET);
          return nodeOut;
        },
      },
      {
        name: "noble chacha20poly1305",
        run: (i) => chacha20poly1305(aeadKey, setCounter(nobleNonce, i)).encrypt(packet, nobleOut),
      },
    ],
    notes: [
      "both write ciphertext ‖ tag into a reused buffer; tweetnacl has no ChaCha20-Poly1305",
      "(only XSalsa20-Poly1305), so it is not a candidate",
    ],
  },
  {
    title: `ChaCha20-Poly1305 seal, ${HANDSHAKE_PAYLOAD}-byte handshake payload + 32-byte AD`,
    bytes: HANDSHAKE_PAYLOAD,
    inputs: 8,
    candidates: [
      {
        name: "node createCipheriv per message",
        run: (i) => {
          const cipher = createCipheriv("chacha20-poly1305", aeadKey, setCounter(nodeNonce, i), {
            authTagLength: TAG,
          });
          cipher.setAAD(handshakeAd, { plaintextLength: HANDSHAKE_PAYLOAD });
          const head = cipher.update(handshakePayload);
          cipher.final();
          return Buffer.concat([head, cipher.getAuthTag()]);
        },
      },
      {
        name: "noble chacha20poly1305",
        run: (i) =>
          chacha20poly1305(aeadKey, setCounter(nobleNonce, i), handshakeAd).encrypt(
            handshakePayload,
          ),
      },
    ],
    notes: ["tweetnacl has no ChaCha20-Poly1305"],
  },
  {
    title: "XChaCha20-Poly1305 seal, 16-byte cookie + 16-byte AD",
    bytes: 16,
    inputs: cookies.length,
    candidates: [
      {
        name: "noble xchacha20poly1305",
        run: (i) =>
          xchacha20poly1305(cookieKey, pick(cookieNonces, i), pick(cookieAds, i)).encrypt(
            pick(cookies, i),
          ),
      },
    ],
    notes: ["node:crypto (OpenSSL) has no XChaCha20-Poly1305, so noble is the only candidate"],
  },
];

// ---------------------------------------------------------------------------------------------
// Full handshake from primitives: initiation created and consumed, response created and consumed,
// transport keys derived on both sides, mac1 computed and checked on both messages (no Device,
// no sockets, no peer lookup). It mirrors src/noise.ts: 2 key generations and 6 X25519s (the
// static-static one is precomputed per peer), 2 AEAD seals + 2 opens of 32/12-byte handshake
// payloads and 1 of an empty one, 13 BLAKE2s and 42 HMAC-BLAKE2s calls.

interface Suite<P, Q> {
  name: string;
  keyFromSeed(seed: Uint8Array): P;
  publicOf(key: P): Uint8Array;
  /** A peer's static public key prepared once, as a peer object would keep it. */
  cachePublic(raw: Uint8Array): Q;
  dh(key: P, peer: Q | Uint8Array): Uint8Array | null;
  hash(...parts: Uint8Array[]): Uint8Array;
  hmac(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array;
  seal(key: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array;
  open(key: Uint8Array, sealed: Uint8Array, ad: Uint8Array): Uint8Array | null;
  mac(key: Uint8Array, message: Uint8Array): Uint8Array;
}

const ZERO_NONCE = new Uint8Array(12);

const nodeSuite: Suite<PrivateKey, KeyObject> = {
  name: "src/crypto.ts as shipped (OpenSSL + blake2s.ts)",
  keyFromSeed: (seed) => new PrivateKey(seed),
  publicOf: (key) => key.publicKey,
  cachePublic: (raw) => publicKeyObject(raw),
  dh,
  hash,
  hmac,
  seal: aeadSeal,
  open: aeadOpen,
  mac,
};

interface NobleKey {
  raw: Uint8Array;
  publicKey: Uint8Array;
}

const nobleSuite: Suite<NobleKey, Uint8Array> = {
  name: "all noble (pure JS)",
  keyFromSeed: (seed) => ({ raw: seed, publicKey: x25519.getPublicKey(seed) }),
  publicOf: (key) => key.publicKey,
  cachePublic: (raw) => raw,
  dh: (key, peer) => {
    try {
      return x25519.getSharedSecret(key.raw, peer);
    } catch {
      return null;
    }
  },
  hash: (...parts) => {
    const h = blake2s.create();
    for (const part of parts) h.update(part);
    return h.digest();
  },
  hmac: (key, ...parts) => {
    const h = nobleHmac.create(blake2s, key);
    for (const part of parts) h.update(part);
    return h.digest();
  },
  seal: (key, plaintext, ad) => chacha20poly1305(key, ZERO_NONCE, ad).encrypt(plaintext),
  open: (key, sealed, ad) => {
    try {
      return chacha20poly1305(key, ZERO_NONCE, ad).decrypt(sealed);
    } catch {
      return null;
    }
  },
  mac: (key, message) => blake2s(message, { key, dkLen: 16 }),
};

const ascii = (text: string): Buffer => Buffer.from(text, "ascii");
const CONSTRUCTION = ascii("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s");
const IDENTIFIER = ascii("WireGuard v1 zx2c4 Jason@zx2c4.com");
const LABEL_MAC1 = ascii("mac1----");
const ONE = Uint8Array.of(1);
const TWO = Uint8Array.of(2);
const THREE = Uint8Array.of(3);
const EMPTY = new Uint8Array(0);
const PSK = new Uint8Array(32);
const TIMESTAMP = randomBytes(12);
const INITIATION = 148;
const RESPONSE = 92;

function required<T>(value: T | null, what: string): T {
  if (value === null) throw new Error(`handshake bench: ${what} failed`);
  return value;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
}

/** Builds a full-handshake operation over one suite; returns the initiator's transport keys. */
function handshakeOperation<P, Q>(s: Suite<P, Q>, ephemeralSeeds: Buffer[]): Operation {
  const kdf1 = (ck: Uint8Array, input: Uint8Array): Uint8Array => s.hmac(s.hmac(ck, input), ONE);
  const kdf2 = (ck: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array] => {
    const prk = s.hmac(ck, input);
    const t1 = s.hmac(prk, ONE);
    return [t1, s.hmac(prk, t1, TWO)];
  };
  const kdf3 = (ck: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array, Uint8Array] => {
    const prk = s.hmac(ck, input);
    const t1 = s.hmac(prk, ONE);
    const t2 = s.hmac(prk, t1, TWO);
    return [t1, t2, s.hmac(prk, t2, THREE)];
  };

  // Per-device and per-peer state that exists before any handshake.
  const initiatorStatic = s.keyFromSeed(pick(seeds, 0));
  const responderStatic = s.keyFromSeed(pick(seeds, 1));
  const initiatorPublic = s.publicOf(initiatorStatic);
  const responderPublic = s.publicOf(responderStatic);
  const responderAtInitiator = s.cachePublic(responderPublic);
  const initiatorAtResponder = s.cachePublic(initiatorPublic);
  const staticStatic = required(s.dh(initiatorStatic, responderAtInitiator), "static-static");
  const initialCk = s.hash(CONSTRUCTION);
  const initialHash = s.hash(initialCk, IDENTIFIER);
  const responderInitialHash = s.hash(initialHash, responderPublic);
  const mac1ToResponder = s.hash(LABEL_MAC1, responderPublic);
  const mac1ToInitiator = s.hash(LABEL_MAC1, initiatorPublic);

  return (i) => {
    // Initiator: create the initiation.
    let ck: Uint8Array = initialCk;
    let h = s.hash(initialHash, responderPublic);
    const ei = s.keyFromSeed(pick(ephemeralSeeds, 2 * i));
    const eiPublic = s.publicOf(ei);
    ck = kdf1(ck, eiPublic);
    h = s.hash(h, eiPublic);
    let key: Uint8Array;
    [ck, key] = kdf2(ck, required(s.dh(ei, responderAtInitiator), "es"));
    const encryptedStatic = s.seal(key, initiatorPublic, h);
    h = s.hash(h, encryptedStatic);
    [ck, key] = kdf2(ck, staticStatic);
    const encryptedTimestamp = s.seal(key, TIMESTAMP, h);
    h = s.hash(h, encryptedTimestamp);
    const initiation = new Uint8Array(INITIATION);
    initiation[0] = 1;
    initiation.set(eiPublic, 8);
    initiation.set(encryptedStatic, 40);
    initiation.set(encryptedTimestamp, 88);
    initiation.set(s.mac(mac1ToResponder, initiation.subarray(0, 116)), 116);
    const initiatorCk = ck;
    const initiatorHash = h;

    // Responder: check mac1, consume the initiation.
    if (
      !sameBytes(s.mac(mac1ToResponder, initiation.subarray(0, 116)), initiation.subarray(116, 132))
    ) {
      throw new Error("handshake bench: initiation mac1");
    }
    const remoteEphemeral = initiation.subarray(8, 40);
    ck = initialCk;
    h = responderInitialHash;
    ck = kdf1(ck, remoteEphemeral);
    h = s.hash(h, remoteEphemeral);
    [ck, key] = kdf2(ck, required(s.dh(responderStatic, remoteEphemeral), "es"));
    const remoteStatic = required(s.open(key, initiation.subarray(40, 88), h), "open static");
    if (!sameBytes(remoteStatic, initiatorPublic)) throw new Error("handshake bench: static");
    h = s.hash(h, initiation.subarray(40, 88));
    [ck, key] = kdf2(ck, staticStatic);
    required(s.open(key, initiation.subarray(88, 116), h), "open timestamp");
    h = s.hash(h, initiation.subarray(88, 116));

    // Responder: create the response and its transport keys.
    const er = s.keyFromSeed(pick(ephemeralSeeds, 2 * i + 1));
    const erPublic = s.publicOf(er);
    ck = kdf1(ck, erPublic);
    h = s.hash(h, erPublic);
    ck = kdf1(ck, required(s.dh(er, remoteEphemeral), "ee"));
    ck = kdf1(ck, required(s.dh(er, initiatorAtResponder), "se"));
    let tau: Uint8Array;
    [ck, tau, key] = kdf3(ck, PSK);
    h = s.hash(h, tau);
    const encryptedNothing = s.seal(key, EMPTY, h);
    h = s.hash(h, encryptedNothing);
    consume(h); // the responder's final hash: kept by a real peer, folded into the sink here
    const response = new Uint8Array(RESPONSE);
    response[0] = 2;
    response.set(erPublic, 12);
    response.set(encryptedNothing, 44);
    response.set(s.mac(mac1ToInitiator, response.subarray(0, 60)), 60);
    const [responderReceive, responderSend] = kdf2(ck, EMPTY);

    // Initiator: check mac1, consume the response, derive its transport keys.
    if (!sameBytes(s.mac(mac1ToInitiator, response.subarray(0, 60)), response.subarray(60, 76))) {
      throw new Error("handshake bench: response mac1");
    }
    const responderEphemeral = response.subarray(12, 44);
    ck = initiatorCk;
    h = initiatorHash;
    ck = kdf1(ck, responderEphemeral);
    h = s.hash(h, responderEphemeral);
    ck = kdf1(ck, required(s.dh(ei, responderEphemeral), "ee"));
    ck = kdf1(ck, required(s.dh(initiatorStatic, responderEphemeral), "se"));
    [ck, tau, key] = kdf3(ck, PSK);
    h = s.hash(h, tau);
    required(s.open(key, response.subarray(44, 60), h), "open empty");
    h = s.hash(h, response.subarray(44, 60));
    consume(h);
    const [initiatorSend, initiatorReceive] = kdf2(ck, EMPTY);
    if (
      !sameBytes(initiatorSend, responderReceive) ||
      !sameBytes(initiatorReceive, responderSend)
    ) {
      throw new Error("handshake bench: transport keys differ");
    }
    return Buffer.concat([initiatorSend, initiatorReceive]);
  };
}

const ephemeralSeeds = pool(32, 32);
jobs.push({
  title: "full handshake from primitives (both sides, 2 messages)",
  inputs: ephemeralSeeds.length / 2,
  candidates: [
    { name: nodeSuite.name, run: handshakeOperation(nodeSuite, ephemeralSeeds) },
    { name: nobleSuite.name, run: handshakeOperation(nobleSuite, ephemeralSeeds) },
  ],
  notes: [
    "per handshake: 2 key generations, 6 X25519 (4 with a raw peer key), 3 AEAD seals + 3 opens",
    "(32, 12 and 0 bytes), 4 mac1, 13 BLAKE2s and 42 HMAC-BLAKE2s; no Device, no sockets",
  ],
});

// ---------------------------------------------------------------------------------------------

const started = performance.now();
console.log("edgetun crypto bench");
console.log(`node ${process.version} (${process.arch}), OpenSSL ${process.versions.openssl}`);
console.log(`cpu: ${cpus()[0]?.model ?? "unknown"} (${cpus().length} logical)`);
console.log(
  `timing: ${WARMUP_MS} ms warm-up, then best of ${ROUNDS} × ${ROUND_MS} ms per candidate; ` +
    "compare ratios, not absolute numbers",
);

for (const job of jobs) {
  const check = agreement(job);
  report(job, measureJob(job), check);
}

console.log("\n== chosen (fastest per job in this run) ==");
for (const line of chosenLines) console.log(`  ${line}`);
console.log(
  `\ndone in ${((performance.now() - started) / 1000).toFixed(1)} s (result checksum ${sink >>> 0})`,
);
