/*
 * X25519 (RFC 7748) through OpenSSL's EVP interface as linked into Node itself.
 *
 * Node's crypto only takes keys as KeyObjects, and for a handshake the import
 * of each raw key (JWK parsing, a KeyObject, a fresh EVP_PKEY_CTX) costs about
 * as much as the scalar multiplication. Here raw 32-byte keys go straight into
 * EVP_PKEYs: a public key import is a copy, and a private key comes with its
 * public half (the caller always knows it), so OpenSSL does not recompute it,
 * which would cost a second scalar multiplication.
 */
#include "common.h"

#include <errno.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define X25519_KEY_SIZE 32

static int arg_key(napi_env env, napi_value v, const char *name, uint8_t **key) {
  size_t len;
  if (arg_bytes(env, v, name, key, &len) != 0) return -1;
  if (len != X25519_KEY_SIZE) {
    throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "%s is %zu bytes, not %d", name, len,
               X25519_KEY_SIZE);
    return -1;
  }
  return 0;
}

/* A private EVP_PKEY from the scalar and its public half, without recomputing the latter. */
static EVP_PKEY *private_key_with_public(const uint8_t *priv, const uint8_t *pub) {
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "X25519", NULL);
  EVP_PKEY *pkey = NULL;
  if (ctx == NULL) return NULL;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PRIV_KEY, (void *)priv, X25519_KEY_SIZE),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pub, X25519_KEY_SIZE),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_PKEY_fromdata_init(ctx) != 1 || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) != 1)
    pkey = NULL;
  EVP_PKEY_CTX_free(ctx);
  return pkey;
}

/* x25519PublicKey(private32, out32): the public key X25519(private, 9). */
static napi_value js_public_key(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint8_t *priv, *out;
  if (arg_count(env, info, 2, argv) != 0) return NULL;
  if (arg_key(env, argv[0], "private key", &priv) != 0) return NULL;
  if (arg_key(env, argv[1], "output", &out) != 0) return NULL;
  EVP_PKEY *pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, X25519_KEY_SIZE);
  size_t len = X25519_KEY_SIZE;
  int ok = pkey != NULL && EVP_PKEY_get_raw_public_key(pkey, out, &len) == 1 &&
           len == X25519_KEY_SIZE;
  EVP_PKEY_free(pkey);
  if (!ok) return throw_errno(env, EIO, "OpenSSL X25519 public key derivation failed");
  return make_undefined(env);
}

/*
 * x25519(private32, privatesPublic32, peerPublic32, out32) -> boolean.
 * false when OpenSSL refuses the derivation, which for X25519 means the shared
 * secret is all zeros (a low-order peer key): the protocol must reject it.
 */
static napi_value js_shared_secret(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint8_t *priv, *own_pub, *peer_pub, *out;
  if (arg_count(env, info, 4, argv) != 0) return NULL;
  if (arg_key(env, argv[0], "private key", &priv) != 0) return NULL;
  if (arg_key(env, argv[1], "private key's public key", &own_pub) != 0) return NULL;
  if (arg_key(env, argv[2], "peer public key", &peer_pub) != 0) return NULL;
  if (arg_key(env, argv[3], "output", &out) != 0) return NULL;

  EVP_PKEY *own = private_key_with_public(priv, own_pub);
  EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer_pub, X25519_KEY_SIZE);
  EVP_PKEY_CTX *ctx = own != NULL ? EVP_PKEY_CTX_new_from_pkey(NULL, own, NULL) : NULL;
  size_t len = X25519_KEY_SIZE;
  int ok = 0;
  if (ctx != NULL && peer != NULL && EVP_PKEY_derive_init(ctx) == 1 &&
      /* No peer validation pass: for X25519 it only checks the key is present. */
      EVP_PKEY_derive_set_peer_ex(ctx, peer, 0) == 1)
    ok = EVP_PKEY_derive(ctx, out, &len) == 1 && len == X25519_KEY_SIZE;
  EVP_PKEY_CTX_free(ctx);
  EVP_PKEY_free(peer);
  EVP_PKEY_free(own);
  if (!ok) OPENSSL_cleanse(out, X25519_KEY_SIZE);
  napi_value result;
  if (napi_get_boolean(env, ok, &result) != napi_ok) return NULL;
  return result;
}

napi_status init_x25519(napi_env env, napi_value exports) {
  EXPORT_FN(env, exports, "x25519PublicKey", js_public_key);
  EXPORT_FN(env, exports, "x25519", js_shared_secret);
  return napi_ok;
}
