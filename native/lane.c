/*
 * The handshake lane: a thread of the addon's own that drains the handshake
 * socket, runs the cookie gate (cookie.c) over each batch and sends the cookie
 * replies, so that a flood is absorbed beside the JS thread rather than on it.
 * Only what passes the gate (a valid mac1, and a valid mac2 while under load)
 * is kept, in a bounded ring, for the JS thread to take; it is told through a
 * thread-safe function, at most once until it has taken what waits.
 *
 * The socket stays the JS side's (it closes it, after stopping the lane). The
 * keys and the "under load" verdict come from the protocol core through
 * laneConfigure. The core judges load by the work that came to nothing, not by
 * how many messages come: a flood's initiations (a valid mac1 needs only the
 * hub's public key) fail after Diffie-Hellman as from unknown keys, or replayed,
 * while a fleet's genuine ones never do. More than 256 such a second put the
 * device under load (the lane then asks for mac2), and the messages turned away
 * meanwhile keep it so while the flood lasts; the verdict lapses a second after.
 * The lane adds its own evidence, the backstop for a genuine overload: how long
 * passed messages wait for the JS thread (the kernel driver and wireguard-go
 * judge by their queue's length). A burst the JS thread clears within the wait
 * target, such as a whole fleet starting at once, is answered without cookies;
 * one that outruns it meets cookies within that target, or as soon as the ring
 * is half full. A message that waited longer than the initiator's Rekey-Timeout
 * is dropped unanswered: its sender has sent a new initiation by then, and an
 * answer to the old one would only be discarded.
 *
 * What keeps it ahead of a flooder on the other core: the socket has UDP_GRO,
 * so a flood sent with UDP GSO (the cheap way to send fast) is queued and read
 * a run of up to 64 datagrams at a time, one queue entry and one copy each;
 * and under load the gate looks at only 64 messages a second from one source
 * (address and port), the rest costing a table look-up. The socket then stays
 * drained, and a joining peer's datagram is never among what the kernel drops
 * at a full buffer, blind to the sender.
 *
 * An idle JS side need not poll the lane for its counters: laneWakeOnActivity
 * asks to be told once, through the same function, at the next datagram the
 * lane reads, whatever the gate makes of it.
 */
#include "common.h"
#include "ring.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <linux/sock_diag.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif

/* Reads per recvmmsg: single datagrams or, with UDP_GRO, runs of equal-sized datagrams from one
 * sender (a flood sent with UDP GSO arrives so: one queue entry and one copy per run). */
#define LANE_RUNS 32
#define LANE_RUN_ROOM 65536
/* Messages judged per gate call; a read's runs are cut into at most this many at a time. */
#define LANE_MESSAGES 1024
/* Room per handed-over message: handshake messages are 148 bytes at most; a longer datagram is
 * cut here and dropped by the core for its length. */
#define LANE_ROOM 256
/* Passed messages waiting for the JS thread; more are dropped and counted. Room for a fleet of
 * thousands starting at once (2.4 MB). */
#define LANE_RING 8192
#define REPLY_SLOT 64
/* How long evidence of load lasts (as the core's UNDER_LOAD_LINGER_MS). */
#define LANE_LOAD_LINGER_NS 1000000000LL
/* Under load (besides the core's verdict) once the oldest passed message has waited this long
 * for the JS thread, or the ring is half full: new messages then need a valid mac2. A flood
 * meets the core's verdict long before; this is for a genuine overload. Well within
 * Rekey-Timeout, so an answer still finds its initiator waiting; not much less, so that a
 * retry arriving behind a fleet's burst is queued and answered rather than sent away for
 * another Rekey-Timeout. */
#define LANE_WAIT_TARGET_NS 2000000000LL
/* Rekey-Timeout: an initiation waiting longer has been replaced by its sender's next one. */
#define LANE_STALE_NS 5000000000LL

