// The `get` reply's parser reads bytes (uapi-client.ts); this reads the same replies the plain
// way, line by line as the protocol writes them, and both must agree on every reply, and so
// must `edgetun show`'s text made from each, its keys in base64 as each alone decodes: peers
// with and without endpoints (IPv4, IPv6), handshakes, counters past 2^32, pre-shared keys,
// keepalives, any number of allowed IPs, now and then a malformed key, and lines the parser
// must pass over (keys it does not use, unknown keys of a known key's length and first
// letter, a line without "=", empty lines).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { formatState, interfaceState } from "../../src/cli/show.js";
import {
  ZERO_KEY_HEX,
  parseGetReply,
  type UapiDeviceState,
  type UapiPeerState,
} from "../../src/host/uapi-client.js";

/** The reference: each line split at its first "=", as the protocol defines it. */
function readLineByLine(text: string): UapiDeviceState {
  const state: UapiDeviceState = { privateKeyHex: null, listenPort: 0, fwmark: 0, peers: [] };
  let peer: UapiPeerState | null = null;
  for (const line of text.split("\n")) {
    const equals = line.indexOf("=");
    if (equals === -1) continue;
    const key = line.slice(0, equals);
    const value = line.slice(equals + 1);
    if (key === "public_key") {
      peer = {
        publicKeyHex: value,
        presharedKeyHex: ZERO_KEY_HEX,
        endpoint: null,
        allowedIps: [],
        lastHandshakeSec: 0,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepalive: 0,
      };
      state.peers.push(peer);
    } else if (peer === null) {
      if (key === "private_key") state.privateKeyHex = value === ZERO_KEY_HEX ? null : value;
      else if (key === "listen_port") state.listenPort = Number(value);
      else if (key === "fwmark") state.fwmark = Number(value);
    } else if (key === "allowed_ip") peer.allowedIps.push(value);
    else if (key === "preshared_key") peer.presharedKeyHex = value;
    else if (key === "endpoint") peer.endpoint = value;
    else if (key === "last_handshake_time_sec") peer.lastHandshakeSec = Number(value);
    else if (key === "rx_bytes") peer.rxBytes = Number(value);
    else if (key === "tx_bytes") peer.txBytes = Number(value);
    else if (key === "persistent_keepalive_interval") peer.persistentKeepalive = Number(value);
  }
  return state;
}

const keyHex = fc
  .uint8Array({ minLength: 32, maxLength: 32 })
  .map((bytes) => Buffer.from(bytes).toString("hex"));
const maybeZeroKeyHex = fc.oneof(keyHex, fc.constant(ZERO_KEY_HEX));
const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join("."));
const ipv6 = fc
  .array(fc.nat(0xffff), { minLength: 8, maxLength: 8 })
  .map((groups) => groups.map((group) => group.toString(16)).join(":"));
const endpoint = fc.oneof(
  fc.tuple(ipv4, fc.nat(65535)).map(([address, port]) => `${address}:${port}`),
  fc.tuple(ipv6, fc.nat(65535)).map(([address, port]) => `[${address}]:${port}`),
);
const allowedIp = fc.oneof(
  fc.tuple(ipv4, fc.nat(32)).map(([address, cidr]) => `${address}/${cidr}`),
  fc.tuple(ipv6, fc.nat(128)).map(([address, cidr]) => `${address}/${cidr}`),
);
/** Counters and times as the daemon prints them: often 0, sometimes past 2^32. */
const count = fc.oneof(fc.constant(0), fc.nat(9), fc.maxSafeNat());
/** Lines the parser passes over, wherever they come. */
const noise = fc.constantFrom(
  "protocol_version=1",
  "last_handshake_time_nsec=123456789",
  "public_kez=00",
  "allowed_iq=10.0.0.0/8",
  "rx_bytez=5",
  "no equals sign",
  "",
  "=",
);

/** Now and then a key no daemon sends: it must not change how the other keys read. */
const peerKeyHex = fc.oneof(
  { arbitrary: keyHex, weight: 20 },
  { arbitrary: fc.constantFrom("abc", "zz".repeat(32), "", "ab".repeat(33)), weight: 1 },
);

const peerLines = fc
  .record({
    publicKey: peerKeyHex,
    presharedKey: maybeZeroKeyHex,
    endpoint: fc.option(endpoint),
    handshake: fc.oneof(fc.constant(0), fc.integer({ min: 1_700_000_000, max: 1_800_000_000 })),
    rx: count,
    tx: count,
    keepalive: fc.oneof(fc.constant(0), fc.nat(65535)),
    allowedIps: fc.array(allowedIp, { maxLength: 4 }),
    noise: fc.array(noise, { maxLength: 2 }),
  })
  .map((peer) => [
    `public_key=${peer.publicKey}`,
    `preshared_key=${peer.presharedKey}`,
    ...peer.noise,
    ...(peer.endpoint === null ? [] : [`endpoint=${peer.endpoint}`]),
    `last_handshake_time_sec=${peer.handshake}`,
    `tx_bytes=${peer.tx}`,
    `rx_bytes=${peer.rx}`,
    `persistent_keepalive_interval=${peer.keepalive}`,
    ...peer.allowedIps.map((ip) => `allowed_ip=${ip}`),
  ]);

const replyText = fc
  .record({
    privateKey: maybeZeroKeyHex,
    listenPort: fc.nat(65535),
    fwmark: fc.oneof(fc.constant(0), fc.nat(0xffffffff)),
    peers: fc.array(peerLines, { maxLength: 12 }),
  })
  .map((reply) =>
    [
      `private_key=${reply.privateKey}`,
      `listen_port=${reply.listenPort}`,
      ...(reply.fwmark === 0 ? [] : [`fwmark=${reply.fwmark}`]),
      ...reply.peers.flat(),
      "",
    ].join("\n"),
  );

describe("the get reply read from its bytes", () => {
  it("reads every reply as the line-by-line reading does, and show prints the same", () => {
    fc.assert(
      fc.property(replyText, (text) => {
        const expected = readLineByLine(text);
        const parsed = parseGetReply(Buffer.from(text, "latin1"));
        expect(parsed).toEqual(expected);
        const shown = interfaceState("hub0", parsed);
        expect(shown.peers.map((peer) => peer.publicKey)).toEqual(
          expected.peers.map((peer) => Buffer.from(peer.publicKeyHex, "hex").toString("base64")),
        );
        const now = 1_800_000_100;
        expect(formatState(shown, now)).toBe(formatState(interfaceState("hub0", expected), now));
      }),
      { numRuns: 500 },
    );
  });

  it("reads a reply without its last newline, and an empty one", () => {
    const key = "ab".repeat(32);
    const state = parseGetReply(Buffer.from(`listen_port=7\npublic_key=${key}\nrx_bytes=12`));
    expect(state.listenPort).toBe(7);
    expect(state.peers).toMatchObject([{ publicKeyHex: key, rxBytes: 12 }]);
    expect(parseGetReply(Buffer.alloc(0))).toEqual(readLineByLine(""));
  });
});
