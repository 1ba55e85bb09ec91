/*
 * The native receive path: a thread of the addon's own that reads the data
 * socket, opens transport data of established sessions, checks the replay
 * window and the inner source address, and writes the inner packets to the
 * TUN device, so that a data packet never wakes the JS thread.
 *
 * The protocol core (JS) stays authoritative for everything else and pushes
 * what this thread needs: a keypair when it is derived (receive key, receiver
 * index, peer, remaining lifetime) and its removal when it is dropped; each
 * allowed-IPs prefix as it changes. Once installed, a keypair's replay window
 * is this side's alone (the core never opens data for it). What this thread
 * cannot decide (handshake messages, data for an index it does not hold) goes
 * through a bounded ring to the JS path that exists without it.
 *
 * What the core's timers and counters need comes back as per-peer deltas that
 * JS collects (authenticated packets, data packets, bytes, latest source) and
 * the receiver indices whose first packet arrived (the responder's session
 * confirmation). JS is told through a thread-safe function: at once for ring
 * items and confirmations, at most every DP_NOTIFY_INTERVAL_NS for activity.
 *
 * A second thread sends, when the daemon hands over the TUN device too
 * (dpAttach with readTun): it reads inner packets (splitting the kernel's
 * super-packets as the JS path does), finds the peer by the longest
 * allowed-IPs prefix of the destination, seals with the peer's current
 * sending keypair and sends with sendmmsg to the peer's endpoint (roaming seen
 * on receive moves it), a run of equal-sized packets as one UDP GSO message.
 * Two threads rather than one polling both descriptors: measured both ways,
 * one thread made a ping wait behind a TCP stream's bulk going the other way,
 * and received less of a UDP flood.
 *
 * Counters: the core stays the owner of every sending counter and lends this
 * thread blocks of them (a lease of SEND_LEASE counters, src/host/dataplane.ts,
 * plus one spare lease granted ahead, asked for when the spare is taken into
 * use). The core's own
 * messages on the keypair (keepalives, staged packets) take counters past
 * every lease, so no counter is ever used twice; the blocks are small enough
 * (two at most in flight) that the receiver's replay window covers the gap.
 * What this thread cannot send (no route, no current keypair, the lease used
 * up, Reject-After-Time passed) goes to JS unchanged through a second ring;
 * sent activity comes back with the per-peer deltas, at once when a keypair
 * passes its Rekey-After-Time, so the core rekeys as if it had sent.
 *
 * One mutex guards the tables; each thread takes it twice per batch (before
 * and after the AEAD), never per packet, and never across a system call.
 *
 * Both threads ask the scheduler for a short slice (prefer_short_slice): a
 * thread that wakes for a packet and sleeps again within tens of microseconds
 * then runs when it wakes instead of waiting for whatever holds the CPU to use
 * up its default slice, which is where an idle ping's slow round trips went.
 */
#include "common.h"
#include "ring.h"
#include "offload.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define DP_BATCH 128
/* A datagram slot: the largest MTU (9000) plus the transport header, padding and tag. */
#define DP_ROOM 9088
/* Datagrams waiting for the JS path; more are dropped and counted. */
#define DP_RING 256
#define DP_KEY_SIZE 32
#define DP_TAG_SIZE 16
#define DP_HEADER 16
#define DP_MIN_MESSAGE 32
/* Keypair hash slots (a power of two); at most half are used. */
#define DP_KEYPAIR_SLOTS 65536
#define DP_MAX_KEYPAIRS (DP_KEYPAIR_SLOTS / 2)
/* The replay window: 8192 bits of history in 64-bit words, as the kernel keeps. */
#define DP_REPLAY_WORDS 128
#define DP_REPLAY_WINDOW (DP_REPLAY_WORDS * 64 - 64)
/* Counters at or past this are refused: the core's Reject-After-Messages (its counters are
 * JS numbers, so the limit is 2^53 - 1 there and here). */
#define DP_REJECT_AFTER_MESSAGES 9007199254740991ULL
/* Inner packets read from the TUN device: room per slot after the header. */
#define DP_INNER_ROOM (DP_ROOM - DP_HEADER - DP_TAG_SIZE - 16) /* 9040: MAX_MTU + 40 */
/* One read of an offload TUN queue: the vnet header and a 64 KiB super-packet, with slack. */
#define DP_TUN_SCRATCH (VNET_HDR_LEN + 65536 + 512)
/* Activity (not confirmations or ring items) is reported at most this often. */
#define DP_NOTIFY_INTERVAL_NS 100000000LL

/* Drop reasons counted here, named as in src/core/drops.ts (slow_path_full is its own). */
enum dp_drop {
  DP_DROP_KEY_EXPIRED,
  DP_DROP_COUNTER_TOO_LARGE,
  DP_DROP_DECRYPTION_FAILED,
  DP_DROP_REPLAYED,
  DP_DROP_BAD_INNER_PACKET,
  DP_DROP_SOURCE_NOT_ALLOWED,
  DP_DROP_SLOW_PATH_FULL,
  DP_DROP_COUNT
};
static const char *const dp_drop_names[DP_DROP_COUNT] = {
    "key_expired",      "counter_too_large",  "decryption_failed", "replayed",
    "bad_inner_packet", "source_not_allowed", "slow_path_full"};

typedef struct dp_keypair {
  uint32_t index;
  uint32_t peer;
  int64_t expires_ns;
  int first_seen; /* its first authenticated packet has been reported */
  int replay_any;
  uint64_t replay_highest;
  uint64_t replay_bits[DP_REPLAY_WORDS];
  uint8_t key[DP_KEY_SIZE];
} dp_keypair;

/* What the thread sends a peer's packets with: its current keypair, while the core says so. */
typedef struct dp_sending {
  int active;
  uint32_t remote_index;
  uint64_t next, end;               /* the lease in use: counters [next, end) */
  uint64_t spare_start, spare_end;  /* the lease granted ahead (empty when equal) */
  int lease_asked;                  /* the core was asked for a spare lease */
  int64_t expires_ns;               /* Reject-After-Time */
  int64_t rekey_ns;                 /* Rekey-After-Time (initiator), else INT64_MAX */
  int rekey_told;
  int has_endpoint;
  uint8_t endpoint[EDGETUN_ENDPOINT_SIZE];
  uint8_t local[EDGETUN_ENDPOINT_SIZE];
  uint8_t key[DP_KEY_SIZE];
} dp_sending;

typedef struct dp_peer {
  int dirty;
  double authenticated, data, rx_bytes, rx_packets, rx_payload_bytes, keepalives;
  double tx_packets, tx_bytes, tx_payload_bytes;
  dp_sending send;
  int has_source;
  uint8_t source[EDGETUN_ENDPOINT_SIZE];
  uint8_t source_local[EDGETUN_ENDPOINT_SIZE];
} dp_peer;

typedef struct dp_route {
  uint8_t used, family, cidr;
  uint8_t addr[16];
  uint32_t peer;
} dp_route;

typedef struct dp_job {
  unsigned slot;  /* datagram index in the batch */
  uint32_t index; /* receiver index */
  uint64_t counter;
} dp_job;

typedef struct dp_scratch {
  udp_io *io;
  EVP_CIPHER_CTX *evp;
  uint8_t arena[DP_BATCH * DP_ROOM];
  uint32_t offsets[DP_BATCH];
  uint32_t lengths[DP_BATCH];
  uint8_t endpoints[DP_BATCH * EDGETUN_ENDPOINT_SIZE];
  uint8_t locals[DP_BATCH * EDGETUN_ENDPOINT_SIZE];
  dp_job jobs[DP_BATCH];
  uint8_t keys[DP_BATCH * DP_KEY_SIZE];
  int authentic[DP_BATCH];
  uint32_t tun_offsets[DP_BATCH];
  uint32_t tun_lengths[DP_BATCH];
  /* The send direction: inner packets read at offset DP_HEADER of each slot. */
  uint8_t out_arena[DP_BATCH * DP_ROOM];
  uint32_t out_lengths[DP_BATCH];
  uint32_t seal_offsets[DP_BATCH];
  uint32_t seal_lengths[DP_BATCH];
  uint32_t seal_padded[DP_BATCH];
  uint64_t seal_counters[DP_BATCH];
  uint8_t seal_keys[DP_BATCH * DP_KEY_SIZE];
  uint8_t seal_endpoints[DP_BATCH * EDGETUN_ENDPOINT_SIZE];
  uint8_t seal_locals[DP_BATCH * EDGETUN_ENDPOINT_SIZE];
  uint8_t no_endpoint[EDGETUN_ENDPOINT_SIZE];
  uint8_t *tun_scratch; /* offload reads, DP_TUN_SCRATCH */
  udp_io *send_io; /* the send thread's own */
  EVP_CIPHER_CTX *send_evp;
  seg_state seg;
} dp_scratch;