typedef struct lane_scratch {
  udp_io *io;
  uint8_t runs[LANE_RUNS * LANE_RUN_ROOM];
  uint32_t run_lengths[LANE_RUNS];
  uint32_t run_segments[LANE_RUNS];
  uint8_t run_endpoints[LANE_RUNS * EDGETUN_ENDPOINT_SIZE];
  uint8_t run_locals[LANE_RUNS * EDGETUN_ENDPOINT_SIZE];
  /* The messages of a read, as offsets into runs[]: */
  uint32_t offsets[LANE_MESSAGES];
  uint32_t lengths[LANE_MESSAGES];
  uint8_t endpoints[LANE_MESSAGES * EDGETUN_ENDPOINT_SIZE];
  uint8_t locals[LANE_MESSAGES * EDGETUN_ENDPOINT_SIZE];
  uint8_t verdicts[LANE_MESSAGES];
  uint8_t reply_arena[LANE_MESSAGES * REPLY_SLOT];
  uint32_t reply_offsets[LANE_MESSAGES];
  uint32_t reply_lengths[LANE_MESSAGES];
  uint8_t reply_endpoints[LANE_MESSAGES * EDGETUN_ENDPOINT_SIZE];
  uint8_t reply_locals[LANE_MESSAGES * EDGETUN_ENDPOINT_SIZE];
  uint8_t keys[96];
  cookie_budget *budget;
} lane_scratch;

typedef struct handshake_lane {
  napi_env env;
  int fd;
  int family;
  int wake_fd; /* eventfd: tells the thread to stop */
  pthread_t thread;
  int started;
  int stopped;
  napi_threadsafe_function notify;
  lane_scratch *scratch;
  pthread_mutex_t lock;
  /* Guarded by lock: */
  uint8_t keys[96];
  int have_keys;
  int under_load;
  datagram_ring ring; /* over the four arrays below */
  uint8_t ring_data[LANE_RING * LANE_ROOM];
  uint32_t ring_lengths[LANE_RING];
  uint8_t ring_endpoints[LANE_RING * EDGETUN_ENDPOINT_SIZE];
  uint8_t ring_locals[LANE_RING * EDGETUN_ENDPOINT_SIZE];
  int64_t ring_arrivals[LANE_RING]; /* CLOCK_MONOTONIC ns when the lane read it */
  int notified;
  int wake_on_activity; /* tell the JS thread at the next datagram read */
  double received, coalesced, bad_mac1, cookie_replies, unanswered, over_budget, ring_full,
      kernel_drops, stale;
  int error; /* errno that ended the thread, 0 while it runs */
} handshake_lane;

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static uint32_t kernel_drops_of(int fd) {
  uint32_t mem[SK_MEMINFO_VARS];
  socklen_t len = sizeof(mem);
  memset(mem, 0, sizeof(mem));
  if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) != 0) return 0;
  return mem[SK_MEMINFO_DROPS];
}

/* Drops the messages that waited past Rekey-Timeout from the ring's head (lock held); returns
 * how long the oldest remaining one has waited (0 when none waits). */
static int64_t lane_expire(handshake_lane *lane, int64_t now) {
  datagram_ring *ring = &lane->ring;
  while (ring->size > 0 && now - lane->ring_arrivals[ring->head] > LANE_STALE_NS) {
    datagram_ring_drop_head(ring);
    lane->stale++;
  }
  return ring->size > 0 ? now - lane->ring_arrivals[ring->head] : 0;
}

/* Runs the gate over the first `count` messages in the scratch, sends its cookie replies and
 * hands what passed over to the ring; returns whether the JS thread is to be told. */
