/*
 * UDP socket with recvmmsg/sendmmsg batches. Peer and local addresses travel
 * as fixed 24-byte endpoint records (common.h) so that no string is built per
 * packet; the local address comes from IP(V6)_PKTINFO and, when given back on
 * send, pins the source address of the reply (a multi-homed hub must answer
 * from the address the peer wrote to).
 */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/filter.h>
#include <linux/sock_diag.h>
#include <unistd.h>

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif
#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

typedef union {
  struct sockaddr sa;
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
} sockaddr_any;

/* Big enough for either pktinfo flavour plus a UDP_SEGMENT header. */
#define CTRL_SIZE 96

/* recvmmsg/sendmmsg scratch: the JS calls share one per addon (addon_state), and each thread
 * of the addon's own has its own (udp_io_new). */
struct udp_io {
  struct mmsghdr msgs[EDGETUN_MAX_BATCH];
  struct iovec iov[EDGETUN_MAX_BATCH];
  sockaddr_any names[EDGETUN_MAX_BATCH];
  union {
    char buf[CTRL_SIZE];
    struct cmsghdr align;
  } ctrl[EDGETUN_MAX_BATCH];
  uint32_t index[EDGETUN_MAX_BATCH + 1]; /* message -> first packet index */
};

static udp_io *scratch(napi_env env, addon_state *st) {
  if (st->mmsg_scratch == NULL) st->mmsg_scratch = malloc(sizeof(udp_io));
  if (st->mmsg_scratch == NULL) throw_errno(env, ENOMEM, "cannot allocate batch buffers");
  return st->mmsg_scratch;
}

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void put_le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void record_from_sockaddr(uint8_t *rec, const sockaddr_any *a) {
  memset(rec, 0, EDGETUN_ENDPOINT_SIZE);
  if (a->sa.sa_family == AF_INET) {
    memcpy(rec, v4_mapped_prefix, 12);
    memcpy(rec + 12, &a->in4.sin_addr, 4);
    memcpy(rec + 16, &a->in4.sin_port, 2);
  } else if (a->sa.sa_family == AF_INET6) {
    memcpy(rec, &a->in6.sin6_addr, 16);
    memcpy(rec + 16, &a->in6.sin6_port, 2);
    put_le32(rec + 20, a->in6.sin6_scope_id);
  }
}

static int record_is_v4(const uint8_t *rec) { return memcmp(rec, v4_mapped_prefix, 12) == 0; }

static int record_addr_is_zero(const uint8_t *rec) {
  static const uint8_t zero[16];
  return memcmp(rec, zero, 16) == 0;
}

/* Fills a destination sockaddr for a socket of `family`; 0 or an errno. */
static int sockaddr_from_record(const uint8_t *rec, int family, sockaddr_any *a,
                                socklen_t *len) {
  memset(a, 0, sizeof(*a));
  if (family == AF_INET) {
    if (!record_is_v4(rec)) return EAFNOSUPPORT;
    a->in4.sin_family = AF_INET;
    memcpy(&a->in4.sin_addr, rec + 12, 4);
    memcpy(&a->in4.sin_port, rec + 16, 2);
    *len = sizeof(a->in4);
  } else {
    a->in6.sin6_family = AF_INET6;
    memcpy(&a->in6.sin6_addr, rec, 16);
    memcpy(&a->in6.sin6_port, rec + 16, 2);
    a->in6.sin6_scope_id = record_is_v4(rec) ? 0 : get_le32(rec + 20);
    *len = sizeof(a->in6);
  }
  return 0;
}

/* Source-address pinning for one outgoing message; returns the control
 * length used (0 when the local record is unspecified). */