typedef struct dataplane {
  napi_env env;
  int udp_fd, tun_fd, tun_offload;
  unsigned tun_gro; /* what gro_plan may coalesce (GRO_TCP, GRO_UDP); the receive thread's */
  int udp_family;
  int udp_gso; /* the send thread may send runs as UDP GSO messages; its own once started */
  int sending; /* the thread reads the TUN device too (dpAttachTun) */
  uint64_t slice_ns; /* the threads' scheduler slice (0: the kernel's default) */
  unsigned mtu;
  int wake_fd;
  pthread_t thread;
  int running;
  pthread_t send_thread; /* the send direction's, while sending */
  int send_running;
  int closed;
  napi_threadsafe_function notify;
  dp_scratch *scratch;
  pthread_mutex_t lock;
  /* Guarded by lock: */
  dp_keypair **keypairs; /* DP_KEYPAIR_SLOTS, linear probing */
  unsigned keypair_count;
  dp_peer *peers;
  uint32_t peer_capacity;
  uint32_t *dirty; /* peer ids with deltas, each once */
  uint32_t dirty_count;
  uint32_t *confirmed; /* receiver indices whose first packet arrived */
  uint32_t confirmed_count;
  dp_route *routes;
  uint32_t route_capacity, route_count;
  uint32_t v4_lengths[33], v6_lengths[129];
  datagram_ring ring; /* over the four arrays below */
  uint8_t ring_data[DP_RING * DP_ROOM];
  uint32_t ring_lengths[DP_RING];
  uint8_t ring_endpoints[DP_RING * EDGETUN_ENDPOINT_SIZE];
  uint8_t ring_locals[DP_RING * EDGETUN_ENDPOINT_SIZE];
  double drops[DP_DROP_COUNT];
  /* Batches by their packet count, for the metrics' batch histograms: [0] receives (each
   * recvmmsg), [1] TUN writes (what one batch delivered), [2] sends (each sendmmsg), [3] TUN
   * reads. */
  double batch_sizes[4][DP_BATCH + 1];
  double opened, to_js, tun_write_errors;
  /* The send direction's hand-over ring (inner packets for the JS path) and totals. */
  datagram_ring out_ring;
  uint8_t out_ring_data[DP_RING * DP_ROOM];
  uint32_t out_ring_lengths[DP_RING];
  uint8_t out_ring_endpoints[DP_RING * EDGETUN_ENDPOINT_SIZE];
  uint8_t out_ring_locals[DP_RING * EDGETUN_ENDPOINT_SIZE];
  double sealed, tun_to_js, send_errors, tun_read_drops;
  double send_messages; /* UDP messages the sealed packets went in (a GSO run is one) */
  int notified;
  /* Set (atomically) when a peer's latest source differs from the one before: the JS send
   * path looks before each batch, so that an answer goes where the question came from. */
  int source_moved;
  int64_t last_notify_ns;
  int error;
} dataplane;

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static uint32_t get_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p) {
  return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* ---- keypairs by receiver index ---- */

static unsigned index_slot(uint32_t index) {
  /* Indices are random already; a multiply spreads any that are not. */
  return (unsigned)((index * 2654435761u) >> 16) & (DP_KEYPAIR_SLOTS - 1);
}

static dp_keypair *keypair_find(dataplane *dp, uint32_t index) {
  for (unsigned s = index_slot(index);; s = (s + 1) & (DP_KEYPAIR_SLOTS - 1)) {
    dp_keypair *k = dp->keypairs[s];
    if (k == NULL) return NULL;
    if (k->index == index) return k;
  }
}

/* Removes the keypair of `index`, moving later entries of its probe run back (no tombstones). */
static void keypair_remove(dataplane *dp, uint32_t index) {
  unsigned s = index_slot(index);
  for (;; s = (s + 1) & (DP_KEYPAIR_SLOTS - 1)) {
    if (dp->keypairs[s] == NULL) return;
    if (dp->keypairs[s]->index == index) break;
  }
  OPENSSL_cleanse(dp->keypairs[s]->key, DP_KEY_SIZE);
  free(dp->keypairs[s]);
  dp->keypairs[s] = NULL;
  dp->keypair_count--;
  for (unsigned t = (s + 1) & (DP_KEYPAIR_SLOTS - 1); dp->keypairs[t] != NULL;
       t = (t + 1) & (DP_KEYPAIR_SLOTS - 1)) {
    unsigned home = index_slot(dp->keypairs[t]->index);
    /* Entry t may move to the hole s unless its home lies cyclically in (s, t]. */
    int stays = s <= t ? (home > s && home <= t) : (home > s || home <= t);
    if (stays) continue;
    dp->keypairs[s] = dp->keypairs[t];
    dp->keypairs[t] = NULL;
    s = t;
  }
}

/* RFC 6479 window over 64-bit words; called only after the packet authenticated. */
static int replay_accept(dp_keypair *k, uint64_t counter) {
  if (k->replay_any && counter + DP_REPLAY_WINDOW < k->replay_highest) return 0;
  uint64_t word = counter / 64;
  if (!k->replay_any || counter > k->replay_highest) {
    uint64_t top = k->replay_any ? k->replay_highest / 64 : 0;
    uint64_t clear = k->replay_any ? word - top : DP_REPLAY_WORDS;
    if (clear > DP_REPLAY_WORDS) clear = DP_REPLAY_WORDS;
    for (uint64_t i = 1; i <= clear; i++) k->replay_bits[(top + i) % DP_REPLAY_WORDS] = 0;
    if (!k->replay_any) k->replay_bits[0] = 0;
    k->replay_highest = counter;
    k->replay_any = 1;
  }
  uint64_t bit = 1ULL << (counter % 64);
  uint64_t *w = &k->replay_bits[word % DP_REPLAY_WORDS];
  if (*w & bit) return 0;
  *w |= bit;
  return 1;
}

/* ---- allowed IPs: one hash of (family, prefix length, masked address) ---- */

static void mask_address(uint8_t *out, const uint8_t *addr, unsigned bytes, unsigned cidr) {
  for (unsigned i = 0; i < bytes; i++) {
    unsigned bits = cidr >= 8 * (i + 1) ? 8 : cidr > 8 * i ? cidr - 8 * i : 0;
    out[i] = bits == 0 ? 0 : (uint8_t)(addr[i] & (0xff << (8 - bits)));
  }
  for (unsigned i = bytes; i < 16; i++) out[i] = 0;
}

static uint32_t route_hash(uint8_t family, uint8_t cidr, const uint8_t *addr) {
  uint32_t h = 2166136261u ^ family ^ ((uint32_t)cidr << 8);
  for (int i = 0; i < 16; i++) h = (h ^ addr[i]) * 16777619u;
  return h;
}

static dp_route *route_find(dataplane *dp, uint8_t family, uint8_t cidr, const uint8_t *masked) {
  if (dp->route_capacity == 0) return NULL;
  uint32_t mask = dp->route_capacity - 1;
  for (uint32_t s = route_hash(family, cidr, masked) & mask;; s = (s + 1) & mask) {
    dp_route *r = &dp->routes[s];
    if (!r->used) return NULL;
    if (r->family == family && r->cidr == cidr && memcmp(r->addr, masked, 16) == 0) return r;
  }
}

static int route_grow(dataplane *dp) {
  uint32_t capacity = dp->route_capacity == 0 ? 64 : dp->route_capacity * 2;
  dp_route *routes = calloc(capacity, sizeof(*routes));
  if (routes == NULL) return -1;
  for (uint32_t i = 0; i < dp->route_capacity; i++) {
    dp_route *r = &dp->routes[i];
    if (!r->used) continue;
    uint32_t s = route_hash(r->family, r->cidr, r->addr) & (capacity - 1);
    while (routes[s].used) s = (s + 1) & (capacity - 1);
    routes[s] = *r;
  }
  free(dp->routes);
  dp->routes = routes;
  dp->route_capacity = capacity;
  return 0;
}

static int route_set(dataplane *dp, uint8_t family, uint8_t cidr, const uint8_t *masked,
                     uint32_t peer) {
  dp_route *r = route_find(dp, family, cidr, masked);
  if (r != NULL) {
    r->peer = peer;
    return 0;
  }
  if ((dp->route_count + 1) * 2 > dp->route_capacity && route_grow(dp) != 0) return -1;
  uint32_t mask = dp->route_capacity - 1;
  uint32_t s = route_hash(family, cidr, masked) & mask;
  while (dp->routes[s].used) s = (s + 1) & mask;
  r = &dp->routes[s];
  r->used = 1;
  r->family = family;
  r->cidr = cidr;
  memcpy(r->addr, masked, 16);
  r->peer = peer;
  dp->route_count++;
  if (family == 4) dp->v4_lengths[cidr]++;
  else dp->v6_lengths[cidr]++;
  return 0;
}

static void route_delete(dataplane *dp, uint8_t family, uint8_t cidr, const uint8_t *masked) {
  dp_route *r = route_find(dp, family, cidr, masked);
  if (r == NULL) return;
  uint32_t mask = dp->route_capacity - 1;
  uint32_t s = (uint32_t)(r - dp->routes);
  r->used = 0;
  dp->route_count--;
  if (family == 4) dp->v4_lengths[cidr]--;
  else dp->v6_lengths[cidr]--;
  for (uint32_t t = (s + 1) & mask; dp->routes[t].used; t = (t + 1) & mask) {
    dp_route *e = &dp->routes[t];
    uint32_t home = route_hash(e->family, e->cidr, e->addr) & mask;
    int stays = s <= t ? (home > s && home <= t) : (home > s || home <= t);
    if (stays) continue;
    dp->routes[s] = *e;
    e->used = 0;
    s = t;
  }
}

/* The peer of the longest prefix holding `addr`, or -1. */
static int64_t route_lookup(dataplane *dp, int family, const uint8_t *addr) {
  uint8_t masked[16];
  unsigned bytes = family == 4 ? 4 : 16;
  const uint32_t *lengths = family == 4 ? dp->v4_lengths : dp->v6_lengths;
  for (int cidr = (int)bytes * 8; cidr >= 0; cidr--) {
    if (lengths[cidr] == 0) continue;
    mask_address(masked, addr, bytes, (unsigned)cidr);
    dp_route *r = route_find(dp, (uint8_t)family, (uint8_t)cidr, masked);
    if (r != NULL) return r->peer;
  }
  return -1;
}

/* ---- the thread ---- */

static void mark_dirty(dataplane *dp, uint32_t peer) {
  if (dp->peers[peer].dirty) return;
  dp->peers[peer].dirty = 1;
  dp->dirty[dp->dirty_count++] = peer;
}

static void to_ring(dataplane *dp, dp_scratch *sc, unsigned k) {
  if (datagram_ring_push(&dp->ring, sc->arena + sc->offsets[k], sc->lengths[k],
                         sc->endpoints + (size_t)k * EDGETUN_ENDPOINT_SIZE,
                         sc->locals + (size_t)k * EDGETUN_ENDPOINT_SIZE) < 0) {
    dp->drops[DP_DROP_SLOW_PATH_FULL]++;
    return;
  }
  dp->to_js++;
}

/* Decrypts in place; 1 authentic, 0 not (the plaintext is wiped then). */
static int open_in_place(EVP_CIPHER_CTX *evp, const uint8_t *key, uint64_t counter, uint8_t *buf,
                         size_t len, uint8_t *tag) {
  uint8_t nonce[12] = {0};
  for (int b = 0; b < 8; b++) nonce[4 + b] = (uint8_t)(counter >> (8 * b));
  OSSL_PARAM params[2];
  params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, DP_TAG_SIZE);
  params[1] = OSSL_PARAM_construct_end();
  int outl = 0, finl = 0;
  if (EVP_CipherInit_ex(evp, NULL, NULL, key, nonce, 0) != 1 ||
      EVP_CIPHER_CTX_set_params(evp, params) != 1)
    return 0;
  if (len > 0 && EVP_DecryptUpdate(evp, buf, &outl, buf, (int)len) != 1) return 0;
  if (EVP_DecryptFinal_ex(evp, buf + outl, &finl) != 1) {
    if (len > 0) memset(buf, 0, len);
    return 0;
  }
  return 1;
}