static int lane_settle(handshake_lane *lane, lane_scratch *sc, size_t count, int have_keys,
                       int under_load, int64_t now) {
  size_t replies = 0;
  if (have_keys) {
    cookie_gate_job job = {sc->runs,        sc->offsets,       sc->lengths,
                           sc->endpoints,   sc->locals,        count,
                           sc->keys,        under_load,        sc->verdicts,
                           sc->reply_arena, sc->reply_offsets, sc->reply_lengths,
                           sc->reply_endpoints, sc->reply_locals,
                           sc->budget,      (uint32_t)(now / 1000000000LL)};
    replies = cookie_gate_run(&job);
    for (size_t sent = 0; sent < replies; sent += UDP_IO_BATCH) {
      size_t n = replies - sent < UDP_IO_BATCH ? replies - sent : UDP_IO_BATCH;
      udp_io_send(sc->io, lane->fd, lane->family, sc->reply_arena, sc->reply_offsets + sent,
                  sc->reply_lengths + sent, sc->reply_endpoints + sent * EDGETUN_ENDPOINT_SIZE,
                  sc->reply_locals + sent * EDGETUN_ENDPOINT_SIZE, (unsigned)n, NULL, NULL);
    }
  } else {
    memset(sc->verdicts, GATE_PASS, count); /* no key yet: the core counts them */
  }
  int wake = 0;
  pthread_mutex_lock(&lane->lock);
  lane->cookie_replies += (double)replies;
  for (size_t k = 0; k < count; k++) {
    switch (sc->verdicts[k]) {
      case GATE_BAD_MAC1:
        lane->bad_mac1++;
        continue;
      case GATE_COOKIE:
        continue;
      case GATE_NO_REPLY:
        lane->unanswered++;
        continue;
      case GATE_OVER_BUDGET:
        lane->over_budget++;
        continue;
      default:
        break;
    }
    int slot = datagram_ring_push(&lane->ring, sc->runs + sc->offsets[k], sc->lengths[k],
                                  sc->endpoints + k * EDGETUN_ENDPOINT_SIZE,
                                  sc->locals + k * EDGETUN_ENDPOINT_SIZE);
    if (slot < 0)
      lane->ring_full++;
    else
      lane->ring_arrivals[slot] = now;
  }
  if (lane->ring.size > 0 && !lane->notified) {
    lane->notified = 1;
    wake = 1;
  }
  pthread_mutex_unlock(&lane->lock);
  return wake;
}