static size_t put_source(char *ctrl, const uint8_t *local, int family) {
  if (local == NULL || record_addr_is_zero(local)) return 0;
  struct msghdr m;
  memset(&m, 0, sizeof(m));
  m.msg_control = ctrl;
  if (family == AF_INET) {
    if (!record_is_v4(local)) return 0;
    m.msg_controllen = CMSG_SPACE(sizeof(struct in_pktinfo));
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
    struct in_pktinfo pi;
    memset(&pi, 0, sizeof(pi));
    memcpy(&pi.ipi_spec_dst, local + 12, 4);
    memcpy(CMSG_DATA(c), &pi, sizeof(pi));
  } else {
    m.msg_controllen = CMSG_SPACE(sizeof(struct in6_pktinfo));
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(struct in6_pktinfo));
    struct in6_pktinfo pi;
    memset(&pi, 0, sizeof(pi));
    memcpy(&pi.ipi6_addr, local, 16);
    /* An interface index only makes sense for a native IPv6 source; for a
     * v4-mapped source the v4 routing decides the interface. */
    pi.ipi6_ifindex = record_is_v4(local) ? 0 : get_le32(local + 20);
    memcpy(CMSG_DATA(c), &pi, sizeof(pi));
  }
  return m.msg_controllen;
}

static void local_from_control(uint8_t *rec, struct msghdr *m) {
  memset(rec, 0, EDGETUN_ENDPOINT_SIZE);
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      struct in_pktinfo pi;
      memcpy(&pi, CMSG_DATA(c), sizeof(pi));
      memcpy(rec, v4_mapped_prefix, 12);
      memcpy(rec + 12, &pi.ipi_spec_dst, 4);
      put_le32(rec + 20, (uint32_t)pi.ipi_ifindex);
    } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
      struct in6_pktinfo pi;
      memcpy(&pi, CMSG_DATA(c), sizeof(pi));
      memcpy(rec, &pi.ipi6_addr, 16);
      put_le32(rec + 20, pi.ipi6_ifindex);
    }
  }
}

/* Raises a socket buffer; the *FORCE variant ignores net.core.[rw]mem_max
 * but needs CAP_NET_ADMIN, so it is tried first and the capped one is the
 * fallback. Returns the size the kernel reports afterwards. */
static int raise_buffer(int s, int force_opt, int opt, int size) {
  if (size > 0) {
    if (setsockopt(s, SOL_SOCKET, force_opt, &size, sizeof(size)) != 0)
      setsockopt(s, SOL_SOCKET, opt, &size, sizeof(size));
  }
  int actual = 0;
  socklen_t len = sizeof(actual);
  getsockopt(s, SOL_SOCKET, opt, &actual, &len);
  return actual;
}

/* udpBind(host, port, receiveBufferSize, sendBufferSize, noGso, reusePort?)
 *   -> { fd, port, family, dualStack, gso, receiveBufferSize, sendBufferSize }
 * host "" or "::" binds dual-stack (IPv4 arrives as ::ffff:a.b.c.d), falling
 * back to 0.0.0.0 when the host has no IPv6. reusePort sets SO_REUSEPORT
 * before binding, so that a second socket can join the port (see
 * udpSteerHandshakes). */