/* The inner packet's length from its IP header, or 0 when it is not a whole IPv4/IPv6 one. */
static uint32_t inner_length(const uint8_t *p, uint32_t padded) {
  if (padded == 0) return 0;
  unsigned version = p[0] >> 4;
  uint32_t length;
  if (version == 4 && padded >= 20) {
    length = (uint32_t)p[2] << 8 | p[3];
    if (length < 20) return 0;
  } else if (version == 6 && padded >= 40) {
    length = ((uint32_t)p[4] << 8 | p[5]) + 40;
  } else {
    return 0;
  }
  return length <= padded ? length : 0;
}

static void write_tun(dataplane *dp, dp_scratch *sc, unsigned count) {
  unsigned n = 0, alone_until = 0;
  while (n < count) {
    ssize_t r;
    size_t group = 1;
    if (dp->tun_offload) {
      gro_group g;
      struct iovec iov[2 + GRO_MAX_SEGMENTS];
      gro_plan(&g, sc->arena, sc->tun_offsets, sc->tun_lengths, n,
               n >= alone_until ? count - n : 1, dp->tun_gro);
      int niov = gro_iov(&g, iov, sc->arena, sc->tun_offsets, sc->tun_lengths, n);
      group = g.count;
      do {
        r = writev(dp->tun_fd, iov, niov);
      } while (r < 0 && errno == EINTR);
      if (r < 0 && group > 1 && errno != EAGAIN && errno != EBADF) {
        alone_until = n + (unsigned)group; /* refused as a super-packet: one by one */
        if (g.udp) dp->tun_gro &= ~GRO_UDP; /* a kernel without USO: TCP runs only */
        continue;
      }
    } else {
      do {
        r = write(dp->tun_fd, sc->arena + sc->tun_offsets[n], sc->tun_lengths[n]);
      } while (r < 0 && errno == EINTR);
    }
    if (r < 0) {
      pthread_mutex_lock(&dp->lock);
      dp->tun_write_errors += (double)group;
      pthread_mutex_unlock(&dp->lock);
    }
    n += (unsigned)group;
  }
}

/* One batch read from the socket: returns whether JS must be told at once. */
static int process_batch(dataplane *dp, dp_scratch *sc, unsigned got, int *activity) {
  unsigned jobs = 0;
  int urgent = 0;
  int64_t now = now_ns();
  pthread_mutex_lock(&dp->lock);
  for (unsigned k = 0; k < got; k++) {
    const uint8_t *p = sc->arena + sc->offsets[k];
    uint32_t len = sc->lengths[k];
    dp_keypair *kp = NULL;
    if (len >= DP_MIN_MESSAGE && len <= DP_ROOM && get_le32(p) == 4)
      kp = keypair_find(dp, get_le32(p + 4));
    if (kp == NULL) {
      to_ring(dp, sc, k);
      urgent = 1;
      continue;
    }
    if (now >= kp->expires_ns) {
      dp->drops[DP_DROP_KEY_EXPIRED]++;
      continue;
    }
    uint64_t counter = get_le64(p + 8);
    if (counter >= DP_REJECT_AFTER_MESSAGES) {
      dp->drops[DP_DROP_COUNTER_TOO_LARGE]++;
      continue;
    }
    sc->jobs[jobs] = (dp_job){k, kp->index, counter};
    memcpy(sc->keys + (size_t)jobs * DP_KEY_SIZE, kp->key, DP_KEY_SIZE);
    jobs++;
  }
  pthread_mutex_unlock(&dp->lock);
  if (jobs == 0) return urgent;

  for (unsigned j = 0; j < jobs; j++) {
    unsigned k = sc->jobs[j].slot;
    uint8_t *p = sc->arena + sc->offsets[k];
    uint32_t body = sc->lengths[k] - DP_HEADER - DP_TAG_SIZE;
    sc->authentic[j] = open_in_place(sc->evp, sc->keys + (size_t)j * DP_KEY_SIZE,
                                     sc->jobs[j].counter, p + DP_HEADER, body,
                                     p + DP_HEADER + body);
  }
  OPENSSL_cleanse(sc->keys, (size_t)jobs * DP_KEY_SIZE);

  unsigned writes = 0;
  pthread_mutex_lock(&dp->lock);
  for (unsigned j = 0; j < jobs; j++) {
    unsigned k = sc->jobs[j].slot;
    if (!sc->authentic[j]) {
      dp->drops[DP_DROP_DECRYPTION_FAILED]++;
      continue;
    }
    /* Looked up again: JS may have dropped the keypair while the batch was being opened. */
    dp_keypair *kp = keypair_find(dp, sc->jobs[j].index);
    if (kp == NULL) {
      dp->drops[DP_DROP_KEY_EXPIRED]++;
      continue;
    }
    if (!replay_accept(kp, sc->jobs[j].counter)) {
      dp->drops[DP_DROP_REPLAYED]++;
      continue;
    }
    dp->opened++;
    if (!kp->first_seen && dp->confirmed_count < DP_MAX_KEYPAIRS) {
      kp->first_seen = 1;
      dp->confirmed[dp->confirmed_count++] = kp->index;
      urgent = 1;
    }
    dp_peer *peer = &dp->peers[kp->peer];
    uint32_t len = sc->lengths[k];
    peer->authenticated++;
    peer->rx_bytes += len;
    const uint8_t *source = sc->endpoints + (size_t)k * EDGETUN_ENDPOINT_SIZE;
    /* Address and port (18 bytes) decide; before the TUN write, so the answer sees it. */
    if (!peer->has_source || memcmp(peer->source, source, 18) != 0) {
      __atomic_store_n(&dp->source_moved, 1, __ATOMIC_RELEASE);
      urgent = 1;
    }
    peer->has_source = 1;
    memcpy(peer->source, source, EDGETUN_ENDPOINT_SIZE);
    memcpy(peer->source_local, sc->locals + (size_t)k * EDGETUN_ENDPOINT_SIZE,
           EDGETUN_ENDPOINT_SIZE);
    /* Roaming, as the core does on every authenticated packet: answers go where it came from. */
    peer->send.has_endpoint = 1;
    memcpy(peer->send.endpoint, peer->source, EDGETUN_ENDPOINT_SIZE);
    memset(peer->send.local, 0, EDGETUN_ENDPOINT_SIZE); /* as the JS path: the route decides */
    mark_dirty(dp, kp->peer);
    *activity = 1;
    uint32_t padded = len - DP_HEADER - DP_TAG_SIZE;
    if (padded == 0) {
      peer->keepalives++;
      continue;
    }
    peer->data++;
    const uint8_t *inner = sc->arena + sc->offsets[k] + DP_HEADER;
    uint32_t inner_len = inner_length(inner, padded);
    if (inner_len == 0) {
      dp->drops[DP_DROP_BAD_INNER_PACKET]++;
      continue;
    }
    int family = inner[0] >> 4 == 4 ? 4 : 6;
    int64_t routed = route_lookup(dp, family, inner + (family == 4 ? 12 : 8));
    if (routed != (int64_t)kp->peer) {
      dp->drops[DP_DROP_SOURCE_NOT_ALLOWED]++;
      continue;
    }
    peer->rx_packets++;
    peer->rx_payload_bytes += inner_len;
    sc->tun_offsets[writes] = sc->offsets[k] + DP_HEADER;
    sc->tun_lengths[writes] = inner_len;
    writes++;
  }
  if (writes > 0) dp->batch_sizes[1][writes]++;
  pthread_mutex_unlock(&dp->lock);
  if (writes > 0) write_tun(dp, sc, writes);
  return urgent;
}

