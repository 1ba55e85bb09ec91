// Fuzz targets shared by the property tests (a few thousand inputs in `npm test`) and the
// long run (`npm run fuzz`, a million or more per target): each is an input generator and a
// check that throws when the code under test misbehaves. What "misbehaves" means, per target:
// - datagrams: anything at all reaches the device's receive path; nothing throws, and every
//   datagram is accounted for (a drop reason or a handshake counter moves);
// - handshakes: initiations and responses mutated, one in eight with mac1 recomputed (so the
//   Noise parser itself is reached), the rest failing mac1 as a flood's would; nothing
//   throws, each is counted, a real handshake still works after;
// - config: wg-quick files, mostly well-formed with broken and random lines; a config or a
//   ConfigError, nothing else, and no key-shaped text in the message;
// - control: `set` requests of protocol keys with good, bad and random values; an errno,
//   never a throw, and a refused set leaves the device exactly as it was.
import fc from "fast-check";
import { mac1Key } from "../../src/core/cookie.js";
import { mac } from "../../src/core/crypto.js";
import type { Device } from "../../src/core/device.js";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { MessageType, macOffsets } from "../../src/core/messages.js";
import { parseConfig } from "../../src/host/config.js";
import { ConfigError } from "../../src/host/errors.js";
import { Reconfigurer, type ReconfigurationHost } from "../../src/host/reconfigure.js";
import { handleGet, handleSet, type UapiHost } from "../../src/host/uapi.js";
import { ipv4Packet, pairOfNodes } from "./index.js";

export interface FuzzTarget<T> {
  readonly name: string;
  readonly input: fc.Arbitrary<T>;
  /** Throws when the code under test misbehaves on `input`. */
  check(input: T): void | Promise<void>;
}

function fail(message: string): never {
  throw new Error(message);
}

function accounted(device: Device): number {
  const s = device.stats;
  return (
    s.totalDrops +
    s.handshakeInitiationsReceived +
    s.handshakeResponsesReceived +
    s.cookieRepliesReceived +
    s.handshakesCompleted
  );
}

/** Anything as a datagram, and valid messages with bytes changed, added or cut. */
export function datagramTarget(): FuzzTarget<Buffer> {
  const { net, b } = pairOfNodes();
  net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "hello"));
  const samples = [1, 2, 4].map((type) =>
    Buffer.from(net.log.find((e) => e.datagram[0] === type)!.datagram),
  );
  const source = net.node("a").endpoint;
  const mutated = fc
    .tuple(
      fc.constantFrom(...samples),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { maxLength: 4 }),
      fc.integer({ min: -3, max: 3 }),
    )
    .map(([sample, edits, resize]) => {
      const message = Buffer.from(sample);
      for (const [offset, xor] of edits) message[offset % message.length]! ^= xor;
      return resize >= 0
        ? Buffer.concat([message, Buffer.alloc(resize)])
        : message.subarray(0, message.length + resize);
    });
  return {
    name: "datagram receive path",
    input: fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
      mutated,
    ),
    check(datagram) {
      const before = accounted(b.device);
      b.device.handleDatagram(datagram, source);
      const sent = b.device.actions.datagrams.length;
      b.device.actions.clear();
      // A keepalive or data that opened still moves nothing but the peer's own counters.
      if (accounted(b.device) === before && sent === 0 && datagram[0] !== 4) {
        fail(`a ${datagram.length}-byte datagram of type ${datagram[0]} went uncounted`);
      }
    },
  };
}

/** Handshake messages with mac1 recomputed after the mutation: the Noise parser's input. */
export function handshakeTarget(): FuzzTarget<Buffer> {
  const { net, a, b } = pairOfNodes();
  net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "hello"));
  const initiation = Buffer.from(net.log.find((e) => e.datagram[0] === 1)!.datagram);
  const response = Buffer.from(net.log.find((e) => e.datagram[0] === 2)!.datagram);
  const keys = { [MessageType.HandshakeInitiation]: mac1Key(b.key.publicKey) };
  const responseKey = mac1Key(a.key.publicKey);
  const edited = fc.tuple(
    fc.constantFrom(initiation, response),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), {
      minLength: 1,
      maxLength: 6,
    }),
  );
  // As a flood is: most messages fail mac1 (any byte changed, the macs left as they were),
  // which costs a keyed BLAKE2s; one in eight gets mac1 recomputed and reaches the Noise
  // parser, which costs a Diffie-Hellman. So a long run reaches 10^6 inputs in minutes.
  const failingMac1 = edited.map(([sample, edits]) => {
    const message = Buffer.from(sample);
    for (const [offset, xor] of edits) message[4 + (offset % (message.length - 4))]! ^= xor;
    return message;
  });
  const pastMac1 = edited.map(([sample, edits]) => {
    const message = Buffer.from(sample);
    const type = message[0] as MessageType.HandshakeInitiation | MessageType.HandshakeResponse;
    const { mac1 } = macOffsets(type);
    // Header bytes stay, so the message reaches the parser rather than the length check.
    for (const [offset, xor] of edits) message[4 + (offset % (mac1 - 4))]! ^= xor;
    const key = type === MessageType.HandshakeInitiation ? keys[type] : responseKey;
    message.set(mac(key, message.subarray(0, mac1)), mac1);
    return message;
  });
  const input = fc.oneof({ arbitrary: failingMac1, weight: 7 }, { arbitrary: pastMac1, weight: 1 });
  let checked = 0;
  return {
    name: "handshake parser",
    input,
    check(message) {
      const target = message[0] === MessageType.HandshakeInitiation ? b : a;
      const before = accounted(target.device);
      target.device.handleDatagram(message, net.node(target === b ? "a" : "b").endpoint);
      target.device.actions.clear();
      if (accounted(target.device) === before) fail("a handshake message went uncounted");
      // Now and then: the pair still makes a real handshake after all that.
      if (++checked % 1000 === 0) {
        a.device.resetPeerSessions(a.device.peer(b.key.publicKey)!);
        // Past Rekey-Timeout (a new initiation may go) and the under-load window the fuzzing
        // opened (no cookie round needed).
        net.clock.advance(6000);
        net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "still"));
        if (b.delivered.at(-1)?.subarray(20).toString() !== "still") {
          fail("no handshake possible after the fuzzing");
        }
      }
    },
  };
}