static napi_value js_udp_bind(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  size_t argc = 6;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 5)
    return throw_kind(env, ERR_TYPE, "ERR_MISSING_ARGS", "expected 5 arguments, got %zu", argc);
  int reuse_port = 0;
  if (argc >= 6 && arg_bool(env, argv[5], "reusePort", &reuse_port) != 0) return NULL;
  char host[64];
  size_t host_len;
  int too_long;
  uint64_t port, rcvbuf, sndbuf;
  if (arg_string(env, argv[0], "host", host, sizeof(host), &host_len, &too_long) ||
      arg_uint(env, argv[1], "port", 65535, &port) ||
      arg_uint(env, argv[2], "receiveBufferSize", INT32_MAX, &rcvbuf) ||
      arg_uint(env, argv[3], "sendBufferSize", INT32_MAX, &sndbuf))
    return NULL;
  int no_gso;
  if (arg_bool(env, argv[4], "noGso", &no_gso) != 0) return NULL;

  sockaddr_any addr;
  socklen_t addr_len;
  int dual = 0;
  memset(&addr, 0, sizeof(addr));
  if (!too_long && (host_len == 0 || strcmp(host, "::") == 0)) {
    dual = 1;
    addr.in6.sin6_family = AF_INET6;
    addr.in6.sin6_addr = in6addr_any;
    addr_len = sizeof(addr.in6);
  } else if (!too_long && inet_pton(AF_INET6, host, &addr.in6.sin6_addr) == 1) {
    addr.in6.sin6_family = AF_INET6;
    addr_len = sizeof(addr.in6);
  } else if (!too_long && inet_pton(AF_INET, host, &addr.in4.sin_addr) == 1) {
    addr.in4.sin_family = AF_INET;
    addr_len = sizeof(addr.in4);
  } else {
    return throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_VALUE",
                      "host must be an IPv4 or IPv6 address literal, got '%.63s'", host);
  }

  int s = socket(addr.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s < 0 && dual && errno == EAFNOSUPPORT) {
    dual = 0;
    memset(&addr, 0, sizeof(addr));
    addr.in4.sin_family = AF_INET;
    addr.in4.sin_addr.s_addr = htonl(INADDR_ANY);
    addr_len = sizeof(addr.in4);
    s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  }
  if (s < 0) return throw_errno(env, errno, "cannot create UDP socket: %s", strerror(errno));
  int family = addr.sa.sa_family;
  if (family == AF_INET6) addr.in6.sin6_port = htons((uint16_t)port);
  else addr.in4.sin_port = htons((uint16_t)port);

  int one = 1, zero = 0;
  if (dual && setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) != 0) dual = 0;
  int pktinfo_ok =
      family == AF_INET6
          ? setsockopt(s, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one)) == 0
          : setsockopt(s, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) == 0;
  (void)pktinfo_ok; /* without it local records are simply all zero */
  /* UDP_SEGMENT is readable on kernels that can do UDP GSO (4.18+). */
  int gso_size = 0;
  socklen_t gso_len = sizeof(gso_size);
  int gso = !no_gso && getsockopt(s, SOL_UDP, UDP_SEGMENT, &gso_size, &gso_len) == 0;
  if (reuse_port && setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    int e = errno;
    close(s);
    return throw_errno(env, e, "cannot set SO_REUSEPORT: %s", strerror(e));
  }
  int rcv = raise_buffer(s, SO_RCVBUFFORCE, SO_RCVBUF, (int)rcvbuf);
  int snd = raise_buffer(s, SO_SNDBUFFORCE, SO_SNDBUF, (int)sndbuf);

  if (bind(s, &addr.sa, addr_len) != 0) {
    int e = errno;
    close(s);
    switch (e) {
      case EADDRINUSE:
        return throw_errno(env, e, "UDP port %u in use", (unsigned)port);
      case EADDRNOTAVAIL:
        return throw_errno(env, e, "cannot bind to %s: address not on this host", host);
      case EACCES:
        return throw_errno(env, e,
                           "permission denied binding UDP port %u (ports below 1024 need "
                           "CAP_NET_BIND_SERVICE)",
                           (unsigned)port);
      default:
        return throw_errno(env, e, "cannot bind UDP port %u: %s", (unsigned)port, strerror(e));
    }
  }
  sockaddr_any bound;
  socklen_t bound_len = sizeof(bound);
  if (getsockname(s, &bound.sa, &bound_len) != 0) {
    int e = errno;
    close(s);
    return throw_errno(env, e, "getsockname failed");
  }
  unsigned bound_port =
      ntohs(family == AF_INET6 ? bound.in6.sin6_port : bound.in4.sin_port);

  addon_state *st = state_of(env);
  owned_fd *entry = fd_register(st, s, FD_KIND_UDP, family);
  if (entry == NULL) {
    close(s);
    return throw_errno(env, ENOMEM, "out of memory");
  }
  entry->gso = gso;
  napi_value out;
  if (napi_create_object(env, &out) != napi_ok || set_prop_int(env, out, "fd", s) ||
      set_prop_int(env, out, "port", bound_port) ||
      set_prop_int(env, out, "family", family == AF_INET6 ? 6 : 4) ||
      set_prop_bool(env, out, "dualStack", dual) || set_prop_bool(env, out, "gso", gso) ||
      set_prop_int(env, out, "receiveBufferSize", rcv) ||
      set_prop_int(env, out, "sendBufferSize", snd)) {
    fd_close(st, fd_lookup(st, s));
    return NULL;
  }
  return out;
}