/* ---- the send direction ---- */

/* Seals buf[0, len) in place with the counter nonce; the tag goes to tag. */
static int seal_in_place(EVP_CIPHER_CTX *evp, const uint8_t *key, uint64_t counter, uint8_t *buf,
                         size_t len, uint8_t *tag) {
  uint8_t nonce[12] = {0};
  for (int b = 0; b < 8; b++) nonce[4 + b] = (uint8_t)(counter >> (8 * b));
  int outl = 0, finl = 0;
  if (EVP_CipherInit_ex(evp, NULL, NULL, key, nonce, 1) != 1) return 0;
  if (len > 0 && EVP_EncryptUpdate(evp, buf, &outl, buf, (int)len) != 1) return 0;
  if (EVP_EncryptFinal_ex(evp, buf + outl, &finl) != 1) return 0;
  OSSL_PARAM params[2];
  params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, DP_TAG_SIZE);
  params[1] = OSSL_PARAM_construct_end();
  return EVP_CIPHER_CTX_get_params(evp, params) == 1;
}

static void put_le32(uint8_t *p, uint32_t v) {
  for (int b = 0; b < 4; b++) p[b] = (uint8_t)(v >> (8 * b));
}

/* The padded plaintext length, as src/core/messages.ts paddedLength. */
static uint32_t padded_length(uint32_t length, unsigned mtu) {
  if (length > mtu) return length;
  uint32_t padded = (length + 15) & ~15u;
  return padded < mtu ? padded : mtu;
}

/* Reads up to DP_BATCH inner packets from the TUN device into the send arena (each at offset
 * DP_HEADER of its slot); returns how many, or -errno when the device failed. */
static int read_tun(dataplane *dp, dp_scratch *sc) {
  unsigned n = 0;
  while (n < DP_BATCH) {
    uint8_t *slot = sc->out_arena + (size_t)n * DP_ROOM + DP_HEADER;
    if (dp->tun_offload && sc->seg.mode != SEG_IDLE) {
      uint32_t len;
      int r = seg_next(&sc->seg, slot, DP_INNER_ROOM, &len);
      if (r > 0) sc->out_lengths[n++] = len;
      else if (r < 0) dp->tun_read_drops++;
      continue;
    }
    ssize_t r;
    if (dp->tun_offload) r = read(dp->tun_fd, sc->tun_scratch, DP_TUN_SCRATCH);
    else r = read(dp->tun_fd, slot, DP_INNER_ROOM);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (n > 0) break;
      return -errno;
    }
    if (r == 0) break;
    if (!dp->tun_offload) {
      sc->out_lengths[n++] = (uint32_t)r;
      continue;
    }
    if ((size_t)r >= DP_TUN_SCRATCH || seg_begin(&sc->seg, sc->tun_scratch, (size_t)r) != 0) {
      sc->seg.mode = SEG_IDLE;
      dp->tun_read_drops++;
    }
  }
  return (int)n;
}

/* An inner packet for the JS path, unchanged. */
static void tun_to_ring(dataplane *dp, dp_scratch *sc, unsigned k) {
  if (datagram_ring_push(&dp->out_ring, sc->out_arena + (size_t)k * DP_ROOM + DP_HEADER,
                         sc->out_lengths[k], sc->no_endpoint, sc->no_endpoint) < 0) {
    dp->drops[DP_DROP_SLOW_PATH_FULL]++;
    return;
  }
  dp->tun_to_js++;
}

/* One batch read from the TUN device: sealed and sent, or handed to JS. Returns whether JS
 * must be told at once. */
static int send_batch(dataplane *dp, dp_scratch *sc, unsigned got, int *activity) {
  unsigned jobs = 0;
  int urgent = 0;
  int64_t now = now_ns();
  pthread_mutex_lock(&dp->lock);
  unsigned mtu = dp->mtu;
  for (unsigned k = 0; k < got; k++) {
    uint8_t *inner = sc->out_arena + (size_t)k * DP_ROOM + DP_HEADER;
    uint32_t len = sc->out_lengths[k];
    unsigned version = len > 0 ? inner[0] >> 4 : 0;
    int64_t routed = -1;
    if (version == 4 && len >= 20) routed = route_lookup(dp, 4, inner + 16);
    else if (version == 6 && len >= 40) routed = route_lookup(dp, 6, inner + 24);
    dp_sending *s = routed >= 0 ? &dp->peers[routed].send : NULL;
    if (s != NULL && s->active && s->next == s->end && s->spare_end > s->spare_start) {
      s->next = s->spare_start;
      s->end = s->spare_end;
      s->spare_start = s->spare_end = 0;
      s->lease_asked = 0;
    }
    uint32_t padded = padded_length(len, mtu);
    if (s == NULL || !s->active || !s->has_endpoint || now >= s->expires_ns ||
        s->next >= s->end || s->next >= DP_REJECT_AFTER_MESSAGES ||
        DP_HEADER + padded + DP_TAG_SIZE > DP_ROOM) {
      /* The core decides: no route, no session (it stages and starts a handshake), no
       * counters left here, or a session too old. */
      tun_to_ring(dp, sc, k);
      urgent = 1;
      if (s != NULL && s->active && s->next >= s->end && !s->lease_asked) {
        s->lease_asked = 1;
        mark_dirty(dp, (uint32_t)routed);
      }
      continue;
    }
    if (s->spare_end == s->spare_start && !s->lease_asked) {
      /* The spare was taken into use: ask for the next one now, well before it is needed. */
      s->lease_asked = 1;
      urgent = 1;
    }
    if (now >= s->rekey_ns && !s->rekey_told) {
      s->rekey_told = 1;
      urgent = 1;
    }
    uint64_t counter = s->next++;
    uint8_t *p = inner - DP_HEADER;
    put_le32(p, 4);
    put_le32(p + 4, s->remote_index);
    put_le32(p + 8, (uint32_t)counter);
    put_le32(p + 12, (uint32_t)(counter >> 32));
    if (padded > len) memset(inner + len, 0, padded - len);
    sc->seal_offsets[jobs] = (uint32_t)(k * DP_ROOM);
    sc->seal_padded[jobs] = padded;
    sc->seal_lengths[jobs] = DP_HEADER + padded + DP_TAG_SIZE;
    sc->seal_counters[jobs] = counter;
    memcpy(sc->seal_keys + (size_t)jobs * DP_KEY_SIZE, s->key, DP_KEY_SIZE);
    memcpy(sc->seal_endpoints + (size_t)jobs * EDGETUN_ENDPOINT_SIZE, s->endpoint,
           EDGETUN_ENDPOINT_SIZE);
    memcpy(sc->seal_locals + (size_t)jobs * EDGETUN_ENDPOINT_SIZE, s->local,
           EDGETUN_ENDPOINT_SIZE);
    dp_peer *peer = &dp->peers[routed];
    peer->tx_packets++;
    peer->tx_payload_bytes += len;
    peer->tx_bytes += sc->seal_lengths[jobs];
    mark_dirty(dp, (uint32_t)routed);
    *activity = 1;
    jobs++;
  }
  pthread_mutex_unlock(&dp->lock);
  if (jobs == 0) return urgent;

  unsigned sealed = 0;
  for (unsigned j = 0; j < jobs; j++) {
    uint8_t *p = sc->out_arena + sc->seal_offsets[j];
    uint32_t padded = sc->seal_padded[j];
    if (!seal_in_place(sc->send_evp, sc->seal_keys + (size_t)j * DP_KEY_SIZE, sc->seal_counters[j],
                       p + DP_HEADER, padded, p + DP_HEADER + padded)) {
      sc->seal_lengths[j] = 0; /* cannot happen with a valid key; never sent unsealed */
      continue;
    }
    sealed++;
  }
  OPENSSL_cleanse(sc->seal_keys, (size_t)jobs * DP_KEY_SIZE);
  /* Unsealed slots (none in practice) are skipped by compacting. */
  if (sealed < jobs) {
    unsigned w = 0;
    for (unsigned j = 0; j < jobs; j++) {
      if (sc->seal_lengths[j] == 0) continue;
      sc->seal_offsets[w] = sc->seal_offsets[j];
      sc->seal_lengths[w] = sc->seal_lengths[j];
      memmove(sc->seal_endpoints + (size_t)w * EDGETUN_ENDPOINT_SIZE,
              sc->seal_endpoints + (size_t)j * EDGETUN_ENDPOINT_SIZE, EDGETUN_ENDPOINT_SIZE);
      memmove(sc->seal_locals + (size_t)w * EDGETUN_ENDPOINT_SIZE,
              sc->seal_locals + (size_t)j * EDGETUN_ENDPOINT_SIZE, EDGETUN_ENDPOINT_SIZE);
      w++;
    }
  }
  unsigned messages = 0;
  int sent = udp_io_send(sc->send_io, dp->udp_fd, dp->udp_family, sc->out_arena, sc->seal_offsets,
                         sc->seal_lengths, sc->seal_endpoints, sc->seal_locals, sealed,
                         &dp->udp_gso, &messages);
  pthread_mutex_lock(&dp->lock);
  dp->sealed += sealed;
  dp->send_messages += messages;
  dp->batch_sizes[2][sealed]++;
  if (sent < (int)sealed) dp->send_errors += sealed - (unsigned)(sent < 0 ? 0 : sent);
  pthread_mutex_unlock(&dp->lock);
  return urgent;
}

