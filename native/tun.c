/*
 * TUN device: open/attach a layer-3 queue, batched read/write, and the two
 * link settings a tunnel needs before traffic flows (MTU and up).
 *
 * Offload mode (tunOpen(..., offload = true)): the queue is opened with
 * IFF_VNET_HDR and a 10-byte virtio_net_hdr (TUNSETVNETHDRSZ 10, the legacy
 * layout without num_buffers) precedes every packet in both directions, and
 * TUNSETOFFLOAD lets the kernel hand us unchecksummed TSO/USO super-packets.
 * JS never sees any of that: tunRead splits super-packets into plain packets
 * (native/offload.c) and tunWrite adds the header (and coalesces TCP runs).
 */
#include "common.h"
#include "offload.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* linux/if.h and net/if.h conflict; if_nametoindex is all we need from the
 * latter. */
extern unsigned int if_nametoindex(const char *ifname);

#define TUN_PATH "/dev/net/tun"

/* Newer than some installed kernel headers (Linux 6.2). */
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

napi_status init_offload(napi_env env, napi_value exports);

/* One read of an offload queue: the vnet header and a packet of at most
 * 64 KiB (the TUN device's default gso_max_size), with slack so that a read
 * filling the whole buffer can be recognised as truncated. */
#define OFFLOAD_SCRATCH (VNET_HDR_LEN + 65536 + 512)

/* Per-queue state of an offload queue: the read scratch holding the current
 * super-packet, how far it has been handed out, and counters. Kept in a list
 * per environment (the owned_fd registry has no room for it), found by fd.
 * An entry whose fd was closed is dropped on the next tunOpen; since fd
 * numbers are unique among open descriptors and every TUN fd comes from
 * tunOpen, the entry found for a live TUN fd is always its own. */
typedef struct tun_queue {
  int fd;
  unsigned gro; /* what gro_plan may coalesce (GRO_TCP, GRO_UDP), 0 for nothing */
  uint8_t *scratch;
  seg_state seg;
  uint64_t reads, super_packets, segments, dropped;
  uint64_t writes, coalesced_writes, coalesced_packets, gro_refused;
  struct tun_queue *next;
} tun_queue;

typedef struct tun_env {
  tun_queue *queues;
} tun_env;

static void queue_free(tun_queue *q) {
  free(q->scratch);
  free(q);
}

static void tun_env_cleanup(void *arg) {
  tun_env *te = arg;
  while (te->queues != NULL) {
    tun_queue *q = te->queues;
    te->queues = q->next;
    queue_free(q);
  }
  free(te);
}

static tun_env *tun_env_of(napi_env env, napi_callback_info info) {
  void *data = NULL;
  napi_get_cb_info(env, info, NULL, NULL, NULL, &data);
  return data;
}

static tun_queue *queue_of(tun_env *te, int fd) {
  for (tun_queue *q = te->queues; q != NULL; q = q->next)
    if (q->fd == fd) return q;
  return NULL;
}

/* Drops entries whose descriptor is no longer an open TUN fd of this
 * environment, and any entry for `fd` (about to be reused). */
static void queues_prune(tun_env *te, addon_state *st, int fd) {
  tun_queue **pp = &te->queues;
  while (*pp != NULL) {
    tun_queue *q = *pp;
    owned_fd *e = fd_lookup(st, q->fd);
    if (q->fd == fd || e == NULL || e->kind != FD_KIND_TUN) {
      *pp = q->next;
      queue_free(q);
    } else {
      pp = &q->next;
    }
  }
}

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

/* Enables checksum and segmentation offload on a queue opened with
 * IFF_VNET_HDR: TSO for IPv4 and IPv6, and UDP segmentation when the kernel
 * has it (6.2+; it takes USO4 and USO6 only together). Returns the flags the
 * kernel accepted, 0 when it refused them all. */
static unsigned int enable_offload(int fd) {
  int size = VNET_HDR_LEN;
  if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) return 0;
  static const unsigned int wanted[] = {
      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
  };
  for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++)
    if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)wanted[i]) == 0) return wanted[i];
  return 0;
}

