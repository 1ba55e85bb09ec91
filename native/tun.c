/*
 * TUN device: open/attach a layer-3 queue, batched read/write, and the two
 * link settings a tunnel needs before traffic flows (MTU and up).
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* linux/if.h and net/if.h conflict; if_nametoindex is all we need from the
 * latter. */
extern unsigned int if_nametoindex(const char *ifname);

#define TUN_PATH "/dev/net/tun"

/* Reads an interface name argument, with the two mistakes the kernel would
 * only answer with a bare EINVAL turned into readable errors. */
static int arg_ifname(napi_env env, napi_value v, int allow_empty, char name[IFNAMSIZ]) {
  char buf[256];
  size_t len;
  int too_long;
  if (arg_string(env, v, "name", buf, sizeof(buf), &len, &too_long) != 0) return -1;
  if (too_long || len > IFNAMSIZ - 1) {
    throw_kind(env, ERR_RANGE, "ENAMETOOLONG",
               "ENAMETOOLONG: interface name too long (max %d): '%.64s%s'", IFNAMSIZ - 1, buf,
               too_long || len > 64 ? "..." : "");
    return -1;
  }
  if (len == 0 && !allow_empty) {
    throw_kind(env, ERR_RANGE, "EINVAL", "EINVAL: interface name must not be empty");
    return -1;
  }
  if (strcmp(buf, ".") == 0 || strcmp(buf, "..") == 0 || strpbrk(buf, "/: \t\n\r\v\f") != NULL) {
    throw_kind(env, ERR_RANGE, "EINVAL",
               "EINVAL: invalid interface name '%s' (no '/', ':' or whitespace)", buf);
    return -1;
  }
  memcpy(name, buf, len + 1);
  return 0;
}

/* tunOpen(name, multiQueue) -> { fd, name }. An empty name lets the kernel
 * choose ("tun0", ...). With multiQueue, opening the same name again adds a
 * queue to the existing device. */
static napi_value js_tun_open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (arg_count(env, info, 2, argv) != 0) return NULL;
  char name[IFNAMSIZ];
  int multi;
  if (arg_ifname(env, argv[0], 1, name) != 0) return NULL;
  if (arg_bool(env, argv[1], "multiQueue", &multi) != 0) return NULL;

  int fd = open(TUN_PATH, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    switch (e) {
      case ENOENT:
        return throw_errno(env, e, "%s not found (container without the tun device?)", TUN_PATH);
      case ENXIO:
      case ENODEV:
        return throw_errno(env, e, "%s present but no TUN driver (load the tun module)", TUN_PATH);
      case EACCES:
      case EPERM:
        return throw_errno(env, e,
                           "CAP_NET_ADMIN required to create TUN device (cannot open %s: run "
                           "as root or grant the capability, and allow the device in a "
                           "container)",
                           TUN_PATH);
      default:
        return throw_errno(env, e, "cannot open %s: %s", TUN_PATH, strerror(e));
    }
  }

  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (multi ? IFF_MULTI_QUEUE : 0);
  memcpy(ifr.ifr_name, name, strlen(name) + 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    switch (e) {
      case EPERM:
      case EACCES:
        return throw_errno(env, e, "CAP_NET_ADMIN required to create TUN device '%s'", name);
      case EBUSY:
        return throw_errno(env, e, "interface name in use: '%s'", name);
      case EINVAL:
        return throw_errno(env, e,
                           "cannot use '%s': it exists and is not a TUN device with the same "
                           "flags (multi-queue must match)",
                           name);
      default:
        return throw_errno(env, e, "TUNSETIFF '%s' failed: %s", name, strerror(e));
    }
  }
  ifr.ifr_name[IFNAMSIZ - 1] = 0;

  addon_state *st = state_of(env);
  if (fd_register(st, fd, FD_KIND_TUN, 0) == NULL) {
    close(fd);
    return throw_errno(env, ENOMEM, "out of memory");
  }
  napi_value out;
  if (napi_create_object(env, &out) != napi_ok || set_prop_int(env, out, "fd", fd) != 0 ||
      set_prop_str(env, out, "name", ifr.ifr_name) != 0) {
    fd_close(st, fd_lookup(st, fd));
    return NULL;
  }
  return out;
}