static void notify_js(dataplane *dp) {
  pthread_mutex_lock(&dp->lock);
  int wake = !dp->notified;
  dp->notified = 1;
  dp->last_notify_ns = now_ns();
  pthread_mutex_unlock(&dp->lock);
  if (wake) napi_call_threadsafe_function(dp->notify, NULL, napi_tsfn_nonblocking);
}

/*
 * Both threads' wait: for their file descriptor (fds[0]) or the stop eventfd (fds[1]); while
 * activity is pending, no longer than until its report is due. Returns 0 to go on (readable or
 * timed out), non-zero to stop: asked to, or `fatal` on the descriptor (dp->error then says
 * why, as `fatal_errno` or poll's errno).
 */
static int dp_wait(dataplane *dp, struct pollfd fds[2], int pending, short fatal,
                   int fatal_errno) {
  for (;;) {
    int timeout = -1;
    if (pending) {
      int64_t due = dp->last_notify_ns + DP_NOTIFY_INTERVAL_NS - now_ns();
      timeout = due <= 0 ? 0 : (int)(due / 1000000) + 1;
    }
    if (poll(fds, 2, timeout) >= 0) break;
    if (errno == EINTR) continue;
    dp->error = errno;
    return 1;
  }
  if (fds[1].revents != 0) return 1;
  if (fds[0].revents & fatal) {
    dp->error = fatal_errno;
    return 1;
  }
  return 0;
}

/* sched_setattr(2)'s argument, first version (48 bytes); the C library has no declaration of
 * it in the versions we build with. */
struct dp_sched_attr {
  uint32_t size, policy;
  uint64_t flags;
  int32_t nice;
  uint32_t priority;
  uint64_t runtime, deadline, period;
};

/*
 * Asks for a scheduler slice of `slice_ns` for the calling thread. Since Linux 6.12 the fair
 * scheduler (EEVDF) takes sched_attr's runtime of a SCHED_OTHER thread as the length of its
 * requests (clamped to 100 µs–100 ms, no privilege needed): a short one gives a waking thread
 * an early deadline, so it preempts what runs rather than queueing behind it for up to the
 * default slice (0.7–3 ms). Its share of the CPU is the weight's (nice), which stays as it is.
 * Measured (README, Latency): the slow round trips of idle pings were these threads runnable
 * but waiting for a CPU. Earlier kernels ignore the field; a thread of another policy (started
 * under chrt) is left alone. Returns whether the kernel took it.
 */
static int prefer_short_slice(uint64_t slice_ns) {
  if (slice_ns == 0 || sched_getscheduler(0) != SCHED_OTHER) return 0;
  errno = 0;
  int nice = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
  if (nice == -1 && errno != 0) return 0;
  struct dp_sched_attr attr = {.size = sizeof(attr), .policy = SCHED_OTHER, .nice = nice,
                               .runtime = slice_ns};
  return syscall(SYS_sched_setattr, 0, &attr, 0) == 0;
}

static void *dataplane_main(void *arg) {
  dataplane *dp = arg;
  prefer_short_slice(dp->slice_ns); /* before the name, which tells a test the slice is set */
  pthread_setname_np(pthread_self(), "edgetun-rx");
  dp_scratch *sc = dp->scratch;
  for (unsigned k = 0; k < DP_BATCH; k++) sc->offsets[k] = k * DP_ROOM;
  int pending = 0; /* activity not yet reported */
  struct pollfd fds[2] = {{.fd = dp->udp_fd, .events = POLLIN},
                          {.fd = dp->wake_fd, .events = POLLIN}};
  for (;;) {
    if (dp_wait(dp, fds, pending, POLLERR | POLLNVAL, EBADF) != 0) break;
    int urgent = 0;
    for (;;) {
      int got = udp_io_recv(sc->io, dp->udp_fd, sc->arena, sc->offsets, sc->lengths,
                            sc->endpoints, sc->locals, DP_BATCH, DP_ROOM);
      if (got < 0) {
        dp->error = -got;
        goto out;
      }
      if (got == 0) break;
      pthread_mutex_lock(&dp->lock);
      dp->batch_sizes[0][got]++;
      pthread_mutex_unlock(&dp->lock);
      urgent |= process_batch(dp, sc, (unsigned)got, &pending);
    }
    if (urgent || (pending && now_ns() - dp->last_notify_ns >= DP_NOTIFY_INTERVAL_NS)) {
      notify_js(dp);
      pending = 0;
    }
  }
out:
  if (dp->error != 0) notify_js(dp);
  return NULL;
}

/* The send direction: a thread of its own on the TUN device (and the wake-up), so that bulk
 * one way never waits behind the other's. */
static void *dataplane_send_main(void *arg) {
  dataplane *dp = arg;
  prefer_short_slice(dp->slice_ns); /* before the name, which tells a test the slice is set */
  pthread_setname_np(pthread_self(), "edgetun-tx");
  dp_scratch *sc = dp->scratch;
  int pending = 0;
  struct pollfd fds[2] = {{.fd = dp->tun_fd, .events = POLLIN},
                          {.fd = dp->wake_fd, .events = POLLIN}};
  for (;;) {
    if (dp_wait(dp, fds, pending, POLLERR | POLLNVAL | POLLHUP, EBADFD) != 0) break;
    for (;;) {
      int urgent = 0;
      int got = read_tun(dp, sc);
      if (got < 0) {
        dp->error = -got;
        goto out;
      }
      if (got > 0) {
        pthread_mutex_lock(&dp->lock);
        dp->batch_sizes[3][got]++;
        pthread_mutex_unlock(&dp->lock);
        urgent = send_batch(dp, sc, (unsigned)got, &pending);
      }
      if (urgent || (pending && now_ns() - dp->last_notify_ns >= DP_NOTIFY_INTERVAL_NS)) {
        notify_js(dp);
        pending = 0;
      }
      if (got < DP_BATCH) break;
    }
  }
out:
  if (dp->error != 0) notify_js(dp);
  return NULL;
}

/* ---- JS side ---- */

static void dataplane_halt(dataplane *dp) {
  if (!dp->running) return;
  dp->running = 0;
  if (dp->send_running) {
    /* The wake-up stays readable until drained below: both threads see it. */
    uint64_t one = 1;
    ssize_t w = write(dp->wake_fd, &one, sizeof(one));
    (void)w;
    pthread_join(dp->send_thread, NULL);
    dp->send_running = 0;
  }
  uint64_t one = 1;
  ssize_t w = write(dp->wake_fd, &one, sizeof(one));
  (void)w;
  pthread_join(dp->thread, NULL);
  uint64_t drained;
  ssize_t r = read(dp->wake_fd, &drained, sizeof(drained));
  (void)r;
}

static void dataplane_env_cleanup(void *arg) { dataplane_halt(arg); }

static void dataplane_finalize(napi_env env, void *data, void *hint) {
  dataplane *dp = data;
  (void)hint;
  if (!dp->closed) {
    dataplane_halt(dp);
    napi_remove_env_cleanup_hook(env, dataplane_env_cleanup, dp);
  }
  if (dp->wake_fd >= 0) close(dp->wake_fd);
  if (dp->scratch != NULL) {
    udp_io_free(dp->scratch->io);
    udp_io_free(dp->scratch->send_io);
    EVP_CIPHER_CTX_free(dp->scratch->send_evp);
    free(dp->scratch->tun_scratch);
    EVP_CIPHER_CTX_free(dp->scratch->evp);
    free(dp->scratch);
  }
  if (dp->keypairs != NULL) {
    for (unsigned s = 0; s < DP_KEYPAIR_SLOTS; s++) {
      if (dp->keypairs[s] == NULL) continue;
      OPENSSL_cleanse(dp->keypairs[s]->key, DP_KEY_SIZE);
      free(dp->keypairs[s]);
    }
    free(dp->keypairs);
  }
  for (uint32_t i = 0; i < dp->peer_capacity; i++)
    OPENSSL_cleanse(dp->peers[i].send.key, DP_KEY_SIZE);
  free(dp->peers);
  free(dp->dirty);
  free(dp->confirmed);
  free(dp->routes);
  pthread_mutex_destroy(&dp->lock);
  free(dp);
}

static dataplane *dataplane_arg(napi_env env, napi_value value) {
  dataplane *dp = NULL;
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_external ||
      napi_get_value_external(env, value, (void **)&dp) != napi_ok || dp == NULL) {
    throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "dataplane must be a data-plane handle");
    return NULL;
  }
  if (dp->closed) {
    throw_kind(env, ERR_PLAIN, "ERR_DATAPLANE_CLOSED", "the data plane is closed");
    return NULL;
  }
  return dp;
}

/* dpCreate(tunFd, offload, gro, onEvent) -> handle. Tables are empty and no thread runs
 * until dpAttach gives it a socket. onEvent() runs on the JS thread when there is something
 * to collect or take. */
