/*
 * ChaCha20-Poly1305 (RFC 8439) over a batch of packets, in place, through
 * OpenSSL's EVP interface as linked into Node itself.
 *
 * Speed comes from two things: one JS->C crossing per batch, and keeping one
 * EVP_CIPHER_CTX per direction whose key schedule is redone only when the key
 * changes (consecutive packets of one peer share a key). Per packet only the
 * nonce is reset.
 */
#include "common.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define KEY_SIZE 32
#define NONCE_SIZE 12
#define TAG_SIZE 16

struct aead_ctx {
  EVP_CIPHER_CTX *evp;
  int encrypt;
  int keyed;
  uint8_t key[KEY_SIZE];
};

static aead_ctx *aead_new(int encrypt) {
  aead_ctx *a = calloc(1, sizeof(*a));
  if (a == NULL) return NULL;
  a->encrypt = encrypt;
  a->evp = EVP_CIPHER_CTX_new();
  if (a->evp == NULL ||
      EVP_CipherInit_ex(a->evp, EVP_chacha20_poly1305(), NULL, NULL, NULL, encrypt) != 1) {
    EVP_CIPHER_CTX_free(a->evp);
    free(a);
    return NULL;
  }
  return a;
}

static void aead_destroy(aead_ctx *a) {
  if (a == NULL) return;
  EVP_CIPHER_CTX_free(a->evp);
  OPENSSL_cleanse(a->key, sizeof(a->key));
  free(a);
}

void aead_free(addon_state *st) {
  aead_destroy(st->seal_ctx);
  aead_destroy(st->open_ctx);
  st->seal_ctx = st->open_ctx = NULL;
}

static aead_ctx *get_ctx(napi_env env, int encrypt) {
  addon_state *st = state_of(env);
  aead_ctx **slot = encrypt ? &st->seal_ctx : &st->open_ctx;
  if (*slot == NULL) *slot = aead_new(encrypt);
  if (*slot == NULL) throw_errno(env, ENOMEM, "cannot create ChaCha20-Poly1305 context");
  return *slot;
}

static int set_key(aead_ctx *a, const uint8_t *key) {
  if (a->keyed && memcmp(a->key, key, KEY_SIZE) == 0) return 1;
  if (EVP_CipherInit_ex(a->evp, NULL, NULL, key, NULL, a->encrypt) != 1) {
    a->keyed = 0;
    return 0;
  }
  memcpy(a->key, key, KEY_SIZE);
  a->keyed = 1;
  return 1;
}

/* The tag moves through the provider's parameter interface directly: the
 * EVP_CIPHER_CTX_ctrl() compatibility layer would build the same parameter
 * array on every packet, which is measurable at these packet rates. */
static int get_tag(aead_ctx *a, uint8_t *tag) {
  OSSL_PARAM params[2];
  params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, TAG_SIZE);
  params[1] = OSSL_PARAM_construct_end();
  return EVP_CIPHER_CTX_get_params(a->evp, params) == 1;
}

static int set_tag(aead_ctx *a, uint8_t *tag) {
  OSSL_PARAM params[2];
  params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, TAG_SIZE);
  params[1] = OSSL_PARAM_construct_end();
  return EVP_CIPHER_CTX_set_params(a->evp, params) == 1;
}

/* Encrypts buf[0..len) in place and writes the tag. 1 ok, 0 OpenSSL error. */
static int seal_one(aead_ctx *a, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad,
                    size_t aad_len, uint8_t *buf, size_t len, uint8_t *tag) {
  int outl = 0, finl = 0;
  if (!set_key(a, key) || EVP_CipherInit_ex(a->evp, NULL, NULL, NULL, nonce, 1) != 1)
    return 0;
  if (aad_len > 0 && EVP_EncryptUpdate(a->evp, NULL, &outl, aad, (int)aad_len) != 1) return 0;
  outl = 0;
  if (len > 0 && EVP_EncryptUpdate(a->evp, buf, &outl, buf, (int)len) != 1) return 0;
  if (EVP_EncryptFinal_ex(a->evp, buf + outl, &finl) != 1) return 0;
  return get_tag(a, tag);
}