/* The TUN flags of an existing device (sysfs tun_flags), -1 when unknown. */
static long existing_tun_flags(const char *name) {
  char path[64 + IFNAMSIZ], buf[32];
  snprintf(path, sizeof(path), "/sys/class/net/%s/tun_flags", name);
  FILE *f = fopen(path, "re");
  if (f == NULL) return -1;
  long flags = -1;
  if (fgets(buf, sizeof(buf), f) != NULL) {
    char *end;
    flags = strtol(buf, &end, 16);
    if (end == buf) flags = -1;
  }
  fclose(f);
  return flags;
}

/* tunOpen(name, multiQueue, offload?, gro?) -> { fd, name, offload, uso }.
 * An empty name lets the kernel choose ("tun0", ...). With multiQueue, opening
 * the same name again adds a queue to the existing device. With offload, the
 * queue uses virtio-net headers and TSO/USO (see the top of this file); when
 * the kernel refuses the offloads the device is opened again without them and
 * `offload` is false. gro (default true) lets tunWrite coalesce TCP runs. */
static napi_value js_tun_open(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  size_t argc = 4;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 2)
    return throw_kind(env, ERR_TYPE, "ERR_MISSING_ARGS", "expected 2 arguments, got %zu", argc);
  napi_value undefined = make_undefined(env);
  for (size_t i = argc; i < 4; i++) argv[i] = undefined;
  char name[IFNAMSIZ];
  int multi, offload, no_gro = 0;
  if (arg_ifname(env, argv[0], 1, name) != 0) return NULL;
  if (arg_bool(env, argv[1], "multiQueue", &multi) != 0) return NULL;
  if (arg_bool(env, argv[2], "offload", &offload) != 0) return NULL;
  napi_valuetype gro_type;
  if (napi_typeof(env, argv[3], &gro_type) != napi_ok) return NULL;
  if (gro_type != napi_undefined && gro_type != napi_null) {
    int gro;
    if (arg_bool(env, argv[3], "gro", &gro) != 0) return NULL;
    no_gro = !gro;
  }
  tun_env *te = tun_env_of(env, info);
  if (multi && name[0] != 0) {
    /* The kernel applies a new queue's IFF_VNET_HDR to the whole device, so a
     * mismatched queue would silently change what the others read. */
    long existing = existing_tun_flags(name);
    if (existing >= 0 && ((existing & IFF_VNET_HDR) != 0) != (offload != 0))
      return throw_errno(env, EINVAL,
                         "cannot add a queue %s offload to '%s': its queues run %s it "
                         "(offload must match)",
                         offload ? "with" : "without", name, offload ? "without" : "with");
  }

  int fd;
  unsigned int accepted = 0;
  struct ifreq ifr;
again:
  fd = open(TUN_PATH, O_RDWR | O_NONBLOCK | O_CLOEXEC);
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

  memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (multi ? IFF_MULTI_QUEUE : 0) |
                  (offload ? IFF_VNET_HDR : 0);
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
  if (offload) {
    accepted = enable_offload(fd);
    if (accepted == 0) {
      /* No offloads: the same device without virtio headers is the plain
       * mode, so start over without them. */
      close(fd);
      offload = 0;
      goto again;
    }
  }

  addon_state *st = state_of(env);
  queues_prune(te, st, fd);
  tun_queue *q = NULL;
  if (offload) {
    q = calloc(1, sizeof(*q));
    if (q != NULL) q->scratch = malloc(OFFLOAD_SCRATCH);
    if (q == NULL || q->scratch == NULL) {
      if (q != NULL) queue_free(q);
      close(fd);
      return throw_errno(env, ENOMEM, "out of memory");
    }
    q->fd = fd;
    /* UDP runs only where the kernel does USO: it parses GSO_UDP_L4 headers
     * from 6.2 on, the release that added TUN_F_USO4/6. */
    q->gro = no_gro ? 0 : GRO_TCP | ((accepted & TUN_F_USO4) != 0 ? GRO_UDP : 0);
  }
  if (fd_register(st, fd, FD_KIND_TUN, 0) == NULL) {
    if (q != NULL) queue_free(q);
    close(fd);
    return throw_errno(env, ENOMEM, "out of memory");
  }
  if (q != NULL) {
    q->next = te->queues;
    te->queues = q;
  }
  napi_value out;
  if (napi_create_object(env, &out) != napi_ok || set_prop_int(env, out, "fd", fd) != 0 ||
      set_prop_str(env, out, "name", ifr.ifr_name) != 0 ||
      set_prop_bool(env, out, "offload", offload) != 0 ||
      set_prop_bool(env, out, "uso", (accepted & TUN_F_USO4) != 0) != 0) {
    fd_close(st, fd_lookup(st, fd));
    return NULL;
  }
  return out;
}