static void *lane_main(void *arg) {
  handshake_lane *lane = arg;
  lane_scratch *sc = lane->scratch;
  for (unsigned k = 0; k < LANE_MESSAGES; k++) sc->reply_offsets[k] = k * REPLY_SLOT;
  uint32_t drops_seen = kernel_drops_of(lane->fd);
  int64_t loaded_until = 0;
  struct pollfd fds[2] = {{.fd = lane->fd, .events = POLLIN}, {.fd = lane->wake_fd, .events = POLLIN}};
  for (;;) {
    int ready = poll(fds, 2, -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      lane->error = errno;
      break;
    }
    if (fds[1].revents != 0) break;
    if (fds[0].revents & (POLLERR | POLLNVAL)) {
      lane->error = EBADF;
      break;
    }
    /* Drain what waits, one read at a time, until the socket is empty. */
    for (;;) {
      int got = udp_io_recv_coalesced(sc->io, lane->fd, sc->runs, LANE_RUN_ROOM, LANE_RUNS,
                                      sc->run_lengths, sc->run_segments, sc->run_endpoints,
                                      sc->run_locals);
      if (got < 0) {
        lane->error = -got;
        goto out;
      }
      if (got == 0) break;
      size_t messages = 0, coalesced = 0;
      for (int r = 0; r < got; r++) {
        uint32_t length = sc->run_lengths[r];
        uint32_t segment = sc->run_segments[r] != 0 ? sc->run_segments[r] : length;
        size_t in_run = segment == 0 ? 1 : (length + segment - 1) / segment;
        if (in_run == 0) in_run = 1; /* an empty datagram is one (empty) message */
        messages += in_run;
        if (sc->run_segments[r] != 0) coalesced += in_run;
      }
      uint32_t drops = kernel_drops_of(lane->fd);
      uint32_t dropped = drops - drops_seen;
      drops_seen = drops;
      int64_t now = now_ns();
      pthread_mutex_lock(&lane->lock);
      /* Kernel drops alone are no evidence: they say this thread fell behind, which cookie
       * replies (dearer than passing) would not mend; a burst's drops then sent the rest of
       * it away for a Rekey-Timeout while the JS thread kept up. */
      int64_t oldest_wait = lane_expire(lane, now);
      if (oldest_wait > LANE_WAIT_TARGET_NS || lane->ring.size >= LANE_RING / 2)
        loaded_until = now + LANE_LOAD_LINGER_NS;
      int have_keys = lane->have_keys;
      int under_load = lane->under_load || now < loaded_until;
      if (have_keys) memcpy(sc->keys, lane->keys, sizeof(sc->keys));
      pthread_mutex_unlock(&lane->lock);
      /* Cut the runs into messages, judged LANE_MESSAGES at a time. */
      int wake = 0;
      size_t count = 0;
      for (int r = 0; r < got; r++) {
        uint32_t length = sc->run_lengths[r];
        uint32_t segment = sc->run_segments[r] != 0 ? sc->run_segments[r] : length;
        uint32_t base = (uint32_t)r * LANE_RUN_ROOM, at = 0;
        do {
          if (count == LANE_MESSAGES) {
            wake |= lane_settle(lane, sc, count, have_keys, under_load, now);
            count = 0;
          }
          sc->offsets[count] = base + at;
          sc->lengths[count] = length - at < segment ? length - at : segment;
          memcpy(sc->endpoints + count * EDGETUN_ENDPOINT_SIZE,
                 sc->run_endpoints + (size_t)r * EDGETUN_ENDPOINT_SIZE, EDGETUN_ENDPOINT_SIZE);
          memcpy(sc->locals + count * EDGETUN_ENDPOINT_SIZE,
                 sc->run_locals + (size_t)r * EDGETUN_ENDPOINT_SIZE, EDGETUN_ENDPOINT_SIZE);
          count++;
          at += segment != 0 ? segment : 1;
        } while (at < length);
      }
      if (count > 0) wake |= lane_settle(lane, sc, count, have_keys, under_load, now);
      /* Counted once judged, so that whoever sees them received sees their verdicts too. */
      pthread_mutex_lock(&lane->lock);
      lane->received += (double)messages;
      lane->coalesced += (double)coalesced;
      lane->kernel_drops += dropped;
      if (lane->wake_on_activity) {
        lane->wake_on_activity = 0;
        wake = 1;
      }
      pthread_mutex_unlock(&lane->lock);
      if (wake) napi_call_threadsafe_function(lane->notify, NULL, napi_tsfn_nonblocking);
    }
  }
out:
  OPENSSL_cleanse(sc->keys, sizeof(sc->keys));
  return NULL;
}

/* Stops the thread and waits for it; the socket is left open (it is the JS side's). */
static void lane_halt(handshake_lane *lane) {
  if (!lane->started || lane->stopped) return;
  lane->stopped = 1;
  uint64_t one = 1;
  ssize_t w = write(lane->wake_fd, &one, sizeof(one));
  (void)w;
  pthread_join(lane->thread, NULL);
}

static void lane_env_cleanup(void *arg) { lane_halt(arg); }

static void lane_finalize(napi_env env, void *data, void *hint) {
  handshake_lane *lane = data;
  (void)hint;
  if (!lane->stopped) {
    lane_halt(lane);
    napi_remove_env_cleanup_hook(env, lane_env_cleanup, lane);
  }
  if (lane->wake_fd >= 0) close(lane->wake_fd);
  if (lane->scratch != NULL) {
    udp_io_free(lane->scratch->io);
    cookie_budget_free(lane->scratch->budget);
    free(lane->scratch);
  }
  pthread_mutex_destroy(&lane->lock);
  OPENSSL_cleanse(lane->keys, sizeof(lane->keys));
  free(lane);
}

