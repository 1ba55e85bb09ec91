// The addon's X25519 on raw keys: RFC 7748's test vectors, agreement with Node's crypto (the
// core's fallback) on random keys, low-order keys refused, and whole handshakes through it.
import { afterAll, describe, expect, it } from "vitest";
import { PrivateKey, dh, nodeX25519, useX25519, type X25519 } from "../../src/core/crypto.js";
import { loadAddon, nativeX25519 } from "../../src/host/native/index.js";
import { ipv4Packet, pairOfNodes } from "../support/index.js";

const hex = (text: string) => Buffer.from(text, "hex");

/** Runs `body` with `implementation` installed in the core, restoring Node's afterwards. */
function using<T>(implementation: X25519, body: () => T): T {
  useX25519(implementation);
  try {
    return body();
  } finally {
    useX25519(nodeX25519);
  }
}

afterAll(() => useX25519(nodeX25519));

// Points of small order on Curve25519 (and their non-canonical encodings): each gives an
// all-zero shared secret whatever the private key, which the protocol must reject.
const LOW_ORDER_POINTS = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
].map(hex);

describe("native X25519", () => {
  it("computes RFC 7748 section 5.2's two test vectors", () => {
    const vectors = [
      {
        scalar: "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
        u: "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        out: "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
      },
      {
        scalar: "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
        u: "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
        out: "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
      },
    ];
    for (const { scalar, u, out } of vectors) {
      const shared = using(nativeX25519, () => dh(new PrivateKey(hex(scalar)), hex(u)));
      expect(shared?.toString("hex")).toBe(out);
    }
  });

  it("computes RFC 7748 section 5.2's iterated vector (1 and 1,000 iterations)", () => {
    let k: Buffer = hex("0900000000000000000000000000000000000000000000000000000000000000");
    let u: Buffer = Buffer.from(k);
    const after: string[] = [];
    using(nativeX25519, () => {
      for (let i = 1; i <= 1000; i++) {
        const next = dh(new PrivateKey(k), u)!;
        u = k;
        k = next;
        if (i === 1 || i === 1000) after.push(k.toString("hex"));
      }
    });
    expect(after).toEqual([
      "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079",
      "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51",
    ]);
  });

  it("computes RFC 7748 section 6.1's Diffie-Hellman example", () => {
    using(nativeX25519, () => {
      const alice = new PrivateKey(
        hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
      );
      const bob = new PrivateKey(
        hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
      );
      expect(alice.publicKey.toString("hex")).toBe(
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
      );
      expect(bob.publicKey.toString("hex")).toBe(
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
      );
      const shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
      expect(dh(alice, bob.publicKey)?.toString("hex")).toBe(shared);
      expect(dh(bob, alice.publicKey)?.toString("hex")).toBe(shared);
    });
  });

  it("agrees with Node's crypto on random keys", () => {
    for (let i = 0; i < 200; i++) {
      const raw = PrivateKey.generate().raw;
      const peer = PrivateKey.generate().publicKey;
      const viaNode = new PrivateKey(raw);
      const viaAddon = using(nativeX25519, () => new PrivateKey(raw));
      expect(viaAddon.publicKey).toEqual(viaNode.publicKey);
      const expected = dh(viaNode, peer);
      expect(expected).not.toBeNull();
      expect(using(nativeX25519, () => dh(viaAddon, peer))).toEqual(expected);
    }
  });

  it("refuses every low-order public key, as Node's crypto does", () => {
    const key = PrivateKey.generate();
    for (const point of LOW_ORDER_POINTS) {
      expect(dh(key, point)).toBeNull();
      expect(using(nativeX25519, () => dh(key, point))).toBeNull();
      const out = Buffer.alloc(32, 0xaa);
      expect(loadAddon().x25519(key.raw, key.publicKey, point, out)).toBe(false);
      expect(out).toEqual(Buffer.alloc(32));
    }
  });

  it("refuses keys that are not 32 bytes", () => {
    const key = PrivateKey.generate();
    const out = Buffer.alloc(32);
    expect(() =>
      loadAddon().x25519(key.raw.subarray(1), key.publicKey, key.publicKey, out),
    ).toThrow(RangeError);
    expect(() =>
      loadAddon().x25519(key.raw, key.publicKey, key.publicKey, out.subarray(1)),
    ).toThrow(RangeError);
    expect(() => loadAddon().x25519PublicKey(key.raw, Buffer.alloc(31))).toThrow(RangeError);
    expect(using(nativeX25519, () => dh(key, Buffer.alloc(31, 9)))).toBeNull();
  });

  for (const psk of [false, true]) {
    it(`carries two in-memory devices' handshake${psk ? " with a pre-shared key" : ""}`, () => {
      using(nativeX25519, () => {
        const { net, a, b } = pairOfNodes({ psk });
        const ping = ipv4Packet("10.0.0.1", "10.0.0.2", "ping");
        net.send("a", ping);
        expect(b.delivered).toEqual([ping]);
        const peerOfA = a.device.peer(b.key.publicKey)!;
        const peerOfB = b.device.peer(a.key.publicKey)!;
        expect(peerOfA.keypairs.current!.sendingKey).toEqual(
          peerOfB.keypairs.current!.receivingKey,
        );
        expect(a.device.stats.totalDrops + b.device.stats.totalDrops).toBe(0);
      });
    });
  }
});

describe("Node's X25519 (the core's fallback)", () => {
  it("does not reuse a key it imported once the buffer holds another key", () => {
    const key = PrivateKey.generate();
    const first = PrivateKey.generate().publicKey;
    const second = PrivateKey.generate().publicKey;
    const buffer = Buffer.from(first);
    expect(dh(key, buffer)).toEqual(dh(key, first));
    buffer.set(second);
    expect(dh(key, buffer)).toEqual(dh(key, Buffer.from(second)));
    expect(dh(key, buffer)).not.toEqual(dh(key, first));
  });
});
