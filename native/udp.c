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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef union {
  struct sockaddr sa;
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
} sockaddr_any;

/* Big enough for either pktinfo flavour. */
#define CTRL_SIZE 64

typedef struct {
  struct mmsghdr msgs[EDGETUN_MAX_BATCH];
  struct iovec iov[EDGETUN_MAX_BATCH];
  sockaddr_any names[EDGETUN_MAX_BATCH];
  union {
    char buf[CTRL_SIZE];
    struct cmsghdr align;
  } ctrl[EDGETUN_MAX_BATCH];
  uint32_t index[EDGETUN_MAX_BATCH]; /* message -> packet index */
} mmsg_scratch;

static mmsg_scratch *scratch(napi_env env, addon_state *st) {
  if (st->mmsg_scratch == NULL) st->mmsg_scratch = malloc(sizeof(mmsg_scratch));
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

/* udpBind(host, port, receiveBufferSize, sendBufferSize)
 *   -> { fd, port, family, dualStack, receiveBufferSize, sendBufferSize }
 * host "" or "::" binds dual-stack (IPv4 arrives as ::ffff:a.b.c.d), falling
 * back to 0.0.0.0 when the host has no IPv6. */
static napi_value js_udp_bind(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (arg_count(env, info, 4, argv) != 0) return NULL;
  char host[64];
  size_t host_len;
  int too_long;
  uint64_t port, rcvbuf, sndbuf;
  if (arg_string(env, argv[0], "host", host, sizeof(host), &host_len, &too_long) ||
      arg_uint(env, argv[1], "port", 65535, &port) ||
      arg_uint(env, argv[2], "receiveBufferSize", INT32_MAX, &rcvbuf) ||
      arg_uint(env, argv[3], "sendBufferSize", INT32_MAX, &sndbuf))
    return NULL;

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
  if (fd_register(st, s, FD_KIND_UDP, family) == NULL) {
    close(s);
    return throw_errno(env, ENOMEM, "out of memory");
  }
  napi_value out;
  if (napi_create_object(env, &out) != napi_ok || set_prop_int(env, out, "fd", s) ||
      set_prop_int(env, out, "port", bound_port) ||
      set_prop_int(env, out, "family", family == AF_INET6 ? 6 : 4) ||
      set_prop_bool(env, out, "dualStack", dual) ||
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
  mmsg_scratch *sc = scratch(env, state_of(env));
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

/* udpSend(fd, arena, offsets, lengths, endpoints, locals, status, first, count)
 *   -> packets consumed from `first`.
 * A packet the kernel refuses (unreachable, too big, wrong family) is marked
 * status[i] = -errno and skipped so that one bad destination does not stall
 * the batch; EAGAIN ends the call early and the caller resumes at
 * first + consumed once the socket is writable. */
static napi_value js_udp_send(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  if (arg_count(env, info, 9, argv) != 0) return NULL;
  int fd;
  uint8_t *arena, *endpoints, *locals;
  size_t arena_len, off_len, len_len, ep_len, loc_len, status_len;
  uint32_t *offsets, *lengths;
  int32_t *status;
  uint64_t first, count;
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
  mmsg_scratch *sc = scratch(env, state_of(env));
  if (sc == NULL) return NULL;

  /* Build messages for the packets that have a usable destination; packets
   * rejected here are marked and left out, index[] maps back. */
  unsigned nmsg = 0;
  for (uint64_t i = first; i < first + count; i++) {
    socklen_t name_len;
    int e = sockaddr_from_record(endpoints + i * EDGETUN_ENDPOINT_SIZE, entry->family,
                                 &sc->names[nmsg], &name_len);
    if (e != 0) {
      if (status != NULL) status[i] = -e;
      continue;
    }
    struct msghdr *m = &sc->msgs[nmsg].msg_hdr;
    sc->iov[nmsg].iov_base = arena + offsets[i];
    sc->iov[nmsg].iov_len = lengths[i];
    m->msg_name = &sc->names[nmsg];
    m->msg_namelen = name_len;
    m->msg_iov = &sc->iov[nmsg];
    m->msg_iovlen = 1;
    m->msg_flags = 0;
    size_t clen = put_source(sc->ctrl[nmsg].buf,
                             locals != NULL ? locals + i * EDGETUN_ENDPOINT_SIZE : NULL,
                             entry->family);
    m->msg_control = clen != 0 ? sc->ctrl[nmsg].buf : NULL;
    m->msg_controllen = clen;
    sc->index[nmsg] = (uint32_t)i;
    nmsg++;
  }

  unsigned done = 0;
  while (done < nmsg) {
    int r = sendmmsg(fd, sc->msgs + done, nmsg - done, MSG_DONTWAIT);
    if (r > 0) {
      if (status != NULL)
        for (int k = 0; k < r; k++) status[sc->index[done + k]] = 0;
      done += (unsigned)r;
      continue;
    }
    int e = r < 0 ? errno : EIO;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      /* Packets before index[done] are consumed (sent or marked); those
       * after are not, including ones marked above, which a retry will mark
       * again. */
      return make_int(env, (int64_t)(sc->index[done] - first));
    }
    if (e == EBADF || e == ENOTSOCK) return throw_errno(env, e, "sendmmsg on fd %d failed", fd);
    if (status != NULL) status[sc->index[done]] = -e;
    done++;
  }
  return make_int(env, (int64_t)count);
}

napi_status init_udp(napi_env env, napi_value exports) {
  EXPORT_FN(env, exports, "udpBind", js_udp_bind);
  EXPORT_FN(env, exports, "udpRecv", js_udp_recv);
  EXPORT_FN(env, exports, "udpSend", js_udp_send);
  return napi_ok;
}