/** wg-quick files: mostly valid lines, some broken, noisy or random, keys in odd places. */
export function configTarget(): FuzzTarget<string> {
  const privateKey = generatePrivateKey();
  const peerKey = publicKeyOf(generatePrivateKey());
  const keyWindows = [privateKey, Buffer.from(privateKey, "base64").toString("hex")].flatMap(
    (text) => Array.from({ length: text.length - 39 }, (_, i) => text.slice(i, i + 40)),
  );
  const good = [
    "[Interface]",
    `PrivateKey = ${privateKey}`,
    "ListenPort = 51820",
    "Address = 10.0.0.1/24, fd00::1/64",
    "MTU = 1380",
    "FwMark = 0x20",
    "DNS = 1.1.1.1",
    "[Peer]",
    `PublicKey = ${peerKey}`,
    `PresharedKey = ${privateKey}`,
    "Endpoint = [fd00::9]:51820",
    "Endpoint = 192.0.2.1:1",
    "AllowedIPs = 10.0.0.0/24, ::/0",
    "PersistentKeepalive = 25",
    "# comment",
    "",
  ];
  const broken = [
    `PrivateKey: ${privateKey}`,
    `PrivateKey = ${privateKey.slice(0, -2)}`,
    `[${privateKey}]`,
    privateKey,
    "ListenPort = 70000",
    "MTU = 1",
    "AllowedIPs = 10.0.0.0/99",
    "Endpoint = nohost",
    "[Peer",
    "=",
  ];
  const line = fc.oneof(
    { weight: 20, arbitrary: fc.constantFrom(...good) },
    { weight: 3, arbitrary: fc.constantFrom(...broken) },
    {
      weight: 2,
      arbitrary: fc
        .tuple(fc.constantFrom(...good, ...broken), fc.string({ maxLength: 10 }))
        .map(([text, noise]) => text + noise),
    },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
  );
  return {
    name: "config parser",
    input: fc
      .array(line, { maxLength: 30 })
      .map((lines) => ["[Interface]", `PrivateKey = ${privateKey}`, ...lines].join("\n")),
    check(text) {
      try {
        const config = parseConfig(text, "fuzz.conf", { readFile: () => privateKey });
        if (config.privateKey?.length !== 32) fail("a config without a 32-byte key");
      } catch (error) {
        if (!(error instanceof ConfigError)) throw error;
        for (const window of keyWindows) {
          if (error.message.includes(window)) fail(`a key in the message: ${error.message}`);
        }
      }
    },
  };
}

/** `set` requests: protocol keys with good, bad and random values, in any order. */
export function controlTarget(): FuzzTarget<string[]> {
  const { b } = pairOfNodes();
  let port = 51820;
  let mark = 0;
  const state: ReconfigurationHost = {
    device: b.device,
    listenPort: () => port,
    prepareListenPort: (value: number) => ({ commit: () => (port = value), abort: () => {} }),
    fwmark: () => mark,
    setFwmark: (value: number) => void (mark = value),
  };
  const queue = new Reconfigurer(state);
  const host: UapiHost = {
    ...state,
    reconfigure: (change, source) => queue.apply(change, source),
  };
  const hexKey = fc
    .uint8Array({ minLength: 32, maxLength: 32 })
    .map((k) => Buffer.from(k).toString("hex"));
  const value = fc.oneof(
    hexKey,
    fc.constantFrom("0", "1", "true", "false", "65535", "65536", "-1", "", "0x10"),
    fc.constantFrom("10.0.0.0/8", "::/0", "fd00::1/129", "192.0.2.1:51820", "[fd00::1]:1", "a:b"),
    fc.string({ maxLength: 20 }),
  );
  const key = fc.constantFrom(
    "private_key",
    "listen_port",
    "fwmark",
    "replace_peers",
    "public_key",
    "remove",
    "update_only",
    "preshared_key",
    "endpoint",
    "persistent_keepalive_interval",
    "replace_allowed_ips",
    "allowed_ip",
    "protocol_version",
    "rx_bytes",
    "bogus",
  );
  const line = fc.oneof(
    { weight: 10, arbitrary: fc.tuple(key, value).map(([k, v]) => `${k}=${v}`) },
    { weight: 1, arbitrary: fc.string({ maxLength: 30 }) },
  );
  return {
    name: "control protocol (set)",
    input: fc.array(line, { maxLength: 12 }),
    async check(lines) {
      const before = handleGet(host);
      const errno = await handleSet(host, lines);
      b.device.actions.clear();
      if (!Number.isInteger(errno) || errno > 0) fail(`errno ${errno}`);
      if (errno !== 0 && handleGet(host) !== before) fail("a refused set changed the device");
      // Keep the device small, so each run costs the same.
      if (b.device.peers.size > 50) await handleSet(host, ["replace_peers=true"]);
    },
  };
}

export function allTargets(): Array<FuzzTarget<never>> {
  return [datagramTarget(), handshakeTarget(), configTarget(), controlTarget()] as Array<
    FuzzTarget<never>
  >;
}
