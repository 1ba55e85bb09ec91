/*
 * The cookie gate: mac1 checks and cookie replies for a whole batch of
 * handshake messages in one call, before any of them reaches JavaScript.
 *
 * Under a handshake flood almost every message either fails mac1 or (the
 * device being under load) carries no valid mac2; both are settled here for
 * a few hundred nanoseconds of BLAKE2s and, for a cookie reply, one
 * XChaCha20-Poly1305 seal, so the JS thread that also carries the data path
 * never sees them. What passes (valid mac1, and valid mac2 when under load)
 * goes on to the protocol core, which checks everything again: the gate only
 * filters, it decides nothing the core would decide differently.
 *
 * The keys and the cookie secret are the core's (src/core/cookie.ts), handed
 * in per call, so the secret's rotation stays in one place. BLAKE2s follows
 * RFC 7693; XChaCha20 is HChaCha20 (draft-irtf-cfrg-xchacha) in front of
 * OpenSSL's ChaCha20-Poly1305.
 */
#include "common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* ---- wire format (src/core/messages.ts) ---- */
#define INITIATION_LENGTH 148
#define RESPONSE_LENGTH 92
#define COOKIE_REPLY_LENGTH 64
#define MAC_LENGTH 16
#define NONCE_LENGTH 24
#define COOKIE_NONCE_OFFSET 8
#define COOKIE_ENCRYPTED_OFFSET 32

/* Verdicts (common.h): what happened to message i; the JS side counts them. */

/* ---- BLAKE2s (RFC 7693), keyed, output up to 32 bytes ---- */
static const uint32_t blake2s_iv[8] = {0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                                       0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u};

