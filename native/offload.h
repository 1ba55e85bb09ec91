/*
 * TUN offload (IFF_VNET_HDR): the internet checksum, splitting the kernel's
 * GSO super-packets into MTU-sized packets (read side) and coalescing runs of
 * TCP segments into super-packets (write side). Pure functions over byte
 * buffers; native/tun.c does the I/O.
 */
#ifndef EDGETUN_OFFLOAD_H
#define EDGETUN_OFFLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* The legacy virtio_net_hdr (kernel ABI, include/uapi/linux/virtio_net.h):
 * 10 bytes, 16-bit fields in host byte order on a TUN device that was not
 * switched to TUNSETVNETLE/BE. We use exactly this size (TUNSETVNETHDRSZ 10):
 * no num_buffers field, since TUN never merges receive buffers. */
#define VNET_HDR_LEN 10

#define VNET_F_NEEDS_CSUM 1
#define VNET_F_DATA_VALID 2

#define VNET_GSO_NONE 0
#define VNET_GSO_TCPV4 1
#define VNET_GSO_UDP 3 /* UFO: IP fragmentation, never asked for */
#define VNET_GSO_TCPV6 4
#define VNET_GSO_UDP_L4 5 /* USO: one UDP header per gso_size chunk */
#define VNET_GSO_ECN 0x80

typedef struct vnet_hdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
} vnet_hdr;

void vnet_hdr_get(vnet_hdr *h, const uint8_t *p);
void vnet_hdr_put(uint8_t *p, const vnet_hdr *h);

/* ---- RFC 1071 internet checksum ----
 * Sums are kept unfolded in 64 bits and in "memory order": 16-bit words are
 * loaded in host byte order, which the one's-complement sum is indifferent
 * to as long as the folded result is stored back the same way (csum_store).
 * A region of odd length is summed as if padded with one zero byte, so
 * regions must be summed in one piece or split at even offsets. */
uint64_t csum_add(uint64_t sum, const uint8_t *p, size_t len);
uint16_t csum_fold(uint64_t sum); /* folded, not complemented */
/* Stores ~fold(sum) (the checksum field value) at p, in wire order. */
void csum_store(uint8_t *p, uint64_t sum);
/* Pseudo-header sums for TCP/UDP over IPv4 (RFC 793/768) and IPv6 (RFC 8200
 * 8.1), addresses taken from the IP header at ip. */
uint64_t csum_pseudo4(const uint8_t *ip, uint8_t proto, uint32_t l4_len);
uint64_t csum_pseudo6(const uint8_t *ip, uint8_t proto, uint32_t l4_len);

/* ---- read side: one packet read with a vnet header -> packets ---- */
enum seg_mode { SEG_IDLE = 0, SEG_COPY, SEG_TCP, SEG_UDP };

typedef struct seg_state {
  uint8_t *pkt; /* the IP packet (after the vnet header), checksummed in place */
  size_t len;         /* its length, trimmed to the IP header's own */
  int mode;
  int v6;
  uint8_t proto;
  int csum;      /* SEG_COPY: 0 none, 1 full TCP/UDP, 2 generic virtio rule */
  size_t l4;     /* transport header offset */
  size_t hdr;    /* bytes of headers copied into every segment */
  size_t mss;    /* gso_size: payload bytes per segment */
  size_t pos;    /* payload bytes handed out so far */
  uint32_t seg;  /* segments handed out so far */
  uint16_t csum_start, csum_offset;
} seg_state;

/* Parses buf (vnet header ‖ packet, n bytes). 0 and s->mode != SEG_IDLE on
 * success; -1 for a packet that cannot be split or checksummed (drop it). */
int seg_begin(seg_state *s, uint8_t *buf, size_t n);
/* Writes the next packet (at most room bytes) to out. 1 with *out_len set,
 * 0 when the packet is used up (s->mode becomes SEG_IDLE), -1 when the rest
 * cannot be made to fit room (s->mode becomes SEG_IDLE; drop). */
int seg_next(seg_state *s, uint8_t *out, size_t room, uint32_t *out_len);
/* Packets still to come from s (0 when idle). */
uint32_t seg_pending(const seg_state *s);

/* ---- write side: coalescing TCP segments and UDP datagrams ---- */
#define GRO_MAX_SEGMENTS 64 /* also the kernel's limit for a UDP super-packet */
#define GRO_MAX_HEAD 120 /* IPv4 header without options or IPv6 + TCP with options */

typedef struct gro_group {
  size_t count;     /* packets in the group, >= 1 */
  int udp;          /* a UDP (USO) super-packet: a kernel before 6.2 refuses those */
  uint8_t vnet[VNET_HDR_LEN];
  uint8_t head[GRO_MAX_HEAD]; /* the super-packet's headers (count >= 2) */
  size_t head_len;  /* IP + TCP/UDP header bytes, the same in every member */
} gro_group;

/* What gro_plan may coalesce. */
#define GRO_TCP 1u
#define GRO_UDP 2u

/* Plans the group starting at packets[first]: how many of the following
 * packets (at most max) coalesce with it into one super-packet, of the kinds
 * allowed. count == 1 means "write it alone" (vnet is zeroed then).
 * packets[i] = arena + offsets[i], lengths[i]. */
void gro_plan(gro_group *g, const uint8_t *arena, const uint32_t *offsets,
              const uint32_t *lengths, size_t first, size_t max, unsigned kinds);
/* iovecs for writing group g (at most 2 + GRO_MAX_SEGMENTS); returns how many. */
int gro_iov(gro_group *g, struct iovec *iov, const uint8_t *arena, const uint32_t *offsets,
            const uint32_t *lengths, size_t first);

#endif
