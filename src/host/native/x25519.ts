// X25519 on raw keys in the addon (native/x25519.c): no KeyObject per key, and the private
// key's public half handed in so OpenSSL does not compute it again.
import { useX25519, type X25519 } from "../../core/crypto.js";
import { loadAddon, nativeAvailable } from "./addon.js";

/** The protocol core's {@link X25519} contract on the addon. */
export const nativeX25519: X25519 = {
  publicKey(privateKey, out) {
    loadAddon().x25519PublicKey(privateKey, out);
  },
  sharedSecret(privateKey, peerPublicKey, out) {
    return loadAddon().x25519(privateKey.raw, privateKey.publicKey, peerPublicKey, out);
  },
};

/** Makes the core use the addon's X25519 when the addon loads; returns whether it did. */
export function installNativeX25519(): boolean {
  if (!nativeAvailable()) return false;
  useX25519(nativeX25519);
  return true;
}