static const uint8_t blake2s_sigma[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

static inline uint32_t rotr32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
static inline uint32_t rotl32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static inline uint32_t load_le32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void store_le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

#define B2S_G(a, b, c, d, x, y)   \
  do {                            \
    a = a + b + (x);              \
    d = rotr32(d ^ a, 16);        \
    c = c + d;                    \
    b = rotr32(b ^ c, 12);        \
    a = a + b + (y);              \
    d = rotr32(d ^ a, 8);         \
    c = c + d;                    \
    b = rotr32(b ^ c, 7);         \
  } while (0)

static void blake2s_compress(uint32_t h[8], const uint8_t block[64], uint32_t bytes_so_far,
                             int last) {
  uint32_t m[16], v[16];
  for (int i = 0; i < 16; i++) m[i] = load_le32(block + 4 * i);
  for (int i = 0; i < 8; i++) {
    v[i] = h[i];
    v[i + 8] = blake2s_iv[i];
  }
  v[12] ^= bytes_so_far; /* inputs here are far below 2^32 bytes: the high word stays 0 */
  if (last) v[14] = ~v[14];
  /* Unrolled, the schedule's indices are constants and the message words stay in registers. */
#pragma GCC unroll 10
  for (int r = 0; r < 10; r++) {
    const uint8_t *s = blake2s_sigma[r];
    B2S_G(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
    B2S_G(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
    B2S_G(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
    B2S_G(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
    B2S_G(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
    B2S_G(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
    B2S_G(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
    B2S_G(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
  }
  for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* The BLAKE2s state after a key's block: every MAC under one key starts from it, so a batch
 * checked under the same mac1 key pays for the key block once, not per message. */
typedef struct {
  uint32_t h[8];
  size_t out_length;
} blake2s_keyed;

/* `out_length` ≤ 32, `key_length` 1..32; for messages of at least one byte. */
static void blake2s_key(blake2s_keyed *state, size_t out_length, const uint8_t *key,
                        size_t key_length) {
  uint8_t block[64];
  memcpy(state->h, blake2s_iv, sizeof(state->h));
  state->h[0] ^= 0x01010000u ^ ((uint32_t)key_length << 8) ^ (uint32_t)out_length;
  state->out_length = out_length;
  memset(block, 0, sizeof(block));
  memcpy(block, key, key_length);
  blake2s_compress(state->h, block, 64, 0);
  OPENSSL_cleanse(block, sizeof(block));
}

/* The MAC of `message` (`length` ≥ 1) under a key prepared by blake2s_key. */
static void blake2s_keyed_mac(uint8_t *out, const blake2s_keyed *state, const uint8_t *message,
                              size_t length) {
  uint32_t h[8];
  uint8_t block[64];
  memcpy(h, state->h, sizeof(h));
  uint32_t counted = 64;
  while (length > 64) {
    counted += 64;
    blake2s_compress(h, message, counted, 0);
    message += 64;
    length -= 64;
  }
  memset(block, 0, sizeof(block));
  memcpy(block, message, length);
  counted += (uint32_t)length;
  blake2s_compress(h, block, counted, 1);
  uint8_t full[32];
  for (int i = 0; i < 8; i++) store_le32(full + 4 * i, h[i]);
  memcpy(out, full, state->out_length); /* the block held only the (public) message */
}

/* Keyed BLAKE2s of `message` (`length` ≥ 1) into `out` (`out_length` ≤ 32, `key_length`
 * 1..32). */
static void blake2s_mac(uint8_t *out, size_t out_length, const uint8_t *key, size_t key_length,
                        const uint8_t *message, size_t length) {
  blake2s_keyed state;
  blake2s_key(&state, out_length, key, key_length);
  blake2s_keyed_mac(out, &state, message, length);
}

/* ---- XChaCha20-Poly1305 seal ---- */
#define CHACHA_QR(a, b, c, d) \
  do {                        \
    a += b;                   \
    d = rotl32(d ^ a, 16);    \
    c += d;                   \
    b = rotl32(b ^ c, 12);    \
    a += b;                   \
    d = rotl32(d ^ a, 8);     \
    c += d;                   \
    b = rotl32(b ^ c, 7);     \
  } while (0)

/* HChaCha20: the 20 ChaCha rounds over key and 16 nonce bytes, without the final addition;
 * words 0-3 and 12-15 are the subkey. */
static void hchacha20(uint8_t subkey[32], const uint8_t key[32], const uint8_t nonce[16]) {
  uint32_t x[16] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u};
  for (int i = 0; i < 8; i++) x[4 + i] = load_le32(key + 4 * i);
  for (int i = 0; i < 4; i++) x[12 + i] = load_le32(nonce + 4 * i);
  for (int r = 0; r < 10; r++) {
    CHACHA_QR(x[0], x[4], x[8], x[12]);
    CHACHA_QR(x[1], x[5], x[9], x[13]);
    CHACHA_QR(x[2], x[6], x[10], x[14]);
    CHACHA_QR(x[3], x[7], x[11], x[15]);
    CHACHA_QR(x[0], x[5], x[10], x[15]);
    CHACHA_QR(x[1], x[6], x[11], x[12]);
    CHACHA_QR(x[2], x[7], x[8], x[13]);
    CHACHA_QR(x[3], x[4], x[9], x[14]);
  }
  for (int i = 0; i < 4; i++) {
    store_le32(subkey + 4 * i, x[i]);
    store_le32(subkey + 16 + 4 * i, x[12 + i]);
  }
}

/* Seals 16 bytes of `plaintext` with 16 bytes of `aad` into `out` (ciphertext ‖ tag). */
static int xchacha_seal16(EVP_CIPHER_CTX *evp, uint8_t out[32], const uint8_t key[32],
                          const uint8_t nonce[NONCE_LENGTH], const uint8_t plaintext[16],
                          const uint8_t aad[16]) {
  uint8_t subkey[32], chacha_nonce[12] = {0};
  hchacha20(subkey, key, nonce);
  memcpy(chacha_nonce + 4, nonce + 16, 8);
  int n = 0, ok = EVP_EncryptInit_ex(evp, NULL, NULL, subkey, chacha_nonce) == 1 &&
                  EVP_EncryptUpdate(evp, NULL, &n, aad, 16) == 1 &&
                  EVP_EncryptUpdate(evp, out, &n, plaintext, 16) == 1 && n == 16 &&
                  EVP_EncryptFinal_ex(evp, out + 16, &n) == 1 &&
                  EVP_CIPHER_CTX_ctrl(evp, EVP_CTRL_AEAD_GET_TAG, 16, out + 16) == 1;
  OPENSSL_cleanse(subkey, sizeof(subkey));
  return ok;
}

/* ---- the per-source budget ---- */

/* Direct-mapped: a source whose slot another takes starts afresh, so a collision can only give
 * more, never starve a source of its own. */
#define COOKIE_BUDGET_SLOTS 4096

typedef struct {
  uint64_t source;
  uint32_t second;
  uint16_t messages; /* looked at this second (stops at the share) */
  uint16_t replies;  /* cookie replies this second */
} budget_slot;

struct cookie_budget {
  uint64_t seed;
  budget_slot slots[COOKIE_BUDGET_SLOTS];
};

cookie_budget *cookie_budget_new(void) {
  cookie_budget *budget = calloc(1, sizeof(*budget));
  if (budget != NULL && getrandom(&budget->seed, sizeof(budget->seed), 0) != sizeof(budget->seed))
    budget->seed = (uint64_t)(uintptr_t)budget ^ 0x9e3779b97f4a7c15ull;
  return budget;
}

void cookie_budget_free(cookie_budget *budget) { free(budget); }

/* The slot of the source of endpoint record `record` (address and port), reset for a new
 * second or another source. */
static budget_slot *budget_slot_of(cookie_budget *budget, const uint8_t *record,
                                   uint32_t second) {
  /* The source key: address and port, mixed with a secret seed (FNV-1a, 64-bit), so a sender
   * cannot aim at another's slot. */
  uint64_t key = 0xcbf29ce484222325ull ^ budget->seed;
  for (int k = 0; k < 18; k++) key = (key ^ record[k]) * 0x100000001b3ull;
  budget_slot *slot = &budget->slots[(unsigned)(key ^ (key >> 29)) % COOKIE_BUDGET_SLOTS];
  if (slot->source != key || slot->second != second) {
    slot->source = key;
    slot->second = second;
    slot->messages = 0;
    slot->replies = 0;
  }
  return slot;
}

/* ---- the gate ---- */

/* The cookie for a source: MAC(secret, IP bytes ‖ port), as src/core/receive.ts binds it. */
static void cookie_for(uint8_t cookie[16], const uint8_t secret[32], const uint8_t *record) {
  static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  uint8_t source[18];
  size_t length;
  if (memcmp(record, v4_mapped, 12) == 0) {
    memcpy(source, record + 12, 4);
    memcpy(source + 4, record + 16, 2); /* port, network order = big-endian as the core's */
    length = 6;
  } else {
    memcpy(source, record, 16);
    memcpy(source + 16, record + 16, 2);
    length = 18;
  }
  blake2s_mac(cookie, MAC_LENGTH, secret, 32, source, length);
}

static int macs_equal(const uint8_t *a, const uint8_t *b) {
  return CRYPTO_memcmp(a, b, MAC_LENGTH) == 0;
}

size_t cookie_gate_run(const cookie_gate_job *job) {
  const uint8_t *arena = job->arena, *endpoints = job->endpoints, *locals = job->locals;
  const uint32_t *offsets = job->offsets, *lengths = job->lengths;
  const uint32_t *reply_offsets = job->reply_offsets;
  uint32_t *reply_lengths = job->reply_lengths;
  uint8_t *verdicts = job->verdicts, *reply_arena = job->reply_arena;
  uint8_t *reply_endpoints = job->reply_endpoints, *reply_locals = job->reply_locals;
  const uint8_t *keys = job->keys;
  size_t count = job->count;
  int under_load = job->under_load;
  const uint8_t *mac1_key = keys, *cookie_key = keys + 32, *secret = keys + 64;

  EVP_CIPHER_CTX *evp = NULL;
  uint8_t nonces[NONCE_LENGTH * 64];
  size_t nonces_left = 0;
  size_t replies = 0;
  blake2s_keyed mac1_state;
  blake2s_key(&mac1_state, MAC_LENGTH, mac1_key, 32);
  /* The last source looked up: a run of datagrams from one sender shares one slot. */
  const uint8_t *slot_record = NULL;
  budget_slot *slot = NULL;
  for (size_t i = 0; i < count; i++) {
    const uint8_t *message = arena + offsets[i];
    const uint8_t *record = endpoints + i * EDGETUN_ENDPOINT_SIZE;
    uint32_t length = lengths[i];
    verdicts[i] = GATE_PASS;
    if (under_load && job->budget != NULL) {
      if (slot_record == NULL || memcmp(slot_record, record, 18) != 0) {
        slot = budget_slot_of(job->budget, record, job->now_second);
        slot_record = record;
      }
      /* A source past its share this second is not looked at: a flood from one sender then
       * costs a table look-up per message, not a mac check. */
      if (slot->messages >= COOKIE_GATE_MESSAGES_PER_SOURCE_PER_SECOND) {
        verdicts[i] = GATE_OVER_BUDGET;
        continue;
      }
      slot->messages++;
    }
    /* (type, exact length) first, as the core's classifyMessage: anything else is its to count. */
    size_t mac1_at;
    if (length == INITIATION_LENGTH && load_le32(message) == 1)
      mac1_at = INITIATION_LENGTH - 2 * MAC_LENGTH;
    else if (length == RESPONSE_LENGTH && load_le32(message) == 2)
      mac1_at = RESPONSE_LENGTH - 2 * MAC_LENGTH;
    else
      continue;
    uint8_t expected[MAC_LENGTH];
    blake2s_keyed_mac(expected, &mac1_state, message, mac1_at);
    if (!macs_equal(expected, message + mac1_at)) {
      verdicts[i] = GATE_BAD_MAC1;
      continue;
    }
    if (!under_load) continue;
    uint8_t cookie[MAC_LENGTH];
    cookie_for(cookie, secret, record);
    blake2s_mac(expected, MAC_LENGTH, cookie, MAC_LENGTH, message, mac1_at + MAC_LENGTH);
    if (macs_equal(expected, message + mac1_at + MAC_LENGTH)) continue;
    /* Under load without a cookie: make the sender prove its address first. */
    if (slot != NULL && ++slot->replies > COOKIE_REPLIES_PER_SOURCE_PER_SECOND) {
      verdicts[i] = GATE_OVER_BUDGET;
      continue;
    }
    verdicts[i] = GATE_NO_REPLY;
    if (nonces_left == 0) {
      ssize_t got = getrandom(nonces, sizeof(nonces), GRND_NONBLOCK);
      if (got != (ssize_t)sizeof(nonces)) continue;
      nonces_left = sizeof(nonces) / NONCE_LENGTH;
    }
    if (evp == NULL) {
      evp = EVP_CIPHER_CTX_new();
      if (evp == NULL || EVP_EncryptInit_ex(evp, EVP_chacha20_poly1305(), NULL, NULL, NULL) != 1) {
        EVP_CIPHER_CTX_free(evp);
        evp = NULL;
        continue;
      }
    }
    uint8_t *reply = reply_arena + reply_offsets[replies];
    const uint8_t *nonce = nonces + (--nonces_left) * NONCE_LENGTH;
    memset(reply, 0, COOKIE_REPLY_LENGTH);
    reply[0] = 3;
    memcpy(reply + 4, message + 4, 4); /* both messages carry their sender index at 4 */
    memcpy(reply + COOKIE_NONCE_OFFSET, nonce, NONCE_LENGTH);
    if (!xchacha_seal16(evp, reply + COOKIE_ENCRYPTED_OFFSET, cookie_key, nonce, cookie,
                        message + mac1_at))
      continue;
    reply_lengths[replies] = COOKIE_REPLY_LENGTH;
    memcpy(reply_endpoints + replies * EDGETUN_ENDPOINT_SIZE, record, EDGETUN_ENDPOINT_SIZE);
    if (reply_locals != NULL) {
      if (locals != NULL)
        memcpy(reply_locals + replies * EDGETUN_ENDPOINT_SIZE,
               locals + i * EDGETUN_ENDPOINT_SIZE, EDGETUN_ENDPOINT_SIZE);
      else
        memset(reply_locals + replies * EDGETUN_ENDPOINT_SIZE, 0, EDGETUN_ENDPOINT_SIZE);
    }
    verdicts[i] = GATE_COOKIE;
    replies++;
  }
  EVP_CIPHER_CTX_free(evp);
  OPENSSL_cleanse(nonces, sizeof(nonces));
  return replies;
}

/* cookieGate(arena, offsets, lengths, endpoints, locals, count, keys, underLoad, verdicts,
 *            replyArena, replyOffsets, replyLengths, replyEndpoints, replyLocals)
 *   -> number of cookie replies written to reply slots [0, n).
 * keys: mac1 key ‖ cookie encryption key ‖ cookie secret, 32 bytes each. Message i is
 * judged into verdicts[i]; a cookie reply to it goes to the message's sender from the local
 * address it arrived at. */
static napi_value js_cookie_gate(napi_env env, napi_callback_info info) {
  napi_value argv[14];
  if (arg_count(env, info, 14, argv) != 0) return NULL;
  uint8_t *arena, *endpoints, *locals, *keys, *verdicts, *reply_arena, *reply_endpoints,
      *reply_locals;
  size_t arena_len, off_len, len_len, ep_len, loc_len, keys_len, verdicts_len, reply_arena_len,
      reply_off_len, reply_len_len, reply_ep_len, reply_loc_len;
  uint32_t *offsets, *lengths, *reply_offsets, *reply_lengths;
  uint64_t count;
  int under_load;
  if (arg_bytes(env, argv[0], "arena", &arena, &arena_len) ||
      arg_u32_array(env, argv[1], "offsets", &offsets, &off_len) ||
      arg_u32_array(env, argv[2], "lengths", &lengths, &len_len) ||
      arg_bytes(env, argv[3], "endpoints", &endpoints, &ep_len) ||
      arg_bytes_opt(env, argv[4], "locals", &locals, &loc_len) ||
      arg_uint(env, argv[5], "count", EDGETUN_MAX_BATCH, &count) ||
      arg_bytes(env, argv[6], "keys", &keys, &keys_len) ||
      arg_bool(env, argv[7], "underLoad", &under_load) ||
      arg_bytes(env, argv[8], "verdicts", &verdicts, &verdicts_len) ||
      arg_bytes(env, argv[9], "replyArena", &reply_arena, &reply_arena_len) ||
      arg_u32_array(env, argv[10], "replyOffsets", &reply_offsets, &reply_off_len) ||
      arg_u32_array(env, argv[11], "replyLengths", &reply_lengths, &reply_len_len) ||
      arg_bytes(env, argv[12], "replyEndpoints", &reply_endpoints, &reply_ep_len) ||
      arg_bytes_opt(env, argv[13], "replyLocals", &reply_locals, &reply_loc_len))
    return NULL;
  if (keys_len != 96)
    return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "keys must be 96 bytes, got %zu",
                      keys_len);
  if (check_range(env, "offsets", off_len, 1, 0, count) ||
      check_range(env, "lengths", len_len, 1, 0, count) ||
      check_range(env, "endpoints", ep_len, EDGETUN_ENDPOINT_SIZE, 0, count) ||
      (locals != NULL && check_range(env, "locals", loc_len, EDGETUN_ENDPOINT_SIZE, 0, count)) ||
      check_range(env, "verdicts", verdicts_len, 1, 0, count) ||
      check_spans(env, arena_len, offsets, lengths, 0, count, 0) ||
      check_range(env, "replyOffsets", reply_off_len, 1, 0, count) ||
      check_range(env, "replyLengths", reply_len_len, 1, 0, count) ||
      check_range(env, "replyEndpoints", reply_ep_len, EDGETUN_ENDPOINT_SIZE, 0, count) ||
      (reply_locals != NULL &&
       check_range(env, "replyLocals", reply_loc_len, EDGETUN_ENDPOINT_SIZE, 0, count)) ||
      check_spans(env, reply_arena_len, reply_offsets, NULL, 0, count, COOKIE_REPLY_LENGTH))
    return NULL;
  cookie_gate_job job = {arena,        offsets,       lengths,      endpoints,     locals,
                         (size_t)count, keys,          under_load,   verdicts,      reply_arena,
                         reply_offsets, reply_lengths, reply_endpoints, reply_locals,
                         NULL,          0};
  size_t replies = cookie_gate_run(&job);
  return make_int(env, (int64_t)replies);
}

napi_status init_cookie(napi_env env, napi_value exports) {
  napi_value fn;
  napi_status s = napi_create_function(env, "cookieGate", NAPI_AUTO_LENGTH, js_cookie_gate, NULL,
                                       &fn);
  if (s != napi_ok) return s;
  return napi_set_named_property(env, exports, "cookieGate", fn);
}