static handshake_lane *lane_arg(napi_env env, napi_value value) {
  handshake_lane *lane = NULL;
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_external ||
      napi_get_value_external(env, value, (void **)&lane) != napi_ok || lane == NULL) {
    throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "lane must be a lane handle");
    return NULL;
  }
  return lane;
}

/* laneStart(fd, onPassed) -> lane: starts the thread over the handshake socket `fd`;
 * onPassed() is called (on the JS thread) when messages wait to be taken. */
static napi_value js_lane_start(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  if (arg_count(env, info, 2, argv) || arg_fd(env, argv[0], &fd)) return NULL;
  owned_fd *entry = require_fd(env, fd, FD_KIND_UDP);
  if (entry == NULL) return NULL;
  handshake_lane *lane = calloc(1, sizeof(*lane));
  if (lane == NULL) return throw_errno(env, ENOMEM, "cannot start the handshake lane");
  lane->env = env;
  lane->fd = fd;
  lane->family = entry->family;
  lane->wake_fd = -1;
  lane->ring = DATAGRAM_RING_OVER(lane, LANE_ROOM, LANE_RING);
  pthread_mutex_init(&lane->lock, NULL);
  napi_value handle;
  if (napi_create_external(env, lane, lane_finalize, NULL, &handle) != napi_ok) {
    pthread_mutex_destroy(&lane->lock);
    free(lane);
    return NULL;
  }
  lane->scratch = calloc(1, sizeof(lane_scratch));
  if (lane->scratch == NULL || (lane->scratch->io = udp_io_new()) == NULL ||
      (lane->scratch->budget = cookie_budget_new()) == NULL)
    return throw_errno(env, ENOMEM, "cannot start the handshake lane");
  /* Without it (kernels before 5.0) every datagram is its own read, as before. */
  udp_io_enable_gro(fd);
  lane->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (lane->wake_fd < 0) {
    int e = errno;
    return throw_errno(env, e, "cannot start the handshake lane: %s", strerror(e));
  }
  napi_value name;
  napi_create_string_utf8(env, "edgetun handshake lane", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, NULL, NULL, lane,
                                      call_js_without_arguments, &lane->notify) != napi_ok)
    return NULL;
  /* The sockets' own polling decides whether the process stays alive, not this. */
  napi_unref_threadsafe_function(env, lane->notify);
  int e = pthread_create(&lane->thread, NULL, lane_main, lane);
  if (e != 0) return throw_errno(env, e, "cannot start the handshake lane: %s", strerror(e));
  pthread_setname_np(lane->thread, "edgetun-lane"); /* named as the data plane's threads are */
  lane->started = 1;
  napi_add_env_cleanup_hook(env, lane_env_cleanup, lane);
  return handle;
}

/* laneConfigure(lane, keys | null, underLoad): the gate's keys (96 bytes, see cookie.c) and
 * the core's verdict on load. Without keys everything passes to the core. */
static napi_value js_lane_configure(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (arg_count(env, info, 3, argv)) return NULL;
  handshake_lane *lane = lane_arg(env, argv[0]);
  uint8_t *keys;
  size_t keys_len;
  int under_load;
  if (lane == NULL || arg_bytes_opt(env, argv[1], "keys", &keys, &keys_len) ||
      arg_bool(env, argv[2], "underLoad", &under_load))
    return NULL;
  if (keys != NULL && keys_len != 96)
    return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "keys must be 96 bytes, got %zu",
                      keys_len);
  pthread_mutex_lock(&lane->lock);
  lane->have_keys = keys != NULL;
  if (keys != NULL) memcpy(lane->keys, keys, 96);
  else OPENSSL_cleanse(lane->keys, sizeof(lane->keys));
  lane->under_load = under_load;
  pthread_mutex_unlock(&lane->lock);
  return make_undefined(env);
}