/* udpRecv(fd, arena, offsets, lengths, endpoints, locals, first, count, room)
 *   -> number of datagrams received (0 when none is waiting).
 * Datagram k lands at offsets[first+k] (at most `room` bytes; a longer one is
 * truncated), its length in lengths[], sender in endpoints[] and the local
 * address it was sent to in locals[] (locals may be null). */
static napi_value js_udp_recv(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  if (arg_count(env, info, 9, argv) != 0) return NULL;
  int fd;
  uint8_t *arena, *endpoints, *locals;
  size_t arena_len, off_len, len_len, ep_len, loc_len;
  uint32_t *offsets, *lengths;
  uint64_t first, count, room;
  if (arg_fd(env, argv[0], &fd) || arg_bytes(env, argv[1], "arena", &arena, &arena_len) ||
      arg_u32_array(env, argv[2], "offsets", &offsets, &off_len) ||
      arg_u32_array(env, argv[3], "lengths", &lengths, &len_len) ||
      arg_bytes(env, argv[4], "endpoints", &endpoints, &ep_len) ||
      arg_bytes_opt(env, argv[5], "locals", &locals, &loc_len) ||
      arg_uint(env, argv[6], "first", UINT32_MAX, &first) ||
      arg_uint(env, argv[7], "count", EDGETUN_MAX_BATCH, &count) ||
      arg_uint(env, argv[8], "room", 1u << 20, &room))
    return NULL;
  if (room == 0) return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "room must be > 0");
  if (require_fd(env, fd, FD_KIND_UDP) == NULL) return NULL;
  if (check_range(env, "offsets", off_len, 1, first, count) ||
      check_range(env, "lengths", len_len, 1, first, count) ||
      check_range(env, "endpoints", ep_len, EDGETUN_ENDPOINT_SIZE, first, count) ||
      (locals != NULL &&
       check_range(env, "locals", loc_len, EDGETUN_ENDPOINT_SIZE, first, count)) ||
      check_spans(env, arena_len, offsets, NULL, first, count, room))
    return NULL;
  if (count == 0) return make_int(env, 0);
  udp_io *sc = scratch(env, state_of(env));
  if (sc == NULL) return NULL;

  for (uint64_t k = 0; k < count; k++) {
    struct msghdr *m = &sc->msgs[k].msg_hdr;
    sc->iov[k].iov_base = arena + offsets[first + k];
    sc->iov[k].iov_len = room;
    m->msg_name = &sc->names[k];
    m->msg_namelen = sizeof(sc->names[k]);
    m->msg_iov = &sc->iov[k];
    m->msg_iovlen = 1;
    m->msg_control = sc->ctrl[k].buf;
    m->msg_controllen = CTRL_SIZE;
    m->msg_flags = 0;
    sc->msgs[k].msg_len = 0;
  }
  int r;
  do {
    r = recvmmsg(fd, sc->msgs, (unsigned)count, MSG_DONTWAIT, NULL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK) return make_int(env, 0);
    return throw_errno(env, e, "recvmmsg on fd %d failed: %s", fd, strerror(e));
  }
  for (int k = 0; k < r; k++) {
    uint64_t i = first + (uint64_t)k;
    lengths[i] = sc->msgs[k].msg_len;
    record_from_sockaddr(endpoints + i * EDGETUN_ENDPOINT_SIZE, &sc->names[k]);
    if (locals != NULL)
      local_from_control(locals + i * EDGETUN_ENDPOINT_SIZE, &sc->msgs[k].msg_hdr);
  }
  return make_int(env, r);
}

/* A run of packets sent as one message: with UDP GSO several equal-sized
 * packets to one destination become one sendmsg whose iovecs the kernel cuts
 * back into datagrams of `segment` bytes (the last may be shorter). */
#define GSO_MAX_SEGMENTS 64     /* UDP_MAX_SEGMENTS on older kernels */
#define GSO_MAX_BYTES 65000     /* below the 65507-byte UDP payload limit */

static int same_route(const uint8_t *endpoints, const uint8_t *locals, uint64_t a, uint64_t b) {
  if (memcmp(endpoints + a * EDGETUN_ENDPOINT_SIZE, endpoints + b * EDGETUN_ENDPOINT_SIZE,
             EDGETUN_ENDPOINT_SIZE) != 0)
    return 0;
  return locals == NULL || memcmp(locals + a * EDGETUN_ENDPOINT_SIZE,
                                  locals + b * EDGETUN_ENDPOINT_SIZE, EDGETUN_ENDPOINT_SIZE) == 0;
}