static napi_value js_dp_create(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int tun_fd, offload, gro;
  if (arg_count(env, info, 4, argv) || arg_fd(env, argv[0], &tun_fd) ||
      arg_bool(env, argv[1], "offload", &offload) || arg_bool(env, argv[2], "gro", &gro))
    return NULL;
  if (require_fd(env, tun_fd, FD_KIND_TUN) == NULL) return NULL;
  dataplane *dp = calloc(1, sizeof(*dp));
  if (dp == NULL) return throw_errno(env, ENOMEM, "cannot create the data plane");
  dp->ring = DATAGRAM_RING_OVER(dp, DP_ROOM, DP_RING);
  dp->out_ring = (datagram_ring){dp->out_ring_data,      dp->out_ring_lengths,
                                 dp->out_ring_endpoints, dp->out_ring_locals,
                                 DP_INNER_ROOM,          DP_RING,
                                 0,                      0};
  dp->mtu = 1420;
  dp->env = env;
  dp->tun_fd = tun_fd;
  dp->tun_offload = offload;
  /* UDP runs too: a kernel before 6.2 refuses the first, and then gets TCP runs only. */
  dp->tun_gro = gro ? GRO_TCP | GRO_UDP : 0;
  dp->udp_fd = -1;
  dp->wake_fd = -1;
  pthread_mutex_init(&dp->lock, NULL);
  napi_value handle;
  if (napi_create_external(env, dp, dataplane_finalize, NULL, &handle) != napi_ok) {
    pthread_mutex_destroy(&dp->lock);
    free(dp);
    return NULL;
  }
  napi_add_env_cleanup_hook(env, dataplane_env_cleanup, dp);
  dp->scratch = calloc(1, sizeof(dp_scratch));
  dp->keypairs = calloc(DP_KEYPAIR_SLOTS, sizeof(dp_keypair *));
  dp->confirmed = calloc(DP_MAX_KEYPAIRS, sizeof(uint32_t));
  if (dp->scratch == NULL || dp->keypairs == NULL || dp->confirmed == NULL ||
      (dp->scratch->io = udp_io_new()) == NULL ||
      (dp->scratch->send_io = udp_io_new()) == NULL ||
      (dp->scratch->send_evp = EVP_CIPHER_CTX_new()) == NULL ||
      EVP_CipherInit_ex(dp->scratch->send_evp, EVP_chacha20_poly1305(), NULL, NULL, NULL, 0) !=
          1 ||
      (offload && (dp->scratch->tun_scratch = malloc(DP_TUN_SCRATCH)) == NULL) ||
      (dp->scratch->evp = EVP_CIPHER_CTX_new()) == NULL ||
      EVP_CipherInit_ex(dp->scratch->evp, EVP_chacha20_poly1305(), NULL, NULL, NULL, 0) != 1)
    return throw_errno(env, ENOMEM, "cannot create the data plane");
  dp->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (dp->wake_fd < 0) {
    int e = errno;
    return throw_errno(env, e, "cannot create the data plane: %s", strerror(e));
  }
  napi_value name;
  napi_create_string_utf8(env, "edgetun data plane", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[3], NULL, name, 0, 1, NULL, NULL, dp,
                                      call_js_without_arguments, &dp->notify) != napi_ok)
    return NULL;
  napi_unref_threadsafe_function(env, dp->notify);
  return handle;
}

/* dpAttach(handle, udpFd, readTun, sliceUs): (re)starts the thread on the data socket `udpFd`,
 * whose own readiness polling the caller has turned off; with readTun it reads the TUN device
 * too (the send direction; the caller no longer reads it). The threads ask for a scheduler
 * slice of sliceUs (prefer_short_slice; 0 keeps the kernel's). The tables stay as they are. */
static napi_value js_dp_attach(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int fd, read_tun_too;
  uint64_t slice_us;
  if (arg_count(env, info, 4, argv)) return NULL;
  dataplane *dp = dataplane_arg(env, argv[0]);
  if (dp == NULL || arg_fd(env, argv[1], &fd) ||
      arg_bool(env, argv[2], "readTun", &read_tun_too) ||
      arg_uint(env, argv[3], "sliceUs", 100000, &slice_us))
    return NULL;
  owned_fd *socket_entry = require_fd(env, fd, FD_KIND_UDP);
  if (socket_entry == NULL) return NULL;
  int family = 0;
  socklen_t family_len = sizeof(family);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &family_len) != 0) {
    int e = errno;
    return throw_errno(env, e, "cannot read the data socket's family: %s", strerror(e));
  }
  dataplane_halt(dp);
  dp->udp_fd = fd;
  dp->udp_family = family;
  dp->udp_gso = socket_entry->gso;
  dp->sending = read_tun_too;
  dp->slice_ns = slice_us * 1000;
  dp->error = 0;
  int e = pthread_create(&dp->thread, NULL, dataplane_main, dp);
  if (e != 0) return throw_errno(env, e, "cannot start the data plane: %s", strerror(e));
  dp->running = 1;
  if (dp->sending) {
    e = pthread_create(&dp->send_thread, NULL, dataplane_send_main, dp);
    if (e != 0) {
      dataplane_halt(dp);
      return throw_errno(env, e, "cannot start the data plane: %s", strerror(e));
    }
    dp->send_running = 1;
  }
  return make_undefined(env);
}

static int ensure_peer(dataplane *dp, uint32_t peer) {
  if (peer < dp->peer_capacity) return 0;
  uint32_t capacity = dp->peer_capacity == 0 ? 64 : dp->peer_capacity;
  while (capacity <= peer) capacity *= 2;
  dp_peer *peers = realloc(dp->peers, capacity * sizeof(*peers));
  if (peers == NULL) return -1;
  memset(peers + dp->peer_capacity, 0, (capacity - dp->peer_capacity) * sizeof(*peers));
  uint32_t *dirty = realloc(dp->dirty, capacity * sizeof(*dirty));
  if (dirty == NULL) {
    dp->peers = peers;
    return -1;
  }
  dp->peers = peers;
  dp->dirty = dirty;
  dp->peer_capacity = capacity;
  return 0;
}

/* dpAddKeypair(handle, index, peer, receiveKey, lifetimeMs) -> installed: from now on data
 * for receiver index `index` is opened here, until dpRemoveKeypair or the lifetime ends.
 * False when the table is full (the JS path then keeps opening it). */
static napi_value js_dp_add_keypair(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  uint64_t index, peer, lifetime;
  uint8_t *key;
  size_t key_len;
  if (arg_count(env, info, 5, argv)) return NULL;
  dataplane *dp = dataplane_arg(env, argv[0]);
  if (dp == NULL || arg_uint(env, argv[1], "index", UINT32_MAX, &index) ||
      arg_uint(env, argv[2], "peer", 1u << 24, &peer) ||
      arg_bytes(env, argv[3], "receiveKey", &key, &key_len) ||
      arg_uint(env, argv[4], "lifetimeMs", 1ULL << 40, &lifetime))
    return NULL;
  if (key_len != DP_KEY_SIZE)
    return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "receiveKey must be 32 bytes");
  napi_value result;
  pthread_mutex_lock(&dp->lock);
  int ok = 0;
  if (ensure_peer(dp, (uint32_t)peer) == 0 && keypair_find(dp, (uint32_t)index) == NULL &&
      dp->keypair_count < DP_MAX_KEYPAIRS) {
    dp_keypair *k = calloc(1, sizeof(*k));
    if (k != NULL) {
      k->index = (uint32_t)index;
      k->peer = (uint32_t)peer;
      k->expires_ns = now_ns() + (int64_t)lifetime * 1000000LL;
      memcpy(k->key, key, DP_KEY_SIZE);
      unsigned s = index_slot(k->index);
      while (dp->keypairs[s] != NULL) s = (s + 1) & (DP_KEYPAIR_SLOTS - 1);
      dp->keypairs[s] = k;
      dp->keypair_count++;
      ok = 1;
    }
  }
  pthread_mutex_unlock(&dp->lock);
  napi_get_boolean(env, ok, &result);
  return result;
}

/* dpRemoveKeypair(handle, index): data for `index` is no longer opened here (its key is wiped);
 * an index not held is ignored. */
static napi_value js_dp_remove_keypair(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint64_t index;
  if (arg_count(env, info, 2, argv)) return NULL;
  dataplane *dp = dataplane_arg(env, argv[0]);
  if (dp == NULL || arg_uint(env, argv[1], "index", UINT32_MAX, &index)) return NULL;
  pthread_mutex_lock(&dp->lock);
  keypair_remove(dp, (uint32_t)index);
  pthread_mutex_unlock(&dp->lock);
  return make_undefined(env);
}

/* dpSetMtu(handle, mtu): inner packets sealed here are padded as the core pads them. */
static napi_value js_dp_set_mtu(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint64_t mtu;
  if (arg_count(env, info, 2, argv)) return NULL;
  dataplane *dp = dataplane_arg(env, argv[0]);
  if (dp == NULL || arg_uint(env, argv[1], "mtu", 65535, &mtu)) return NULL;
  if (mtu < 576) return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "mtu must be >= 576");
  pthread_mutex_lock(&dp->lock);
  dp->mtu = (unsigned)mtu;
  pthread_mutex_unlock(&dp->lock);
  return make_undefined(env);
}

