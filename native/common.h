/*
 * edgetun native addon: shared declarations.
 *
 * The addon is deliberately small: it only does what JavaScript cannot do
 * cheaply (TUN ioctls, recvmmsg/sendmmsg, one OpenSSL call per packet without
 * crossing the JS boundary per packet, fd readiness through libuv). Protocol
 * logic stays in TypeScript.
 */
#ifndef EDGETUN_COMMON_H
#define EDGETUN_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>
#include <uv.h>

#include <stddef.h>
#include <stdint.h>

/* Upper bound for one recvmmsg/sendmmsg/read loop. Scratch space is sized from
 * it, so a larger request is refused rather than allocated on demand. */
#define EDGETUN_MAX_BATCH 1024

/* Binary endpoint record (documented for JS in src/native.ts):
 *   [0..16)  IPv6 address; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d)
 *   [16..18) port, network byte order
 *   [18..20) zero
 *   [20..24) IPv6 scope id (peer) or interface index (local), little endian */
#define EDGETUN_ENDPOINT_SIZE 24

/* Readiness bits passed to JS; equal to libuv's so no translation is needed. */
#define EDGETUN_READABLE UV_READABLE
#define EDGETUN_WRITABLE UV_WRITABLE

enum fd_kind { FD_KIND_TUN = 1, FD_KIND_UDP = 2, FD_KIND_LINK_EVENTS = 3 };

typedef struct fd_watch fd_watch;

/* Every fd the addon opened. close() and watch() only accept these, so a stale
 * or foreign fd number from JS cannot close somebody else's descriptor. */
typedef struct owned_fd {
  int fd;
  int kind;
  int family; /* AF_INET / AF_INET6 for UDP sockets */
  int unref;  /* readiness polling should not keep the process alive */
  int gso;    /* UDP socket: send runs of equal-sized packets with UDP_SEGMENT */
  fd_watch *watch;
  struct owned_fd *next;
} owned_fd;

typedef struct aead_ctx aead_ctx;

typedef struct addon_state {
  napi_env env;
  uv_loop_t *loop;
  owned_fd *fds;
  int tearing_down;
  /* uv_close() callbacks still to run. The environment's teardown waits for
   * them (async cleanup hook) because they run addon code, which is unloaded
   * after teardown. */
  int pending_closes;
  napi_async_cleanup_hook_handle cleanup_hook;
  aead_ctx *seal_ctx;
  aead_ctx *open_ctx;
  /* recvmmsg/sendmmsg scratch, allocated once at EDGETUN_MAX_BATCH. */
  void *mmsg_scratch;
} addon_state;

addon_state *state_of(napi_env env);

/* ---- errors ---- */
enum err_kind { ERR_PLAIN = 0, ERR_TYPE = 1, ERR_RANGE = 2 };

/* Throws an Error whose message starts with the errno name and whose `code`
 * is that name (e.g. "EBUSY"), `errno` the negative errno like Node's own
 * system errors. Always returns NULL so callers can `return throw_errno(...)`. */