/* Decrypts buf[0..len) in place checking `tag`. 1 authentic, 0 forged or
 * corrupt (buf is then wiped so unauthenticated plaintext cannot leak into
 * later processing), -1 OpenSSL error. */
static int open_one(aead_ctx *a, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad,
                    size_t aad_len, uint8_t *buf, size_t len, const uint8_t *tag) {
  uint8_t tag_copy[TAG_SIZE];
  int outl = 0, finl = 0;
  memcpy(tag_copy, tag, TAG_SIZE);
  if (!set_key(a, key) || EVP_CipherInit_ex(a->evp, NULL, NULL, NULL, nonce, 0) != 1 ||
      !set_tag(a, tag_copy))
    return -1;
  if (aad_len > 0 && EVP_DecryptUpdate(a->evp, NULL, &outl, aad, (int)aad_len) != 1) return -1;
  outl = 0;
  if (len > 0 && EVP_DecryptUpdate(a->evp, buf, &outl, buf, (int)len) != 1) return -1;
  if (EVP_DecryptFinal_ex(a->evp, buf + outl, &finl) != 1) {
    if (len > 0) memset(buf, 0, len);
    return 0;
  }
  return 1;
}

static void wireguard_nonce(uint8_t nonce[NONCE_SIZE], uint64_t counter) {
  memset(nonce, 0, 4);
  for (int b = 0; b < 8; b++) nonce[4 + b] = (uint8_t)(counter >> (8 * b));
}

/* Counters are accepted as a BigUint64Array (one per packet) or a Uint32Array
 * of (low, high) pairs, for callers that avoid BigInt on the hot path. */
typedef struct {
  const uint64_t *u64;
  const uint32_t *u32;
} counters_view;

static int arg_counters(napi_env env, napi_value v, uint64_t first, uint64_t count,
                        counters_view *out) {
  bool is_ta = false;
  napi_typedarray_type type;
  size_t length;
  void *data;
  out->u64 = NULL;
  out->u32 = NULL;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &type, &length, &data, NULL, NULL) != napi_ok ||
      (type != napi_biguint64_array && type != napi_uint32_array)) {
    throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE",
               "counters must be a BigUint64Array or a Uint32Array of (low, high) pairs");
    return -1;
  }
  if (data == NULL) length = 0;
  if (type == napi_biguint64_array) {
    if (check_range(env, "counters", length, 1, first, count)) return -1;
    out->u64 = data;
  } else {
    if (check_range(env, "counters", length, 2, first, count)) return -1;
    out->u32 = data;
  }
  return 0;
}

static uint64_t counter_at(const counters_view *c, uint64_t i) {
  if (c->u64 != NULL) return c->u64[i];
  return (uint64_t)c->u32[2 * i] | (uint64_t)c->u32[2 * i + 1] << 32;
}

typedef struct {
  uint8_t *arena;
  size_t arena_len;
  uint32_t *offsets, *lengths, *key_slots;
  int32_t *status;
  uint8_t *keys;
  size_t key_count;
  counters_view counters;
  uint64_t first, count;
} batch_args;