/* Reads a 24-byte endpoint record argument, or null (0 returned, *out NULL). */
static int arg_record_opt(napi_env env, napi_value v, const char *name, uint8_t **out) {
  size_t len = 0;
  if (arg_bytes_opt(env, v, name, out, &len)) return -1;
  if (*out != NULL && len < EDGETUN_ENDPOINT_SIZE) {
    throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "%s must be %d bytes", name,
               EDGETUN_ENDPOINT_SIZE);
    return -1;
  }
  return 0;
}

/* dpSetSending(handle, peer, sendKey, remoteIndex, leaseStart, leaseCount, lifetimeMs, rekeyMs,
 * endpoint, local): the peer's packets are sealed here from now on with this keypair, using
 * counters [leaseStart, leaseStart + leaseCount) that the core has set aside (see the header
 * comment), until lifetimeMs passes; rekeyMs (-1: never) is when the core must hear of a send
 * at once. sendKey null stops it (the peer's packets go to JS). endpoint null: none known. */
static napi_value js_dp_set_sending(napi_env env, napi_callback_info info) {
  napi_value argv[10];
  uint64_t peer, remote, start, count, lifetime;
  int64_t rekey;
  uint8_t *key = NULL, *endpoint = NULL, *local = NULL;
  size_t key_len = 0;
  if (arg_count(env, info, 10, argv)) return NULL;
  dataplane *dp = dataplane_arg(env, argv[0]);
  if (dp == NULL || arg_uint(env, argv[1], "peer", 1u << 24, &peer) ||
      arg_bytes_opt(env, argv[2], "sendKey", &key, &key_len) ||
      arg_uint(env, argv[3], "remoteIndex", UINT32_MAX, &remote) ||
      arg_uint(env, argv[4], "leaseStart", DP_REJECT_AFTER_MESSAGES, &start) ||
      arg_uint(env, argv[5], "leaseCount", 1u << 20, &count) ||
      arg_uint(env, argv[6], "lifetimeMs", 1ULL << 40, &lifetime) ||
      napi_get_value_int64(env, argv[7], &rekey) != napi_ok ||
      arg_record_opt(env, argv[8], "endpoint", &endpoint) ||
      arg_record_opt(env, argv[9], "local", &local))
    return NULL;
  if (key != NULL && key_len != DP_KEY_SIZE)
    return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "sendKey must be 32 bytes");
  int64_t now = now_ns();
  pthread_mutex_lock(&dp->lock);
  if (ensure_peer(dp, (uint32_t)peer) != 0) {
    pthread_mutex_unlock(&dp->lock);
    return throw_errno(env, ENOMEM, "cannot add a peer to the data plane");
  }
  dp_sending *s = &dp->peers[peer].send;
  OPENSSL_cleanse(s->key, DP_KEY_SIZE);
  s->active = key != NULL;
  s->remote_index = (uint32_t)remote;
  s->next = start;
  s->end = key != NULL ? start + count : start;
  s->spare_start = s->spare_end = 0;
  s->lease_asked = 0;
  s->expires_ns = now + (int64_t)lifetime * 1000000LL;
  s->rekey_ns = rekey < 0 ? INT64_MAX : now + rekey * 1000000LL;
  s->rekey_told = 0;
  if (key != NULL) memcpy(s->key, key, DP_KEY_SIZE);
  s->has_endpoint = endpoint != NULL;
  if (endpoint != NULL) memcpy(s->endpoint, endpoint, EDGETUN_ENDPOINT_SIZE);
  if (local != NULL) memcpy(s->local, local, EDGETUN_ENDPOINT_SIZE);
  else memset(s->local, 0, EDGETUN_ENDPOINT_SIZE);
  pthread_mutex_unlock(&dp->lock);
  return make_undefined(env);
}

/* dpGrantLease(handle, peer, remoteIndex, start, count) -> taken: the spare lease for the
 * keypair of remoteIndex; false (the counters are simply never used) when the peer now sends
 * with another keypair or already has a spare. */
static napi_value js_dp_grant_lease(napi_env env, napi_callback_info info) {
  napi_value argv[5], result;
  uint64_t peer, remote, start, count;
  if (arg_count(env, info, 5, argv)) return NULL;
  dataplane *dp = dataplane_arg(env, argv[0]);
  if (dp == NULL || arg_uint(env, argv[1], "peer", 1u << 24, &peer) ||
      arg_uint(env, argv[2], "remoteIndex", UINT32_MAX, &remote) ||
      arg_uint(env, argv[3], "start", DP_REJECT_AFTER_MESSAGES, &start) ||
      arg_uint(env, argv[4], "count", 1u << 20, &count))
    return NULL;
  int taken = 0;
  pthread_mutex_lock(&dp->lock);
  if (peer < dp->peer_capacity) {
    dp_sending *s = &dp->peers[peer].send;
    if (s->active && s->remote_index == (uint32_t)remote && s->spare_end == s->spare_start &&
        start >= s->end) {
      s->spare_start = start;
      s->spare_end = start + count;
      taken = 1;
    }
    s->lease_asked = 0;
  }
  pthread_mutex_unlock(&dp->lock);
  napi_get_boolean(env, taken, &result);
  return result;
}

/* dpTakeTunnel(handle, arena, offsets, lengths, endpoints, locals, count, room) -> n: as
 * dpTake, for the inner packets the send direction hands to the JS path (room: 9040). */
static napi_value js_dp_take_tunnel(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  if (arg_count(env, info, 8, argv)) return NULL;
  dataplane *dp = dataplane_arg(env, argv[0]);
  datagram_take take;
  if (dp == NULL || datagram_take_args(env, argv, DP_INNER_ROOM, &take)) return NULL;
  pthread_mutex_lock(&dp->lock);
  uint64_t n = datagram_ring_take(&dp->out_ring, &take);
  pthread_mutex_unlock(&dp->lock);
  return make_int(env, (int64_t)n);
}

/* Route change records of dpSetRoutes: family (4 or 6), prefix length, two zero bytes, the
 * peer (int32 little endian, -1 removes the prefix), then 16 address bytes. */
#define DP_ROUTE_RECORD 24

/* dpSetRoutes(handle, records, count): applies `count` prefix changes in order, under one
 * lock, so the thread never sees half of a change (a replaced set of allowed IPs). */
static napi_value js_dp_set_routes(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint8_t *records;
  size_t records_len;
  uint64_t count;
  if (arg_count(env, info, 3, argv)) return NULL;
  dataplane *dp = dataplane_arg(env, argv[0]);
  if (dp == NULL || arg_bytes(env, argv[1], "records", &records, &records_len) ||
      arg_uint(env, argv[2], "count", UINT32_MAX, &count))
    return NULL;
  if (check_range(env, "records", records_len, DP_ROUTE_RECORD, 0, count)) return NULL;
  for (uint64_t i = 0; i < count; i++) {
    const uint8_t *r = records + i * DP_ROUTE_RECORD;
    int32_t peer = (int32_t)get_le32(r + 4);
    if ((r[0] != 4 && r[0] != 6) || r[1] > (r[0] == 4 ? 32 : 128) || peer < -1 ||
        peer > (1 << 24))
      return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "route record %llu is malformed",
                        (unsigned long long)i);
  }
  int failed = 0;
  pthread_mutex_lock(&dp->lock);
  for (uint64_t i = 0; i < count && !failed; i++) {
    const uint8_t *r = records + i * DP_ROUTE_RECORD;
    int32_t peer = (int32_t)get_le32(r + 4);
    uint8_t masked[16];
    mask_address(masked, r + 8, r[0] == 4 ? 4 : 16, r[1]);
    if (peer < 0) route_delete(dp, r[0], r[1], masked);
    else failed = ensure_peer(dp, (uint32_t)peer) != 0 ||
                  route_set(dp, r[0], r[1], masked, (uint32_t)peer) != 0;
  }
  pthread_mutex_unlock(&dp->lock);
  if (failed) return throw_errno(env, ENOMEM, "cannot add an allowed IP to the data plane");
  return make_undefined(env);
}

/* Numbers per peer in dpCollect's peerOut. */
#define DP_PEER_FIELDS 11

/* dpCollect(handle, peerOut, sourcesOut, confirmedOut) -> { peers, confirmed }: moves the
 * per-peer deltas since the last call into peerOut (Float64Array, DP_PEER_FIELDS per peer: id,
 * authenticated, data, rxBytes, rxPackets, rxPayloadBytes, keepalives, txPackets, txBytes,
 * txPayloadBytes, leaseWanted (1: grant a spare lease); a peer with a source
 * has its 24-byte source record in sourcesOut, else zeros) and the receiver indices whose
 * first packet arrived into confirmedOut (Uint32Array). As many as fit; the rest next call. */
