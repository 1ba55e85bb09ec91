/*
 * rtnetlink transactions: addresses, routes and policy rules without spawning
 * iproute2.
 *
 * JS encodes the messages (src/host/native/netlink.ts); this file only moves
 * them. A batch of many messages goes to the kernel in few sendmsg calls (the
 * kernel's netlink_rcv_skb walks every message of a datagram), each message
 * carries NLM_F_ACK and its own sequence number, and the acknowledgement of
 * every message is matched back to it, so the caller learns which messages
 * failed and with what errno.
 *
 * The socket is opened per call: one syscall, nothing to own or leak, and
 * always in the network namespace of the process at the time of the call.
 */
#include "common.h"

#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* Messages per sendmsg. Each one queues an ack (36 bytes, more for an error,
 * which quotes the request) on our receive queue while the kernel processes
 * the datagram; this many always fit the receive buffer set below. */
#define CHUNK_MESSAGES 256
#define CHUNK_BYTES (64 * 1024)
#define RECEIVE_BUFFER (1024 * 1024)
#define REPLY_BUFFER (64 * 1024)
/* An ack never takes this long; if it does, say so instead of hanging. */
#define ACK_TIMEOUT_SECONDS 5
/* errors[i] until its ack arrives. No errno is this large. */
#define PENDING 1

static napi_value netlink_fail(napi_env env, int fd, int err, const char *what) {
  if (fd >= 0) close(fd);
  if (err == EPERM || err == EACCES)
    return throw_errno(env, err, "CAP_NET_ADMIN required to %s", what);
  return throw_errno(env, err, "rtnetlink %s failed", what);
}

/* Counts the messages in buf, checking that they tile it exactly. */
static int count_messages(const uint8_t *buf, size_t len, size_t *count) {
  size_t off = 0, n = 0;
  while (off < len) {
    if (len - off < NLMSG_HDRLEN) return -1;
    const struct nlmsghdr *h = (const struct nlmsghdr *)(buf + off);
    if (h->nlmsg_len < NLMSG_HDRLEN || h->nlmsg_len > len - off) return -1;
    if (h->nlmsg_len > CHUNK_BYTES) return -1;
    off += NLMSG_ALIGN(h->nlmsg_len);
    n++;
  }
  *count = n;
  return 0;
}

/* netlinkTransact(messages, errors) -> count
 *
 * `messages` holds nlmsghdr-framed requests back to back (4-byte aligned);
 * their flags get NLM_F_REQUEST | NLM_F_ACK and their sequence numbers are
 * rewritten to 1..n in place. errors[i] receives 0 or the negative errno the
 * kernel answered message i with. `errors` must have room for every message. */