/* (arena, offsets, lengths, keySlots, counters, keys, status, first, count) */
static int parse_batch(napi_env env, napi_callback_info info, int sealing, batch_args *b) {
  napi_value argv[9];
  size_t off_len, len_len, slot_len, keys_len, status_len;
  if (arg_count(env, info, 9, argv) != 0 ||
      arg_bytes(env, argv[0], "arena", &b->arena, &b->arena_len) ||
      arg_u32_array(env, argv[1], "offsets", &b->offsets, &off_len) ||
      arg_u32_array(env, argv[2], "lengths", &b->lengths, &len_len) ||
      arg_u32_array(env, argv[3], "keySlots", &b->key_slots, &slot_len) ||
      arg_bytes(env, argv[5], "keys", &b->keys, &keys_len) ||
      arg_i32_array_opt(env, argv[6], "status", &b->status, &status_len) ||
      arg_uint(env, argv[7], "first", UINT32_MAX, &b->first) ||
      arg_uint(env, argv[8], "count", UINT32_MAX, &b->count))
    return -1;
  if (keys_len % KEY_SIZE != 0)
    return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE",
                      "keys length %zu is not a multiple of %d", keys_len, KEY_SIZE),
           -1;
  b->key_count = keys_len / KEY_SIZE;
  if (check_range(env, "offsets", off_len, 1, b->first, b->count) ||
      check_range(env, "lengths", len_len, 1, b->first, b->count) ||
      check_range(env, "keySlots", slot_len, 1, b->first, b->count) ||
      (b->status != NULL && check_range(env, "status", status_len, 1, b->first, b->count)) ||
      arg_counters(env, argv[4], b->first, b->count, &b->counters))
    return -1;
  for (uint64_t i = b->first; i < b->first + b->count; i++) {
    if (b->key_slots[i] >= b->key_count)
      return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE",
                        "keySlots[%llu] = %u but only %zu keys were given",
                        (unsigned long long)i, b->key_slots[i], b->key_count),
             -1;
    uint32_t len = b->lengths[i];
    if (!sealing && len < TAG_SIZE)
      return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE",
                        "packet %llu is %u bytes, shorter than the %d-byte tag",
                        (unsigned long long)i, len, TAG_SIZE),
             -1;
    if (len > INT_MAX - TAG_SIZE)
      return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "packet %llu is too large",
                        (unsigned long long)i),
             -1;
  }
  /* Sealing grows each packet by the tag; the room must be there. */
  return check_spans(env, b->arena_len, b->offsets, b->lengths, b->first, b->count,
                     sealing ? TAG_SIZE : 0);
}

/* aeadSealBatch(arena, offsets, lengths, keySlots, counters, keys, status,
 * first, count): packet i (plaintext at offsets[i], lengths[i] bytes) is
 * encrypted in place under keys[keySlots[i]] with the WireGuard nonce of
 * counters[i]; the tag follows it and lengths[i] grows by 16. */
static napi_value js_seal_batch(napi_env env, napi_callback_info info) {
  batch_args b;
  if (parse_batch(env, info, 1, &b) != 0) return NULL;
  aead_ctx *a = get_ctx(env, 1);
  if (a == NULL) return NULL;
  uint8_t nonce[NONCE_SIZE];
  for (uint64_t i = b.first; i < b.first + b.count; i++) {
    uint8_t *p = b.arena + b.offsets[i];
    uint32_t len = b.lengths[i];
    wireguard_nonce(nonce, counter_at(&b.counters, i));
    if (!seal_one(a, b.keys + (size_t)b.key_slots[i] * KEY_SIZE, nonce, NULL, 0, p, len,
                  p + len)) {
      a->keyed = 0;
      return throw_errno(env, EIO, "OpenSSL ChaCha20-Poly1305 encryption failed");
    }
    b.lengths[i] = len + TAG_SIZE;
    if (b.status != NULL) b.status[i] = 0;
  }
  return make_undefined(env);
}

/* aeadOpenBatch(...same arguments...) -> number of packets that failed.
 * Authentic packets are decrypted in place, lengths[i] shrinks by 16 and
 * status[i] = 0; a forged one keeps its length, is wiped and gets
 * status[i] = -EBADMSG. One bad packet never affects its neighbours. */