typedef struct {
  const uint8_t *arena;
  const uint32_t *offsets, *lengths;
  const uint8_t *endpoints, *locals;
  int32_t *status; /* may be NULL */
  int family;
  int gso;
} send_job;

/* Fills messages for packets [from, end); returns the message count. index[]
 * holds each message's first packet, index[n] the end of the last one. */
static unsigned build_messages(udp_io *sc, const send_job *job, uint64_t from,
                               uint64_t end) {
  unsigned nmsg = 0, niov = 0;
  uint64_t i = from;
  while (i < end) {
    socklen_t name_len;
    int e = sockaddr_from_record(job->endpoints + i * EDGETUN_ENDPOINT_SIZE, job->family,
                                 &sc->names[nmsg], &name_len);
    if (e != 0) {
      if (job->status != NULL) job->status[i] = -e;
      i++;
      continue;
    }
    uint64_t run = 1;
    uint32_t segment = job->lengths[i];
    if (job->gso && segment > 0) {
      size_t bytes = segment;
      while (i + run < end && run < GSO_MAX_SEGMENTS && job->lengths[i + run] > 0 &&
             job->lengths[i + run] <= segment && bytes + job->lengths[i + run] <= GSO_MAX_BYTES &&
             same_route(job->endpoints, job->locals, i, i + run)) {
        bytes += job->lengths[i + run];
        run++;
        /* Only the last segment may be shorter. */
        if (job->lengths[i + run - 1] < segment) break;
      }
    }
    struct msghdr *m = &sc->msgs[nmsg].msg_hdr;
    for (uint64_t k = 0; k < run; k++) {
      sc->iov[niov + k].iov_base = (void *)(job->arena + job->offsets[i + k]);
      sc->iov[niov + k].iov_len = job->lengths[i + k];
    }
    m->msg_name = &sc->names[nmsg];
    m->msg_namelen = name_len;
    m->msg_iov = &sc->iov[niov];
    m->msg_iovlen = run;
    m->msg_flags = 0;
    char *ctrl = sc->ctrl[nmsg].buf;
    size_t clen = put_source(
        ctrl, job->locals != NULL ? job->locals + i * EDGETUN_ENDPOINT_SIZE : NULL, job->family);
    if (run > 1) {
      struct cmsghdr *c = (struct cmsghdr *)(ctrl + clen);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t gso_size = (uint16_t)segment;
      memcpy(CMSG_DATA(c), &gso_size, sizeof(gso_size));
      clen += CMSG_SPACE(sizeof(uint16_t));
    }
    m->msg_control = clen != 0 ? ctrl : NULL;
    m->msg_controllen = clen;
    sc->index[nmsg] = (uint32_t)i;
    niov += (unsigned)run;
    nmsg++;
    i += run;
    sc->index[nmsg] = (uint32_t)i;
  }
  sc->index[nmsg] = (uint32_t)end;
  return nmsg;
}

/* The packets of message k are [index[k], index[k] + msg_iovlen). */
static void mark_message(udp_io *sc, const send_job *job, unsigned k, int32_t value) {
  if (job->status == NULL) return;
  uint64_t first = sc->index[k];
  for (uint64_t j = 0; j < sc->msgs[k].msg_hdr.msg_iovlen; j++) job->status[first + j] = value;
}

/* What the kernel took of a send_packets call. */
typedef struct {
  uint64_t packets;  /* datagrams, GSO runs' included */
  uint64_t messages; /* messages (a GSO run counts once) */
} send_tally;

/* Sends packets [first, end) of `job`, runs of them as one GSO message while *gso_enabled
 * (see build_messages). A message the kernel refuses (unreachable, too big, wrong family) is
 * marked -errno in job->status and skipped, so that one bad destination does not stall the
 * rest; a GSO message the route cannot take (no checksum offload: EIO; a segment larger than
 * the path MTU: EINVAL or EMSGSIZE, while a lone datagram would be fragmented) is sent again
 * one datagram per message, and EIO turns *gso_enabled off for good. Returns the packets
 * consumed (sent or refused): all of them, or those before the message that found the send
 * buffer full (EAGAIN); -errno when the descriptor is not a socket. */
