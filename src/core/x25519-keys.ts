// Raw X25519 keys into Node's KeyObjects and a private key's public half, through Node's
// crypto. A module of its own, beside crypto.ts, so that `edgetun show` derives the
// interface's public key without loading the handshake's primitives.
//
// Raw keys go in and out of Node as JWK, which measured ~10x faster than wrapping them in DER
// (PKCS#8/SPKI) on Node 20. For a private key Node's JWK import uses only `d` and derives the
// public half itself.
import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";

const KEY_BYTES = 32;

export function privateKeyObject(raw: Uint8Array): KeyObject {
  return createPrivateKey({
    key: { kty: "OKP", crv: "X25519", d: Buffer.from(raw).toString("base64url"), x: "" },
    format: "jwk",
  });
}

export function publicKeyObject(raw: Uint8Array): KeyObject {
  if (raw.length !== KEY_BYTES) throw new RangeError("a public key is 32 bytes");
  return createPublicKey({
    key: { kty: "OKP", crv: "X25519", x: Buffer.from(raw).toString("base64url") },
    format: "jwk",
  });
}

/** X25519(privateKey, 9): the public key of `keyObject`'s private key, raw. */
export function rawPublicKey(keyObject: KeyObject): Buffer {
  const raw = Buffer.from(keyObject.export({ format: "jwk" }).x ?? "", "base64url");
  if (raw.length !== KEY_BYTES) throw new Error("X25519 key export returned an unexpected length");
  return raw;
}