static napi_value js_dp_collect(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (arg_count(env, info, 4, argv)) return NULL;
  dataplane *dp = dataplane_arg(env, argv[0]);
  void *peer_data, *source_data, *confirmed_data;
  size_t peer_len, source_len, confirmed_len;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  if (dp == NULL) return NULL;
  if (napi_get_typedarray_info(env, argv[1], &type, &peer_len, &peer_data, &ab, &off) !=
          napi_ok ||
      type != napi_float64_array)
    return throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "peerOut must be a Float64Array");
  uint8_t *sources;
  if (arg_bytes(env, argv[2], "sourcesOut", &sources, &source_len)) return NULL;
  source_data = sources;
  if (napi_get_typedarray_info(env, argv[3], &type, &confirmed_len, &confirmed_data, &ab,
                               &off) != napi_ok ||
      type != napi_uint32_array)
    return throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "confirmedOut must be a Uint32Array");
  double *out = peer_data;
  size_t room = peer_len / DP_PEER_FIELDS;
  if (source_len / EDGETUN_ENDPOINT_SIZE < room) room = source_len / EDGETUN_ENDPOINT_SIZE;
  uint32_t *confirmed = confirmed_data;
  pthread_mutex_lock(&dp->lock);
  /* Whatever arrives from now on is told anew; what waits now is moved here or, if more than
   * fits, by the caller's next calls. */
  dp->notified = 0;
  __atomic_store_n(&dp->source_moved, 0, __ATOMIC_RELEASE);
  size_t peers = 0;
  while (peers < room && dp->dirty_count > 0) {
    uint32_t id = dp->dirty[--dp->dirty_count];
    dp_peer *p = &dp->peers[id];
    double *row = out + peers * DP_PEER_FIELDS;
    row[0] = id;
    row[1] = p->authenticated;
    row[2] = p->data;
    row[3] = p->rx_bytes;
    row[4] = p->rx_packets;
    row[5] = p->rx_payload_bytes;
    row[6] = p->keepalives;
    row[7] = p->tx_packets;
    row[8] = p->tx_bytes;
    row[9] = p->tx_payload_bytes;
    row[10] = p->send.active && p->send.lease_asked && p->send.spare_end == p->send.spare_start;
    p->tx_packets = p->tx_bytes = p->tx_payload_bytes = 0;
    uint8_t *src = (uint8_t *)source_data + peers * EDGETUN_ENDPOINT_SIZE;
    if (p->has_source) memcpy(src, p->source, EDGETUN_ENDPOINT_SIZE);
    else memset(src, 0, EDGETUN_ENDPOINT_SIZE);
    p->authenticated = p->data = p->rx_bytes = p->rx_packets = p->rx_payload_bytes =
        p->keepalives = 0;
    p->dirty = 0;
    peers++;
  }
  size_t confirms = 0;
  while (confirms < confirmed_len && dp->confirmed_count > 0)
    confirmed[confirms++] = dp->confirmed[--dp->confirmed_count];
  pthread_mutex_unlock(&dp->lock);
  napi_value result;
  if (napi_create_object(env, &result) != napi_ok ||
      set_prop_int(env, result, "peers", (int64_t)peers) ||
      set_prop_int(env, result, "confirmed", (int64_t)confirms))
    return NULL;
  return result;
}

/* dpBatchSizes(handle, out): moves the batch counts by size since the last call into `out`
 * (Float64Array of 4 x (DP_BATCH + 1): receives, TUN writes, sends, TUN reads; index =
 * packets). */
static napi_value js_dp_batch_sizes(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (arg_count(env, info, 2, argv)) return NULL;
  dataplane *dp = dataplane_arg(env, argv[0]);
  void *data;
  size_t len;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  if (dp == NULL) return NULL;
  if (napi_get_typedarray_info(env, argv[1], &type, &len, &data, &ab, &off) != napi_ok ||
      type != napi_float64_array || len < 4 * (DP_BATCH + 1))
    return throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE",
                      "out must be a Float64Array of %d", 4 * (DP_BATCH + 1));
  pthread_mutex_lock(&dp->lock);
  memcpy(data, dp->batch_sizes, sizeof(dp->batch_sizes));
  memset(dp->batch_sizes, 0, sizeof(dp->batch_sizes));
  pthread_mutex_unlock(&dp->lock);
  return make_undefined(env);
}

/* dpSourceMoved(handle) -> whether a peer's packets came from a new source since the last
 * dpCollect: cheap enough to ask before every send batch. */
static napi_value js_dp_source_moved(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  size_t argc = 1;
  dataplane *dp = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_external(env, argv[0], (void **)&dp) != napi_ok || dp == NULL)
    return throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "dataplane must be a handle");
  napi_get_boolean(env, __atomic_load_n(&dp->source_moved, __ATOMIC_ACQUIRE), &result);
  return result;
}

/* dpTake(handle, arena, offsets, lengths, endpoints, locals, count, room) -> n: moves up to
 * `count` datagrams for the JS path into slots [0, n). dpCollect, not this, re-arms the
 * notification: the caller takes until fewer than `count` come. */
static napi_value js_dp_take(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  if (arg_count(env, info, 8, argv)) return NULL;
  dataplane *dp = dataplane_arg(env, argv[0]);
  datagram_take take;
  if (dp == NULL || datagram_take_args(env, argv, DP_ROOM, &take)) return NULL;
  pthread_mutex_lock(&dp->lock);
  uint64_t n = datagram_ring_take(&dp->ring, &take);
  pthread_mutex_unlock(&dp->lock);
  return make_int(env, (int64_t)n);
}

/* dpStats(handle) -> totals since creation: opened, toJs, tunWriteErrors, waiting, keypairs,
 * routes, error, sealed, tunToJs, sendErrors, tunReadDrops, sendMessages, and drops
 * { reason: count }. */
static napi_value js_dp_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (arg_count(env, info, 1, argv)) return NULL;
  dataplane *dp = NULL;
  if (napi_get_value_external(env, argv[0], (void **)&dp) != napi_ok || dp == NULL)
    return throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "dataplane must be a handle");
  pthread_mutex_lock(&dp->lock);
  double v[] = {dp->opened,      dp->to_js,       dp->tun_write_errors, (double)dp->ring.size,
                (double)dp->keypair_count, (double)dp->route_count, (double)dp->error,
                dp->sealed,      dp->tun_to_js,   dp->send_errors,      dp->tun_read_drops,
                dp->send_messages};
  double drops[DP_DROP_COUNT];
  memcpy(drops, dp->drops, sizeof(drops));
  pthread_mutex_unlock(&dp->lock);
  static const char *names[] = {"opened", "toJs",     "tunWriteErrors", "waiting",
                                "keypairs", "routes", "error",          "sealed",
                                "tunToJs", "sendErrors", "tunReadDrops", "sendMessages"};
  napi_value out, value, drop_obj;
  if (napi_create_object(env, &out) != napi_ok || napi_create_object(env, &drop_obj) != napi_ok)
    return NULL;
  for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
    if (napi_create_double(env, v[i], &value) != napi_ok ||
        napi_set_named_property(env, out, names[i], value) != napi_ok)
      return NULL;
  }
  for (int i = 0; i < DP_DROP_COUNT; i++) {
    if (napi_create_double(env, drops[i], &value) != napi_ok ||
        napi_set_named_property(env, drop_obj, dp_drop_names[i], value) != napi_ok)
      return NULL;
  }
  if (napi_set_named_property(env, out, "drops", drop_obj) != napi_ok) return NULL;
  return out;
}

/* dpClose(handle): stops the thread (waits for it) and wipes the keys; the descriptors stay
 * the caller's. Calling it again does nothing. */
static napi_value js_dp_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (arg_count(env, info, 1, argv)) return NULL;
  dataplane *dp = NULL;
  if (napi_get_value_external(env, argv[0], (void **)&dp) != napi_ok || dp == NULL)
    return throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "dataplane must be a handle");
  if (dp->closed) return make_undefined(env);
  dataplane_halt(dp);
  dp->closed = 1;
  napi_remove_env_cleanup_hook(env, dataplane_env_cleanup, dp);
  napi_release_threadsafe_function(dp->notify, napi_tsfn_release);
  pthread_mutex_lock(&dp->lock);
  for (unsigned s = 0; s < DP_KEYPAIR_SLOTS; s++) {
    if (dp->keypairs[s] == NULL) continue;
    OPENSSL_cleanse(dp->keypairs[s]->key, DP_KEY_SIZE);
    free(dp->keypairs[s]);
    dp->keypairs[s] = NULL;
  }
  dp->keypair_count = 0;
  for (uint32_t i = 0; i < dp->peer_capacity; i++) {
    OPENSSL_cleanse(dp->peers[i].send.key, DP_KEY_SIZE);
    dp->peers[i].send.active = 0;
  }
  pthread_mutex_unlock(&dp->lock);
  return make_undefined(env);
}

napi_status init_dataplane(napi_env env, napi_value exports) {
  EXPORT_FN(env, exports, "dpCreate", js_dp_create);
  EXPORT_FN(env, exports, "dpAttach", js_dp_attach);
  EXPORT_FN(env, exports, "dpAddKeypair", js_dp_add_keypair);
  EXPORT_FN(env, exports, "dpRemoveKeypair", js_dp_remove_keypair);
  EXPORT_FN(env, exports, "dpSetRoutes", js_dp_set_routes);
  EXPORT_FN(env, exports, "dpCollect", js_dp_collect);
  EXPORT_FN(env, exports, "dpTake", js_dp_take);
  EXPORT_FN(env, exports, "dpTakeTunnel", js_dp_take_tunnel);
  EXPORT_FN(env, exports, "dpSetMtu", js_dp_set_mtu);
  EXPORT_FN(env, exports, "dpSetSending", js_dp_set_sending);
  EXPORT_FN(env, exports, "dpGrantLease", js_dp_grant_lease);
  EXPORT_FN(env, exports, "dpSourceMoved", js_dp_source_moved);
  EXPORT_FN(env, exports, "dpBatchSizes", js_dp_batch_sizes);
  EXPORT_FN(env, exports, "dpStats", js_dp_stats);
  EXPORT_FN(env, exports, "dpClose", js_dp_close);
  return napi_ok;
}
