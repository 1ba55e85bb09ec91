// Keys made and derived, as `wg genkey`, `wg genpsk` and `wg pubkey` do, in the text form of
// key-text.ts (re-exported here, so one import serves both).
import { PrivateKey, systemRandom } from "./crypto.js";
import { decodeKey, encodeKey } from "./key-text.js";

export { KeyFormatError, decodeKey, encodeKey } from "./key-text.js";

export function generatePrivateKey(): string {
  return encodeKey(PrivateKey.generate().raw);
}

export function generatePresharedKey(): string {
  const raw = Buffer.alloc(32);
  systemRandom.fill(raw);
  return encodeKey(raw);
}

export function publicKeyOf(privateKeyText: string): string {
  return encodeKey(new PrivateKey(decodeKey(privateKeyText, "private key")).publicKey);
}