/* Offload read: packets still pending from the last super-packet first, then
 * fresh reads into the queue's scratch, each split into as many slots as it
 * needs. The kernel is read only while a slot is free, so packets are left
 * pending only when all `count` slots were filled. */
static napi_value offload_read(napi_env env, tun_queue *q, uint8_t *arena,
                               const uint32_t *offsets, uint32_t *lengths, uint64_t first,
                               uint64_t count, uint64_t room) {
  uint64_t n = 0;
  while (n < count) {
    uint64_t i = first + n;
    if (q->seg.mode != SEG_IDLE) {
      uint32_t len;
      int r = seg_next(&q->seg, arena + offsets[i], room, &len);
      if (r > 0) {
        lengths[i] = len;
        q->segments++;
        n++;
      } else if (r < 0) {
        q->dropped++;
      }
      continue;
    }
    ssize_t r = read(q->fd, q->scratch, OFFLOAD_SCRATCH);
    if (r < 0) {
      int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) break;
      if (n == 0) return throw_errno(env, e, "read from TUN fd %d failed", q->fd);
      break;
    }
    if (r == 0) break;
    q->reads++;
    if ((size_t)r >= OFFLOAD_SCRATCH || seg_begin(&q->seg, q->scratch, (size_t)r) != 0) {
      /* Truncated (larger than any GSO packet) or not splittable. */
      q->seg.mode = SEG_IDLE;
      q->dropped++;
      continue;
    }
    if (q->seg.mode == SEG_TCP || q->seg.mode == SEG_UDP) q->super_packets++;
  }
  return make_int(env, (int64_t)n);
}

/* tunRead(fd, arena, offsets, lengths, first, count, room) -> n
 * Reads up to `count` packets; packet i goes to arena[offsets[i]...] with at
 * most `room` bytes, its length to lengths[i]. Stops at the first EAGAIN.
 * On an offload queue a TCP super-packet is cut to fit `room` (a smaller MSS);
 * a UDP one whose datagrams do not fit is dropped; anything else longer than
 * room is truncated, as a plain read truncates it. */
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

  tun_queue *q = queue_of(tun_env_of(env, info), fd);
  if (q != NULL) return offload_read(env, q, arena, offsets, lengths, first, count, room);

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

/* Offload write: every packet goes with a virtio header in front (writev, no
 * copy). With gro, a run of TCP segments of one flow goes as one GSO
 * super-packet, every packet of the run getting the write's status; should
 * the kernel refuse a super-packet, its packets are written one by one. */
