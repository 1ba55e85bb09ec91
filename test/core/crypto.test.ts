// Known answers for the primitives, checked against independent implementations and RFC vectors.
import { createHash, hkdfSync, randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { blake2s } from "@noble/hashes/blake2.js";
import { hmac as nobleHmac } from "@noble/hashes/hmac.js";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import nacl from "tweetnacl";
import { describe, expect, it } from "vitest";
import {
  PrivateKey,
  aeadOpen,
  aeadSeal,
  dh,
  hash,
  hmac,
  kdf1,
  kdf2,
  kdf3,
  mac,
  nodeTransportCipher,
} from "../../src/core/crypto.js";
import { blake2s as blake2sOwn } from "../../src/core/blake2s.js";
import { INITIAL_CHAINING_KEY, INITIAL_HASH, tai64n } from "../../src/core/noise.js";
import { decodeKey, publicKeyOf } from "../../src/core/keys.js";
import { commandExists } from "../support/netns.js";

const hex = (text: string) => Buffer.from(text, "hex");

describe("BLAKE2s, HMAC and the KDF", () => {
  it("hash matches RFC 7693's BLAKE2s-256('abc') and noble's BLAKE2s", () => {
    expect(hash(Buffer.from("abc")).toString("hex")).toBe(
      "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982",
    );
    for (const length of [0, 1, 32, 64, 65, 148]) {
      const input = randomBytes(length);
      expect(hash(input)).toEqual(Buffer.from(blake2s(input)));
    }
  });

  it("the protocol's initial chaining key and hash come from its construction and identifier", () => {
    const construction = Buffer.from("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s");
    const identifier = Buffer.from("WireGuard v1 zx2c4 Jason@zx2c4.com");
    expect(INITIAL_CHAINING_KEY).toEqual(createHash("blake2s256").update(construction).digest());
    expect(INITIAL_HASH).toEqual(
      createHash("blake2s256").update(INITIAL_CHAINING_KEY).update(identifier).digest(),
    );
  });

  it("our keyed BLAKE2s matches Node's (unkeyed) and noble's (keyed) for every block boundary", () => {
    for (let length = 0; length <= 200; length++) {
      const message = randomBytes(length);
      expect(Buffer.from(blake2sOwn(message, null, 32))).toEqual(hash(message));
      for (const keyLength of [1, 16, 32]) {
        const key = randomBytes(keyLength);
        for (const outLength of [16, 32]) {
          expect(Buffer.from(blake2sOwn(message, key, outLength))).toEqual(
            Buffer.from(blake2s(message, { key, dkLen: outLength })),
          );
        }
      }
    }
    expect(() => blake2sOwn(new Uint8Array(1), new Uint8Array(33), 16)).toThrow(RangeError);
    expect(() => blake2sOwn(new Uint8Array(1), null, 0)).toThrow(RangeError);
  });

  it("HMAC-BLAKE2s matches noble's HMAC", () => {
    for (const length of [0, 1, 32, 100]) {
      const key = randomBytes(32);
      const input = randomBytes(length);
      expect(hmac(key, input)).toEqual(Buffer.from(nobleHmac(blake2s, key, input)));
    }
  });

  it("keyed BLAKE2s (the MAC) matches the BLAKE2 known-answer vector for keyed mode", () => {
    // blake2s-kat: key 00..1f, empty input, 32-byte output.
    const key = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
    expect(Buffer.from(blake2s(new Uint8Array(0), { key })).toString("hex")).toBe(
      "48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49",
    );
    // The MAC is the same function with a 16-byte digest length (a parameter, not a truncation).
    const message = randomBytes(116);
    const tag = mac(key, message);
    expect(tag.length).toBe(16);
    expect(Buffer.from(tag)).not.toEqual(Buffer.from(blake2s(message, { key })).subarray(0, 16));
  });

  it("KDF1/2/3 equal HKDF (RFC 5869) over HMAC-BLAKE2s with the chaining key as salt", () => {
    const chainingKey = randomBytes(32);
    const input = randomBytes(32);
    const expected = Buffer.from(hkdfSync("blake2s256", input, chainingKey, Buffer.alloc(0), 96));
    expect(kdf1(chainingKey, input)).toEqual(expected.subarray(0, 32));
    expect(Buffer.concat(kdf2(chainingKey, input))).toEqual(expected.subarray(0, 64));
    expect(Buffer.concat(kdf3(chainingKey, input))).toEqual(expected);
  });
});

describe("X25519", () => {
  it("matches RFC 7748 section 6.1", () => {
    const alice = new PrivateKey(
      hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
    );
    const bobPublic = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    expect(alice.publicKey.toString("hex")).toBe(
      "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
    );
    expect(dh(alice, bobPublic)?.toString("hex")).toBe(
      "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
    );
  });

  it("agrees with tweetnacl on random keys", () => {
    for (let i = 0; i < 20; i++) {
      const a = PrivateKey.generate();
      const b = PrivateKey.generate();
      expect(a.publicKey).toEqual(Buffer.from(nacl.scalarMult.base(a.raw)));
      expect(dh(a, b.publicKey)).toEqual(Buffer.from(nacl.scalarMult(a.raw, b.publicKey)));
    }
  });

  it("rejects a low-order public key (all-zero shared secret)", () => {
    expect(dh(PrivateKey.generate(), new Uint8Array(32))).toBeNull();
    const order8 = hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800");
    expect(dh(PrivateKey.generate(), order8)).toBeNull();
  });

  it.skipIf(!commandExists("wg"))("derives the same public key as `wg pubkey`", () => {
    const privateKey = PrivateKey.generate().raw.toString("base64");
    const fromWg = execFileSync("wg", ["pubkey"], { input: privateKey, encoding: "utf8" }).trim();
    expect(publicKeyOf(privateKey)).toBe(fromWg);
  });

  it("refuses key text that is not 32 bytes of base64", () => {
    expect(() => decodeKey("abc")).toThrow(/32 bytes in base64/);
    expect(() => decodeKey(`${"A".repeat(43)}`)).toThrow(/32 bytes in base64/);
    expect(decodeKey(Buffer.alloc(32, 1).toString("base64")).length).toBe(32);
  });
});

describe("ChaCha20-Poly1305", () => {
  it("handshake AEAD (counter 0) matches noble's and authenticates the associated data", () => {
    const key = randomBytes(32);
    const plaintext = randomBytes(32);
    const ad = randomBytes(32);
    const sealed = aeadSeal(key, plaintext, ad);
    expect(sealed).toEqual(
      Buffer.from(chacha20poly1305(key, new Uint8Array(12), ad).encrypt(plaintext)),
    );
    expect(aeadOpen(key, sealed, ad)).toEqual(plaintext);
    expect(aeadOpen(key, sealed, randomBytes(32))).toBeNull();
  });

  it("transport nonces are four zero bytes then the counter little-endian", () => {
    const key = randomBytes(32);
    const plaintext = randomBytes(1420);
    const counter = 0x0102030405;
    const out = Buffer.alloc(plaintext.length + 16);
    nodeTransportCipher.seal(key, counter, plaintext, out);
    const nonce = hex("000000000504030201000000");
    expect(out).toEqual(Buffer.from(chacha20poly1305(key, nonce).encrypt(plaintext)));
    expect(nodeTransportCipher.open(key, counter, out)).toEqual(plaintext);
    expect(nodeTransportCipher.open(key, counter + 1, out)).toBeNull();
  });
});

describe("TAI64N", () => {
  it("encodes seconds since 1970 plus 2^62+10, big-endian, with coarse nanoseconds", () => {
    const stamp = tai64n(Date.UTC(2026, 0, 1, 0, 0, 0, 123));
    expect(stamp.readBigUInt64BE(0)).toBe(0x400000000000000an + 1767225600n);
    // 123 ms rounded down to a multiple of 2^24 ns
    expect(stamp.readUInt32BE(8)).toBe(123_000_000 - (123_000_000 % 2 ** 24));
  });

  it("is strictly increasing 20 ms apart", () => {
    const start = Date.UTC(2026, 5, 1);
    for (let t = 0; t < 2000; t += 20) {
      expect(Buffer.compare(tai64n(start + t + 20), tai64n(start + t))).toBeGreaterThan(0);
    }
  });
});