static int64_t send_packets(udp_io *sc, send_job *job, int fd, uint64_t first, uint64_t end,
                            int *gso_enabled, send_tally *tally) {
  job->gso = gso_enabled != NULL && *gso_enabled;
  unsigned nmsg = build_messages(sc, job, first, end), done = 0;
  while (done < nmsg) {
    int r = sendmmsg(fd, sc->msgs + done, nmsg - done, MSG_DONTWAIT);
    if (r > 0) {
      for (int k = 0; k < r; k++) {
        mark_message(sc, job, done + (unsigned)k, 0);
        if (tally != NULL) tally->packets += sc->msgs[done + (unsigned)k].msg_hdr.msg_iovlen;
      }
      done += (unsigned)r;
      if (tally != NULL) tally->messages += (unsigned)r;
      continue;
    }
    int e = r < 0 ? errno : EIO;
    if (e == EINTR) continue;
    /* Packets before the unsent message are consumed (sent or marked). */
    if (e == EAGAIN || e == EWOULDBLOCK) return (int64_t)(sc->index[done] - first);
    if (e == EBADF || e == ENOTSOCK) return -e;
    if (sc->msgs[done].msg_hdr.msg_iovlen > 1 && (e == EIO || e == EINVAL || e == EMSGSIZE)) {
      if (e == EIO) *gso_enabled = 0;
      job->gso = 0;
      nmsg = build_messages(sc, job, sc->index[done], end);
      done = 0;
      continue;
    }
    mark_message(sc, job, done, -e);
    done++;
  }
  return (int64_t)(end - first);
}

/* udpSend(fd, arena, offsets, lengths, endpoints, locals, status, first, count)
 *   -> packets consumed from `first`.
 * A packet the kernel refuses (unreachable, too big, wrong family) is marked
 * status[i] = -errno and skipped so that one bad destination does not stall
 * the batch; EAGAIN ends the call early and the caller resumes at
 * first + consumed once the socket is writable. Consecutive equal-sized
 * packets to one destination go out as one GSO message when the kernel
 * supports UDP_SEGMENT. */
static napi_value js_udp_send(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  if (arg_count(env, info, 9, argv) != 0) return NULL;
  int fd;
  size_t arena_len, off_len, len_len, ep_len, loc_len, status_len;
  uint64_t first, count;
  uint8_t *arena, *endpoints, *locals;
  uint32_t *offsets, *lengths;
  int32_t *status;
  if (arg_fd(env, argv[0], &fd) || arg_bytes(env, argv[1], "arena", &arena, &arena_len) ||
      arg_u32_array(env, argv[2], "offsets", &offsets, &off_len) ||
      arg_u32_array(env, argv[3], "lengths", &lengths, &len_len) ||
      arg_bytes(env, argv[4], "endpoints", &endpoints, &ep_len) ||
      arg_bytes_opt(env, argv[5], "locals", &locals, &loc_len) ||
      arg_i32_array_opt(env, argv[6], "status", &status, &status_len) ||
      arg_uint(env, argv[7], "first", UINT32_MAX, &first) ||
      arg_uint(env, argv[8], "count", EDGETUN_MAX_BATCH, &count))
    return NULL;
  owned_fd *entry = require_fd(env, fd, FD_KIND_UDP);
  if (entry == NULL) return NULL;
  if (check_range(env, "offsets", off_len, 1, first, count) ||
      check_range(env, "lengths", len_len, 1, first, count) ||
      check_range(env, "endpoints", ep_len, EDGETUN_ENDPOINT_SIZE, first, count) ||
      (locals != NULL &&
       check_range(env, "locals", loc_len, EDGETUN_ENDPOINT_SIZE, first, count)) ||
      (status != NULL && check_range(env, "status", status_len, 1, first, count)) ||
      check_spans(env, arena_len, offsets, lengths, first, count, 0))
    return NULL;
  if (count == 0) return make_int(env, 0);
  udp_io *sc = scratch(env, state_of(env));
  if (sc == NULL) return NULL;
  send_job job = {arena, offsets, lengths, endpoints, locals, status, entry->family, 0};

  int64_t consumed = send_packets(sc, &job, fd, first, first + count, &entry->gso, NULL);
  if (consumed < 0) return throw_errno(env, (int)-consumed, "sendmmsg on fd %d failed", fd);
  return make_int(env, consumed);
}