static napi_value js_open_batch(napi_env env, napi_callback_info info) {
  batch_args b;
  if (parse_batch(env, info, 0, &b) != 0) return NULL;
  aead_ctx *a = get_ctx(env, 0);
  if (a == NULL) return NULL;
  uint8_t nonce[NONCE_SIZE];
  int64_t failed = 0;
  for (uint64_t i = b.first; i < b.first + b.count; i++) {
    uint8_t *p = b.arena + b.offsets[i];
    uint32_t len = b.lengths[i] - TAG_SIZE;
    wireguard_nonce(nonce, counter_at(&b.counters, i));
    int r = open_one(a, b.keys + (size_t)b.key_slots[i] * KEY_SIZE, nonce, NULL, 0, p, len,
                     p + len);
    if (r < 0) {
      a->keyed = 0;
      return throw_errno(env, EIO, "OpenSSL ChaCha20-Poly1305 decryption failed");
    }
    if (r == 1) {
      b.lengths[i] = len;
      if (b.status != NULL) b.status[i] = 0;
    } else {
      failed++;
      if (b.status != NULL) b.status[i] = -EBADMSG;
    }
  }
  return make_int(env, failed);
}

static int parse_single(napi_env env, napi_callback_info info, uint8_t **key, uint8_t **nonce,
                        uint8_t **aad, size_t *aad_len, uint8_t **data, size_t *data_len) {
  napi_value argv[4];
  size_t key_len, nonce_len;
  if (arg_count(env, info, 4, argv) != 0 || arg_bytes(env, argv[0], "key", key, &key_len) ||
      arg_bytes(env, argv[1], "nonce", nonce, &nonce_len) ||
      arg_bytes_opt(env, argv[2], "aad", aad, aad_len) ||
      arg_bytes(env, argv[3], "data", data, data_len))
    return -1;
  if (key_len != KEY_SIZE)
    return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "key must be %d bytes, got %zu",
                      KEY_SIZE, key_len),
           -1;
  if (nonce_len != NONCE_SIZE)
    return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "nonce must be %d bytes, got %zu",
                      NONCE_SIZE, nonce_len),
           -1;
  if (*aad_len > INT_MAX || *data_len > INT_MAX - TAG_SIZE)
    return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "input too large"), -1;
  return 0;
}

/* aeadSeal(key, nonce, aad, plaintext) -> Buffer(ciphertext || tag).
 * The general RFC 8439 form (any 12-byte nonce, any AAD) over the same
 * seal_one() the batch uses, so the RFC test vector checks the batch code. */
static napi_value js_seal(napi_env env, napi_callback_info info) {
  uint8_t *key, *nonce, *aad, *data, *out;
  size_t aad_len, data_len;
  if (parse_single(env, info, &key, &nonce, &aad, &aad_len, &data, &data_len) != 0) return NULL;
  aead_ctx *a = get_ctx(env, 1);
  if (a == NULL) return NULL;
  napi_value result;
  if (napi_create_buffer(env, data_len + TAG_SIZE, (void **)&out, &result) != napi_ok)
    return NULL;
  memcpy(out, data, data_len);
  if (!seal_one(a, key, nonce, aad, aad_len, out, data_len, out + data_len)) {
    a->keyed = 0;
    return throw_errno(env, EIO, "OpenSSL ChaCha20-Poly1305 encryption failed");
  }
  return result;
}

/* aeadOpen(key, nonce, aad, sealed) -> Buffer(plaintext) | null if forged. */
static napi_value js_open(napi_env env, napi_callback_info info) {
  uint8_t *key, *nonce, *aad, *data, *out;
  size_t aad_len, data_len;
  if (parse_single(env, info, &key, &nonce, &aad, &aad_len, &data, &data_len) != 0) return NULL;
  if (data_len < TAG_SIZE)
    return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE",
                      "sealed data is %zu bytes, shorter than the %d-byte tag", data_len,
                      TAG_SIZE);
  aead_ctx *a = get_ctx(env, 0);
  if (a == NULL) return NULL;
  napi_value result;
  size_t len = data_len - TAG_SIZE;
  if (napi_create_buffer(env, len, (void **)&out, &result) != napi_ok) return NULL;
  if (len > 0) memcpy(out, data, len);
  int r = open_one(a, key, nonce, aad, aad_len, out, len, data + len);
  if (r < 0) {
    a->keyed = 0;
    return throw_errno(env, EIO, "OpenSSL ChaCha20-Poly1305 decryption failed");
  }
  if (r == 0) {
    napi_value null_value;
    napi_get_null(env, &null_value);
    return null_value;
  }
  return result;
}