napi_value throw_errno(napi_env env, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
napi_value throw_kind(napi_env env, int kind, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
const char *errno_name(int err);

/* ---- argument helpers: 0 on success, -1 with a JS exception pending ---- */
int arg_count(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
int arg_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len);
/* Like arg_bytes but null/undefined yields data = NULL, len = 0. */
int arg_bytes_opt(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len);
int arg_u32_array(napi_env env, napi_value v, const char *name, uint32_t **data, size_t *len);
int arg_i32_array_opt(napi_env env, napi_value v, const char *name, int32_t **data, size_t *len);
int arg_uint(napi_env env, napi_value v, const char *name, uint64_t max, uint64_t *out);
int arg_int(napi_env env, napi_value v, const char *name, int64_t min, int64_t max, int64_t *out);
int arg_bool(napi_env env, napi_value v, const char *name, int *out);
/* Copies a JS string into buf (NUL terminated). null/undefined gives "". */
int arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t bufsize,
               size_t *outlen, int *too_long);
int arg_fd(napi_env env, napi_value v, int *fd);

/* Checks [first, first+count) against an array of `len` elements holding
 * `per` entries per packet. */
int check_range(napi_env env, const char *name, size_t len, size_t per, uint64_t first,
                uint64_t count);

/* Checks that arena[offsets[i] .. offsets[i] + span) lies inside the arena for
 * every packet, span being lengths[i] + extra (or `extra` alone when lengths is
 * NULL). All packets are checked before any is touched, so a bad entry late in
 * a batch cannot leave earlier packets half processed. */
int check_spans(napi_env env, size_t arena_len, const uint32_t *offsets,
                const uint32_t *lengths, uint64_t first, uint64_t count, uint64_t extra);
/* The owned descriptor for fd if it is of the given kind, else throws EBADF. */
owned_fd *require_fd(napi_env env, int fd, int kind);

/* ---- value helpers ---- */
napi_value make_int(napi_env env, int64_t v);
napi_value make_undefined(napi_env env);
int set_prop_int(napi_env env, napi_value obj, const char *key, int64_t v);
int set_prop_str(napi_env env, napi_value obj, const char *key, const char *v);
int set_prop_bool(napi_env env, napi_value obj, const char *key, int v);

/* ---- owned descriptors ---- */
owned_fd *fd_register(addon_state *st, int fd, int kind, int family);
owned_fd *fd_lookup(addon_state *st, int fd);
/* Stops readiness polling and closes the descriptor. */
void fd_close(addon_state *st, owned_fd *entry);
void watch_release(addon_state *st, owned_fd *entry);
/* Called when teardown has closed everything and no close callback is due. */
void teardown_finished(addon_state *st);

/* ---- module parts ---- */
napi_status init_tun(napi_env env, napi_value exports);
napi_status init_udp(napi_env env, napi_value exports);
napi_status init_aead(napi_env env, napi_value exports);
napi_status init_cookie(napi_env env, napi_value exports);
napi_status init_lane(napi_env env, napi_value exports);
napi_status init_dataplane(napi_env env, napi_value exports);

/* ---- UDP batches for the addon's own threads (udp.c) ---- */
#define UDP_IO_BATCH 256
typedef struct udp_io udp_io;
udp_io *udp_io_new(void);
void udp_io_free(udp_io *io);
/* Datagrams received (0 when none waits) or -errno. */
int udp_io_recv(udp_io *io, int fd, uint8_t *arena, const uint32_t *offsets, uint32_t *lengths,
                uint8_t *endpoints, uint8_t *locals, unsigned count, size_t room);
/* Asks the kernel to queue runs of equal-sized datagrams from one sender as one (UDP_GRO):
 * a flood sent with UDP GSO then costs one queue entry and one copy per run, not per datagram.
 * Returns whether the kernel took it. */
int udp_io_enable_gro(int fd);
/* As udp_io_recv, into `count` slots of `room` bytes each from `arena` (room 65536 holds any
 * run); segment_sizes[k] is the run's datagram size (the last may be shorter), 0 for a single
 * datagram. Runs received (0 when none waits) or -errno. */
int udp_io_recv_coalesced(udp_io *io, int fd, uint8_t *arena, size_t room, unsigned count,
                          uint32_t *lengths, uint32_t *segment_sizes, uint8_t *endpoints,
                          uint8_t *locals);
/* Datagrams handed to the kernel (a full buffer stops early; a refused one is skipped), or
 * -errno when fd is no socket. While *gso_enabled (NULL: never), consecutive equal-sized
 * datagrams to one destination go as one UDP GSO message: one trip through the stack for up
 * to 64 of them instead of one each (route lookup, socket buffer, and on a virtual link the
 * receiving side's processing, which runs on the sending thread). A route that cannot take
 * GSO turns it off. *messages (may be NULL): the messages the kernel took. */
int udp_io_send(udp_io *io, int fd, int family, const uint8_t *arena, const uint32_t *offsets,
                const uint32_t *lengths, const uint8_t *endpoints, const uint8_t *locals,
                unsigned count, int *gso_enabled, unsigned *messages);

/* ---- the cookie gate (cookie.c), callable from any thread ---- */
typedef struct {
  const uint8_t *arena;
  const uint32_t *offsets;
  const uint32_t *lengths;
  const uint8_t *endpoints;
  const uint8_t *locals; /* may be NULL */
  size_t count;
  const uint8_t *keys; /* mac1 key, cookie key, cookie secret: 32 bytes each */
  int under_load;
  uint8_t *verdicts;
  uint8_t *reply_arena;
  const uint32_t *reply_offsets;
  uint32_t *reply_lengths;
  uint8_t *reply_endpoints;
  uint8_t *reply_locals; /* may be NULL */
  struct cookie_budget *budget; /* may be NULL: a reply to every message that needs one */
  uint32_t now_second;          /* for the budget */
} cookie_gate_job;
/* Cookie replies per source (address and port) per second: what one sender can make us
 * encrypt and send however fast it floods. Its own retries need one per Rekey-Timeout. */
#define COOKIE_REPLIES_PER_SOURCE_PER_SECOND 5
/* Messages per source per second the gate looks at while under load (with a budget); beyond,
 * they are dropped unread as GATE_OVER_BUDGET. One peer sends a handshake message per
 * Rekey-Timeout; the core's rate limiter lets an address start 20 handshakes a second. */
#define COOKIE_GATE_MESSAGES_PER_SOURCE_PER_SECOND 64
typedef struct cookie_budget cookie_budget;
cookie_budget *cookie_budget_new(void);
void cookie_budget_free(cookie_budget *budget);
/* Judges every message into verdicts[]; returns the number of cookie replies written. */
size_t cookie_gate_run(const cookie_gate_job *job);
enum gate_verdict {
  GATE_PASS = 0,
  GATE_BAD_MAC1 = 1,
  GATE_COOKIE = 2,
  GATE_NO_REPLY = 3,
  GATE_OVER_BUDGET = 4 /* its source had its share this second: of messages looked at, or of
                          cookie replies when it needed one */
};
napi_status init_poll(napi_env env, napi_value exports);
napi_status init_netlink(napi_env env, napi_value exports);
napi_status init_x25519(napi_env env, napi_value exports);
void aead_free(addon_state *st);

#define EXPORT_FN(env, exports, name, fn)                                                   \
  do {                                                                                      \
    napi_value fn_value_;                                                                   \
    napi_status s_ = napi_create_function((env), (name), NAPI_AUTO_LENGTH, (fn), NULL,      \
                                          &fn_value_);                                      \
    if (s_ != napi_ok) return s_;                                                           \
    s_ = napi_set_named_property((env), (exports), (name), fn_value_);                      \
    if (s_ != napi_ok) return s_;                                                           \
  } while (0)

/* A thread-safe function's call_js for a callback that takes no arguments: the threads only
 * say "look" (the handshake lane, the data plane); JS then asks what there is. */
void call_js_without_arguments(napi_env env, napi_value callback, void *context, void *data);

#endif