static napi_value offload_write(napi_env env, tun_queue *q, const uint8_t *arena,
                                const uint32_t *offsets, const uint32_t *lengths,
                                int32_t *status, uint64_t first, uint64_t count) {
  uint64_t n = 0, alone_until = 0;
  while (n < count) {
    uint64_t i = first + n;
    gro_group g;
    struct iovec iov[2 + GRO_MAX_SEGMENTS];
    gro_plan(&g, arena, offsets, lengths, i, n >= alone_until ? count - n : 1, q->gro);
    int niov = gro_iov(&g, iov, arena, offsets, lengths, i);
    ssize_t r = writev(q->fd, iov, niov);
    if (r < 0) {
      int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) break;
      if (e == EBADF) return throw_errno(env, e, "write to TUN fd %d failed", q->fd);
      if (g.count > 1) {
        q->gro_refused++;
        if (g.udp) q->gro &= ~GRO_UDP; /* not for this kernel after all: TCP runs only */
        alone_until = n + g.count;
        continue;
      }
      if (status != NULL) status[i] = -e;
    } else if (status != NULL) {
      for (size_t k = 0; k < g.count; k++) status[i + k] = 0;
    }
    q->writes++;
    if (g.count > 1) {
      q->coalesced_writes++;
      q->coalesced_packets += g.count;
    }
    n += g.count;
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

  tun_queue *q = queue_of(tun_env_of(env, info), fd);
  if (q != NULL) return offload_write(env, q, arena, offsets, lengths, status, first, count);

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

/* tunPending(fd) -> packets of a split super-packet still held by the addon
 * (always 0 without offload). They do not make the fd readable: the caller
 * reads again (see TunDevice.onReadable in src/native.ts). */
static napi_value js_tun_pending(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (arg_count(env, info, 1, argv) != 0 || arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (require_fd(env, fd, FD_KIND_TUN) == NULL) return NULL;
  tun_queue *q = queue_of(tun_env_of(env, info), fd);
  return make_int(env, q != NULL ? seg_pending(&q->seg) : 0);
}

/* tunOffloadStats(fd) -> counters of an offload queue, null without offload. */
static napi_value js_tun_offload_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (arg_count(env, info, 1, argv) != 0 || arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (require_fd(env, fd, FD_KIND_TUN) == NULL) return NULL;
  tun_queue *q = queue_of(tun_env_of(env, info), fd);
  napi_value out;
  if (q == NULL) {
    napi_get_null(env, &out);
    return out;
  }
  if (napi_create_object(env, &out) != napi_ok ||
      set_prop_int(env, out, "reads", (int64_t)q->reads) != 0 ||
      set_prop_int(env, out, "superPackets", (int64_t)q->super_packets) != 0 ||
      set_prop_int(env, out, "segments", (int64_t)q->segments) != 0 ||
      set_prop_int(env, out, "dropped", (int64_t)q->dropped) != 0 ||
      set_prop_int(env, out, "writes", (int64_t)q->writes) != 0 ||
      set_prop_int(env, out, "coalescedWrites", (int64_t)q->coalesced_writes) != 0 ||
      set_prop_int(env, out, "coalescedPackets", (int64_t)q->coalesced_packets) != 0 ||
      set_prop_int(env, out, "groRefused", (int64_t)q->gro_refused) != 0)
    return NULL;
  return out;
}

/* The TUN functions carry the per-environment queue list as function data. */
static napi_status export_with(napi_env env, napi_value exports, const char *name,
                               napi_callback fn, void *data) {
  napi_value value;
  napi_status s = napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, data, &value);
  if (s != napi_ok) return s;
  return napi_set_named_property(env, exports, name, value);
}

napi_status init_tun(napi_env env, napi_value exports) {
  tun_env *te = calloc(1, sizeof(*te));
  if (te == NULL) return napi_generic_failure;
  napi_status s = napi_add_env_cleanup_hook(env, tun_env_cleanup, te);
  if (s != napi_ok) {
    free(te);
    return s;
  }
  if ((s = export_with(env, exports, "tunOpen", js_tun_open, te)) != napi_ok ||
      (s = export_with(env, exports, "tunRead", js_tun_read, te)) != napi_ok ||
      (s = export_with(env, exports, "tunWrite", js_tun_write, te)) != napi_ok ||
      (s = export_with(env, exports, "tunPending", js_tun_pending, te)) != napi_ok ||
      (s = export_with(env, exports, "tunOffloadStats", js_tun_offload_stats, te)) != napi_ok ||
      (s = init_offload(env, exports)) != napi_ok)
    return s;
  EXPORT_FN(env, exports, "linkSetMtu", js_link_set_mtu);
  EXPORT_FN(env, exports, "linkGetMtu", js_link_get_mtu);
  EXPORT_FN(env, exports, "linkSetUp", js_link_set_up);
  EXPORT_FN(env, exports, "linkIndex", js_link_index);
  return napi_ok;
}