static double seconds_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* aeadCalibrate(packetSize, milliseconds) -> { streaming, perPacket } in
 * packets per second, measured in C on Node's own OpenSSL for half the time
 * each: `streaming` is EVP_EncryptUpdate over packet-sized chunks with no
 * per-message work (what `openssl speed -evp` reports), `perPacket` the full
 * nonce + encrypt + tag sequence the batch does per packet, without JS. It
 * separates what OpenSSL's per-message cost is from what the binding adds.
 * Blocks the thread: for benchmarks only. */
static napi_value js_calibrate(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint64_t size, ms;
  if (arg_count(env, info, 2, argv) || arg_uint(env, argv[0], "packetSize", 65535, &size) ||
      arg_uint(env, argv[1], "milliseconds", 10000, &ms))
    return NULL;
  enum { PACKETS = 64 };
  size_t stride = (size_t)size + TAG_SIZE;
  uint8_t *buf = calloc(PACKETS, stride);
  aead_ctx *a = aead_new(1);
  if (buf == NULL || a == NULL) {
    free(buf);
    aead_destroy(a);
    return throw_errno(env, ENOMEM, "cannot allocate calibration buffers");
  }
  uint8_t key[KEY_SIZE], nonce[NONCE_SIZE];
  memset(key, 0x42, sizeof(key));
  memset(nonce, 0, sizeof(nonce));
  double half = (double)ms / 2000.0, rates[2] = {0, 0};
  int ok = set_key(a, key) && EVP_CipherInit_ex(a->evp, NULL, NULL, NULL, nonce, 1) == 1;
  for (int mode = 0; ok && mode < 2; mode++) {
    uint64_t packets = 0, counter = 0;
    double start = seconds_now(), elapsed;
    do {
      for (int i = 0; ok && i < PACKETS; i++) {
        uint8_t *p = buf + (size_t)i * stride;
        int outl;
        if (mode == 0) {
          ok = EVP_EncryptUpdate(a->evp, p, &outl, p, (int)size) == 1;
        } else {
          wireguard_nonce(nonce, counter++);
          ok = seal_one(a, key, nonce, NULL, 0, p, (size_t)size, p + size);
        }
      }
      packets += PACKETS;
      elapsed = seconds_now() - start;
    } while (ok && elapsed < half);
    rates[mode] = (double)packets / elapsed;
  }
  free(buf);
  aead_destroy(a);
  if (!ok) return throw_errno(env, EIO, "OpenSSL ChaCha20-Poly1305 encryption failed");
  napi_value out, v;
  if (napi_create_object(env, &out) != napi_ok) return NULL;
  if (napi_create_double(env, rates[0], &v) != napi_ok ||
      napi_set_named_property(env, out, "streaming", v) != napi_ok ||
      napi_create_double(env, rates[1], &v) != napi_ok ||
      napi_set_named_property(env, out, "perPacket", v) != napi_ok)
    return NULL;
  return out;
}

napi_status init_aead(napi_env env, napi_value exports) {
  EXPORT_FN(env, exports, "aeadCalibrate", js_calibrate);
  EXPORT_FN(env, exports, "aeadSealBatch", js_seal_batch);
  EXPORT_FN(env, exports, "aeadOpenBatch", js_open_batch);
  EXPORT_FN(env, exports, "aeadSeal", js_seal);
  EXPORT_FN(env, exports, "aeadOpen", js_open);
  return napi_ok;
}