/* tunRead(fd, arena, offsets, lengths, first, count, room) -> n
 * Reads up to `count` packets; packet i goes to arena[offsets[i]...] with at
 * most `room` bytes, its length to lengths[i]. Stops at the first EAGAIN. */
static napi_value js_tun_read(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (arg_count(env, info, 7, argv) != 0) return NULL;
  int fd;
  uint8_t *arena;
  size_t arena_len, off_len, len_len;
  uint32_t *offsets, *lengths;
  uint64_t first, count, room;
  if (arg_fd(env, argv[0], &fd) != 0 || arg_bytes(env, argv[1], "arena", &arena, &arena_len) ||
      arg_u32_array(env, argv[2], "offsets", &offsets, &off_len) ||
      arg_u32_array(env, argv[3], "lengths", &lengths, &len_len) ||
      arg_uint(env, argv[4], "first", UINT32_MAX, &first) ||
      arg_uint(env, argv[5], "count", EDGETUN_MAX_BATCH, &count) ||
      arg_uint(env, argv[6], "room", 1u << 20, &room))
    return NULL;
  if (require_fd(env, fd, FD_KIND_TUN) == NULL) return NULL;
  if (room == 0) return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "room must be > 0");
  if (check_range(env, "offsets", off_len, 1, first, count) ||
      check_range(env, "lengths", len_len, 1, first, count) ||
      check_spans(env, arena_len, offsets, NULL, first, count, room))
    return NULL;

  uint64_t n = 0;
  while (n < count) {
    uint64_t i = first + n;
    ssize_t r = read(fd, arena + offsets[i], room);
    if (r < 0) {
      int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) break;
      /* Report an error only when nothing was read; otherwise hand over what
       * we have and let the next call hit (and report) it again. */
      if (n == 0) return throw_errno(env, e, "read from TUN fd %d failed", fd);
      break;
    }
    if (r == 0) break;
    lengths[i] = (uint32_t)r;
    n++;
  }
  return make_int(env, (int64_t)n);
}

/* tunWrite(fd, arena, offsets, lengths, status, first, count) -> consumed
 * Writes packets in order. A packet the kernel rejects (malformed header)
 * gets status[i] = -errno and the batch continues; EAGAIN stops and returns
 * how many packets were consumed so the caller can resume when writable. */
static napi_value js_tun_write(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (arg_count(env, info, 7, argv) != 0) return NULL;
  int fd;
  uint8_t *arena;
  size_t arena_len, off_len, len_len, status_len;
  uint32_t *offsets, *lengths;
  int32_t *status;
  uint64_t first, count;
  if (arg_fd(env, argv[0], &fd) != 0 || arg_bytes(env, argv[1], "arena", &arena, &arena_len) ||
      arg_u32_array(env, argv[2], "offsets", &offsets, &off_len) ||
      arg_u32_array(env, argv[3], "lengths", &lengths, &len_len) ||
      arg_i32_array_opt(env, argv[4], "status", &status, &status_len) ||
      arg_uint(env, argv[5], "first", UINT32_MAX, &first) ||
      arg_uint(env, argv[6], "count", UINT32_MAX, &count))
    return NULL;
  if (require_fd(env, fd, FD_KIND_TUN) == NULL) return NULL;
  if (check_range(env, "offsets", off_len, 1, first, count) ||
      check_range(env, "lengths", len_len, 1, first, count) ||
      (status != NULL && check_range(env, "status", status_len, 1, first, count)) ||
      check_spans(env, arena_len, offsets, lengths, first, count, 0))
    return NULL;

  uint64_t n = 0;
  while (n < count) {
    uint64_t i = first + n;
    ssize_t r = write(fd, arena + offsets[i], lengths[i]);
    if (r < 0) {
      int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) break;
      if (e == EBADF) return throw_errno(env, e, "write to TUN fd %d failed", fd);
      if (status != NULL) status[i] = -e;
    } else if (status != NULL) {
      status[i] = 0;
    }
    n++;
  }
  return make_int(env, (int64_t)n);
}