/* udpSetMark(fd, mark): SO_MARK, WireGuard's fwmark, lets policy routing keep
 * the tunnel's own UDP packets out of the tunnel. 0 clears it. */
static napi_value js_udp_set_mark(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint64_t mark;
  if (arg_count(env, info, 2, argv) || arg_fd(env, argv[0], &fd) ||
      arg_uint(env, argv[1], "mark", UINT32_MAX, &mark))
    return NULL;
  if (require_fd(env, fd, FD_KIND_UDP) == NULL) return NULL;
  uint32_t value = (uint32_t)mark;
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &value, sizeof(value)) != 0) {
    int e = errno;
    if (e == EPERM)
      return throw_errno(env, e, "CAP_NET_ADMIN required to set fwmark %u", value);
    return throw_errno(env, e, "cannot set fwmark %u: %s", value, strerror(e));
  }
  return make_undefined(env);
}

/* udpSteerHandshakes(fd): attaches to fd's SO_REUSEPORT group a classic BPF
 * program that sends transport data (first payload byte 4) to the group's
 * first socket and everything else (handshakes, cookie replies, junk) to the
 * second. The kernel then drops a flood of handshakes at the second socket's
 * full buffer, never data. The program sees the UDP payload at offset 0; a
 * payload too short to load from returns 0, the data socket. */
static napi_value js_udp_steer_handshakes(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (arg_count(env, info, 1, argv) || arg_fd(env, argv[0], &fd)) return NULL;
  if (require_fd(env, fd, FD_KIND_UDP) == NULL) return NULL;
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 4, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0),
      BPF_STMT(BPF_RET | BPF_K, 1),
  };
  struct sock_fprog program = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &program, sizeof(program)) != 0) {
    int e = errno;
    return throw_errno(env, e, "cannot attach the handshake steering program: %s", strerror(e));
  }
  return make_undefined(env);
}

/* udpQueueStats(fd) -> { queuedBytes, receiveBufferSize, drops }: the
 * kernel's view of the receive queue (SO_MEMINFO): bytes waiting (as the
 * kernel accounts them, buffers included), the buffer's size, and the
 * datagrams dropped because it was full, since the socket was made. */
static napi_value js_udp_queue_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (arg_count(env, info, 1, argv) || arg_fd(env, argv[0], &fd)) return NULL;
  if (require_fd(env, fd, FD_KIND_UDP) == NULL) return NULL;
  uint32_t mem[SK_MEMINFO_VARS];
  socklen_t len = sizeof(mem);
  memset(mem, 0, sizeof(mem));
  if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) != 0) {
    int e = errno;
    return throw_errno(env, e, "cannot read the socket's queue: %s", strerror(e));
  }
  napi_value out;
  if (napi_create_object(env, &out) != napi_ok ||
      set_prop_int(env, out, "queuedBytes", mem[SK_MEMINFO_RMEM_ALLOC]) ||
      set_prop_int(env, out, "receiveBufferSize", mem[SK_MEMINFO_RCVBUF]) ||
      set_prop_int(env, out, "drops", mem[SK_MEMINFO_DROPS]))
    return NULL;
  return out;
}

/* ---- plain recvmmsg/sendmmsg for a thread of the addon's own (native/lane.c,
 * native/dataplane.c) ----
 * No JS values and no shared scratch: the caller owns a udp_io. */
udp_io *udp_io_new(void) { return calloc(1, sizeof(udp_io)); }

void udp_io_free(udp_io *io) { free(io); }

