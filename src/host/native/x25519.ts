// X25519 on raw keys in the addon (native/x25519.c): no KeyObject per key, and the private
// key's public half handed in so OpenSSL does not compute it again. The daemon installs it in
// the core with useX25519 (imported there, not here: this directory loads nothing of the core
// at run time, so the TUN tests' helpers can run it transpiled on its own).
import type { X25519 } from "../../core/crypto.js";
import { loadAddon } from "./addon.js";

/** The protocol core's {@link X25519} contract on the addon. */
export const nativeX25519: X25519 = {
  publicKey(privateKey, out) {
    loadAddon().x25519PublicKey(privateKey, out);
  },
  sharedSecret(privateKey, peerPublicKey, out) {
    return loadAddon().x25519(privateKey.raw, privateKey.publicKey, peerPublicKey, out);
  },
};