static int ioctl_socket(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) s = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  return s;
}

static napi_value link_error(napi_env env, int e, const char *what, const char *name) {
  switch (e) {
    case ENODEV:
      return throw_errno(env, e, "no interface named '%s'", name);
    case EPERM:
    case EACCES:
      return throw_errno(env, e, "CAP_NET_ADMIN required to %s '%s'", what, name);
    default:
      return throw_errno(env, e, "cannot %s '%s': %s", what, name, strerror(e));
  }
}

/* linkSetMtu(name, mtu) */
static napi_value js_link_set_mtu(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (arg_count(env, info, 2, argv) != 0) return NULL;
  char name[IFNAMSIZ];
  int64_t mtu;
  if (arg_ifname(env, argv[0], 0, name) != 0 || arg_int(env, argv[1], "mtu", 68, 65535, &mtu))
    return NULL;
  int s = ioctl_socket();
  if (s < 0) return throw_errno(env, errno, "cannot create ioctl socket");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  memcpy(ifr.ifr_name, name, strlen(name) + 1);
  ifr.ifr_mtu = (int)mtu;
  int r = ioctl(s, SIOCSIFMTU, &ifr);
  int e = errno;
  close(s);
  if (r < 0) {
    if (e == EINVAL) return throw_errno(env, e, "MTU %d not accepted by '%s'", (int)mtu, name);
    return link_error(env, e, "set the MTU of", name);
  }
  return make_undefined(env);
}

/* linkGetMtu(name) -> mtu */
static napi_value js_link_get_mtu(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (arg_count(env, info, 1, argv) != 0) return NULL;
  char name[IFNAMSIZ];
  if (arg_ifname(env, argv[0], 0, name) != 0) return NULL;
  int s = ioctl_socket();
  if (s < 0) return throw_errno(env, errno, "cannot create ioctl socket");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  memcpy(ifr.ifr_name, name, strlen(name) + 1);
  int r = ioctl(s, SIOCGIFMTU, &ifr);
  int e = errno;
  close(s);
  if (r < 0) return link_error(env, e, "read the MTU of", name);
  return make_int(env, ifr.ifr_mtu);
}

/* linkSetUp(name, up) */
static napi_value js_link_set_up(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (arg_count(env, info, 2, argv) != 0) return NULL;
  char name[IFNAMSIZ];
  int up;
  if (arg_ifname(env, argv[0], 0, name) != 0 || arg_bool(env, argv[1], "up", &up) != 0)
    return NULL;
  int s = ioctl_socket();
  if (s < 0) return throw_errno(env, errno, "cannot create ioctl socket");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  memcpy(ifr.ifr_name, name, strlen(name) + 1);
  int r = ioctl(s, SIOCGIFFLAGS, &ifr);
  if (r == 0) {
    if (up)
      ifr.ifr_flags |= IFF_UP;
    else
      ifr.ifr_flags &= ~IFF_UP;
    r = ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  int e = errno;
  close(s);
  if (r < 0) return link_error(env, e, up ? "bring up" : "bring down", name);
  return make_undefined(env);
}

/* linkIndex(name) -> ifindex (for endpoint records and routing). */
static napi_value js_link_index(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (arg_count(env, info, 1, argv) != 0) return NULL;
  char name[IFNAMSIZ];
  if (arg_ifname(env, argv[0], 0, name) != 0) return NULL;
  unsigned int idx = if_nametoindex(name);
  if (idx == 0) return link_error(env, errno, "find", name);
  return make_int(env, idx);
}

napi_status init_tun(napi_env env, napi_value exports) {
  EXPORT_FN(env, exports, "tunOpen", js_tun_open);
  EXPORT_FN(env, exports, "tunRead", js_tun_read);
  EXPORT_FN(env, exports, "tunWrite", js_tun_write);
  EXPORT_FN(env, exports, "linkSetMtu", js_link_set_mtu);
  EXPORT_FN(env, exports, "linkGetMtu", js_link_get_mtu);
  EXPORT_FN(env, exports, "linkSetUp", js_link_set_up);
  EXPORT_FN(env, exports, "linkIndex", js_link_index);
  return napi_ok;
}