static napi_value js_netlink_transact(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (arg_count(env, info, 2, argv) != 0) return NULL;
  uint8_t *buf;
  size_t len;
  int32_t *errors;
  size_t errors_len;
  if (arg_bytes(env, argv[0], "messages", &buf, &len) != 0) return NULL;
  if (arg_i32_array_opt(env, argv[1], "errors", &errors, &errors_len) != 0) return NULL;
  if (((uintptr_t)buf & 3) != 0)
    return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "messages must be 4-byte aligned");
  size_t count;
  if (count_messages(buf, len, &count) != 0)
    return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE",
                      "messages are not a sequence of netlink messages");
  if (errors == NULL || errors_len < count)
    return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "errors has room for %zu of %zu",
                      errors == NULL ? 0 : errors_len, count);
  if (count == 0) return make_int(env, 0);

  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return netlink_fail(env, -1, errno, "socket");
  int size = RECEIVE_BUFFER;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  struct timeval timeout = {.tv_sec = ACK_TIMEOUT_SECONDS, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  /* Ask for the request not to be quoted back in error acks: smaller replies. */
  int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));

  uint8_t *reply = malloc(REPLY_BUFFER);
  if (reply == NULL) {
    close(fd);
    return throw_errno(env, ENOMEM, "no memory for netlink replies");
  }
  struct sockaddr_nl kernel;
  memset(&kernel, 0, sizeof(kernel));
  kernel.nl_family = AF_NETLINK;

  size_t next = 0, off = 0;
  while (next < count) {
    size_t first = next, start = off;
    while (next < count && next - first < CHUNK_MESSAGES) {
      struct nlmsghdr *h = (struct nlmsghdr *)(buf + off);
      size_t step = NLMSG_ALIGN(h->nlmsg_len);
      if (off + step - start > CHUNK_BYTES) break;
      h->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
      h->nlmsg_seq = (uint32_t)(next + 1);
      h->nlmsg_pid = 0;
      errors[next] = PENDING;
      off += step;
      next++;
    }
    ssize_t sent;
    do {
      sent = sendto(fd, buf + start, off - start, 0, (struct sockaddr *)&kernel, sizeof(kernel));
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
      int e = errno;
      free(reply);
      return netlink_fail(env, fd, e, "send");
    }
    size_t pending = next - first;
    while (pending > 0) {
      ssize_t got = recv(fd, reply, REPLY_BUFFER, 0);
      if (got < 0) {
        if (errno == EINTR) continue;
        int e = errno;
        free(reply);
        if (e == EAGAIN || e == EWOULDBLOCK) e = ETIMEDOUT;
        return netlink_fail(env, fd, e, "acknowledgement");
      }
      int remaining = (int)got;
      for (struct nlmsghdr *h = (struct nlmsghdr *)reply; NLMSG_OK(h, remaining);
           h = NLMSG_NEXT(h, remaining)) {
        if (h->nlmsg_type != NLMSG_ERROR) continue;
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) continue;
        const struct nlmsgerr *ack = NLMSG_DATA(h);
        uint32_t seq = h->nlmsg_seq;
        if (seq <= first || seq > next) continue;
        if (errors[seq - 1] != PENDING) continue;
        errors[seq - 1] = ack->error;
        pending--;
      }
    }
  }
  free(reply);
  close(fd);
  return make_int(env, (int64_t)count);
}

/* linkEventsOpen() -> fd
 *
 * A non-blocking rtnetlink socket subscribed to link notifications
 * (RTMGRP_LINK) in the caller's network namespace: readable whenever any
 * link changes (an MTU set by `ip link set mtu`, a link going away). The
 * messages are not parsed here; the caller re-reads what it follows. */
static napi_value js_link_events_open(napi_env env, napi_callback_info info) {
  if (arg_count(env, info, 0, NULL) != 0) return NULL;
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
  if (fd < 0) return netlink_fail(env, -1, errno, "socket");
  struct sockaddr_nl local;
  memset(&local, 0, sizeof(local));
  local.nl_family = AF_NETLINK;
  local.nl_groups = RTMGRP_LINK;
  if (bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0)
    return netlink_fail(env, fd, errno, "bind to link notifications");
  if (fd_register(state_of(env), fd, FD_KIND_LINK_EVENTS, 0) == NULL) {
    close(fd);
    return throw_errno(env, ENOMEM, "out of memory");
  }
  return make_int(env, fd);
}

#define DRAIN_LIMIT 1024

/* linkEventsDrain(fd) -> count
 *
 * Reads every queued notification; returns how many datagrams there were. An
 * overrun receive queue (ENOBUFS: notifications were lost) counts as one, so
 * the caller still re-reads the state it follows. */
static napi_value js_link_events_drain(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (arg_count(env, info, 1, argv) != 0) return NULL;
  int fd;
  if (arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (require_fd(env, fd, FD_KIND_LINK_EVENTS) == NULL) return NULL;
  uint8_t buffer[8192];
  int64_t count = 0;
  /* Bounded: a flood of notifications yields to the loop; the socket stays readable. */
  while (count < DRAIN_LIMIT) {
    ssize_t got = recv(fd, buffer, sizeof(buffer), 0);
    if (got >= 0 || errno == ENOBUFS) {
      count++;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    return netlink_fail(env, -1, errno, "read link notifications");
  }
  return make_int(env, count);
}

napi_status init_netlink(napi_env env, napi_value exports) {
  EXPORT_FN(env, exports, "netlinkTransact", js_netlink_transact);
  EXPORT_FN(env, exports, "linkEventsOpen", js_link_events_open);
  EXPORT_FN(env, exports, "linkEventsDrain", js_link_events_drain);
  return napi_ok;
}