/* laneTake(lane, arena, offsets, lengths, endpoints, locals, count, room) -> n: moves up to
 * `count` passed messages into slots [0, n). */
static napi_value js_lane_take(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  if (arg_count(env, info, 8, argv)) return NULL;
  handshake_lane *lane = lane_arg(env, argv[0]);
  datagram_take take;
  if (lane == NULL || datagram_take_args(env, argv, LANE_ROOM, &take)) return NULL;
  pthread_mutex_lock(&lane->lock);
  lane_expire(lane, now_ns());
  uint64_t n = datagram_ring_take(&lane->ring, &take);
  /* Told again only once this is empty: until then the caller comes back by itself. */
  if (lane->ring.size == 0) lane->notified = 0;
  pthread_mutex_unlock(&lane->lock);
  return make_int(env, (int64_t)n);
}

/* laneStats(lane) -> counters since the start (see src/host/native/lane.ts). */
static napi_value js_lane_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (arg_count(env, info, 1, argv)) return NULL;
  handshake_lane *lane = lane_arg(env, argv[0]);
  if (lane == NULL) return NULL;
  pthread_mutex_lock(&lane->lock);
  double v[] = {lane->received,     lane->coalesced,   lane->bad_mac1,
                lane->cookie_replies, lane->unanswered,  lane->over_budget,
                lane->ring_full,    lane->kernel_drops, (double)lane->ring.size,
                (double)lane->error, lane->stale};
  pthread_mutex_unlock(&lane->lock);
  static const char *names[] = {"received",    "coalesced",   "badMac1",
                                "cookieReplies", "unanswered", "overBudget",
                                "ringFull",    "kernelDrops", "waiting",
                                "error",       "stale"};
  napi_value out, value;
  if (napi_create_object(env, &out) != napi_ok) return NULL;
  for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
    if (napi_create_double(env, v[i], &value) != napi_ok ||
        napi_set_named_property(env, out, names[i], value) != napi_ok)
      return NULL;
  }
  return out;
}

/* laneWakeOnActivity(lane) -> received: onPassed() is called once more at the next datagram
 * the lane reads, even if nothing passes; returns the messages read so far, so the caller
 * can tell whether one came before it asked. */
static napi_value js_lane_wake_on_activity(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (arg_count(env, info, 1, argv)) return NULL;
  handshake_lane *lane = lane_arg(env, argv[0]);
  if (lane == NULL) return NULL;
  pthread_mutex_lock(&lane->lock);
  lane->wake_on_activity = 1;
  double received = lane->received;
  pthread_mutex_unlock(&lane->lock);
  napi_value out;
  if (napi_create_double(env, received, &out) != napi_ok) return NULL;
  return out;
}

/* laneStop(lane): stops the thread (waits for it); the caller then closes the socket. */
static napi_value js_lane_stop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (arg_count(env, info, 1, argv)) return NULL;
  handshake_lane *lane = lane_arg(env, argv[0]);
  if (lane == NULL) return NULL;
  if (lane->started && !lane->stopped) {
    lane_halt(lane);
    napi_remove_env_cleanup_hook(env, lane_env_cleanup, lane);
    napi_release_threadsafe_function(lane->notify, napi_tsfn_release);
  }
  return make_undefined(env);
}

napi_status init_lane(napi_env env, napi_value exports) {
  EXPORT_FN(env, exports, "laneStart", js_lane_start);
  EXPORT_FN(env, exports, "laneConfigure", js_lane_configure);
  EXPORT_FN(env, exports, "laneTake", js_lane_take);
  EXPORT_FN(env, exports, "laneStats", js_lane_stats);
  EXPORT_FN(env, exports, "laneWakeOnActivity", js_lane_wake_on_activity);
  EXPORT_FN(env, exports, "laneStop", js_lane_stop);
  return napi_ok;
}