int udp_io_recv(udp_io *io, int fd, uint8_t *arena, const uint32_t *offsets, uint32_t *lengths,
                uint8_t *endpoints, uint8_t *locals, unsigned count, size_t room) {
  if (count > UDP_IO_BATCH) count = UDP_IO_BATCH;
  for (unsigned k = 0; k < count; k++) {
    struct msghdr *m = &io->msgs[k].msg_hdr;
    io->iov[k].iov_base = arena + offsets[k];
    io->iov[k].iov_len = room;
    m->msg_name = &io->names[k];
    m->msg_namelen = sizeof(io->names[k]);
    m->msg_iov = &io->iov[k];
    m->msg_iovlen = 1;
    m->msg_control = io->ctrl[k].buf;
    m->msg_controllen = CTRL_SIZE;
    m->msg_flags = 0;
  }
  int r;
  do {
    r = recvmmsg(fd, io->msgs, count, MSG_DONTWAIT, NULL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
  for (int k = 0; k < r; k++) {
    lengths[k] = io->msgs[k].msg_len;
    record_from_sockaddr(endpoints + (size_t)k * EDGETUN_ENDPOINT_SIZE, &io->names[k]);
    local_from_control(locals + (size_t)k * EDGETUN_ENDPOINT_SIZE, &io->msgs[k].msg_hdr);
  }
  return r;
}

int udp_io_enable_gro(int fd) {
  int one = 1;
  return setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one)) == 0;
}

int udp_io_recv_coalesced(udp_io *io, int fd, uint8_t *arena, size_t room, unsigned count,
                          uint32_t *lengths, uint32_t *segment_sizes, uint8_t *endpoints,
                          uint8_t *locals) {
  if (count > UDP_IO_BATCH) count = UDP_IO_BATCH;
  for (unsigned k = 0; k < count; k++) {
    struct msghdr *m = &io->msgs[k].msg_hdr;
    io->iov[k].iov_base = arena + (size_t)k * room;
    io->iov[k].iov_len = room;
    m->msg_name = &io->names[k];
    m->msg_namelen = sizeof(io->names[k]);
    m->msg_iov = &io->iov[k];
    m->msg_iovlen = 1;
    m->msg_control = io->ctrl[k].buf;
    m->msg_controllen = CTRL_SIZE;
    m->msg_flags = 0;
  }
  int r;
  do {
    r = recvmmsg(fd, io->msgs, count, MSG_DONTWAIT, NULL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
  for (int k = 0; k < r; k++) {
    struct msghdr *m = &io->msgs[k].msg_hdr;
    lengths[k] = io->msgs[k].msg_len;
    segment_sizes[k] = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
      if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
        int size;
        memcpy(&size, CMSG_DATA(c), sizeof(size));
        if (size > 0) segment_sizes[k] = (uint32_t)size;
      }
    }
    record_from_sockaddr(endpoints + (size_t)k * EDGETUN_ENDPOINT_SIZE, &io->names[k]);
    local_from_control(locals + (size_t)k * EDGETUN_ENDPOINT_SIZE, m);
  }
  return r;
}

int udp_io_send(udp_io *io, int fd, int family, const uint8_t *arena, const uint32_t *offsets,
                const uint32_t *lengths, const uint8_t *endpoints, const uint8_t *locals,
                unsigned count, int *gso_enabled, unsigned *messages) {
  if (count > UDP_IO_BATCH) count = UDP_IO_BATCH;
  send_job job = {arena, offsets, lengths, endpoints, locals, NULL, family, 0};
  send_tally tally = {0, 0};
  int64_t consumed = send_packets(io, &job, fd, 0, count, gso_enabled, &tally);
  if (messages != NULL) *messages = (unsigned)tally.messages;
  return consumed < 0 ? (int)consumed : (int)tally.packets;
}

napi_status init_udp(napi_env env, napi_value exports) {
  EXPORT_FN(env, exports, "udpSteerHandshakes", js_udp_steer_handshakes);
  EXPORT_FN(env, exports, "udpQueueStats", js_udp_queue_stats);
  EXPORT_FN(env, exports, "udpSetMark", js_udp_set_mark);
  EXPORT_FN(env, exports, "udpBind", js_udp_bind);
  EXPORT_FN(env, exports, "udpRecv", js_udp_recv);
  EXPORT_FN(env, exports, "udpSend", js_udp_send);
  return napi_ok;
}
