/*
 * TUN offload: the byte-level half of IFF_VNET_HDR mode (see offload.h).
 *
 * Read side. With TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 (| USO) the kernel hands
 * the TUN reader what it would hand a NIC: a virtio_net_hdr and a packet of
 * up to 64 KiB whose transport checksum is only seeded (NEEDS_CSUM) and which,
 * for GSO, still has to be cut into gso_size pieces. seg_begin/seg_next do
 * what the NIC would: per piece, copy the headers, fix IP lengths, the IPv4
 * ID and header checksum, the TCP sequence number and flags, and compute the
 * complete TCP/UDP checksum in software.
 *
 * Write side. gro_plan finds runs of consecutive, checksum-valid TCP segments
 * of one flow (contiguous sequence numbers, equal size but the last, identical
 * headers apart from lengths, IDs and sequence numbers), or of UDP datagrams
 * of one flow (equal size but the last, identical headers apart from lengths,
 * IDs and checksums), and describes them as one GSO super-packet, so the
 * receiving stack handles one 64 KiB packet instead of forty-five. Anything
 * else is written alone with a zeroed header.
 *
 * Also three functions for the tests (offloadChecksum, offloadSegment,
 * offloadCoalesce) that run the same code on buffers given from JS.
 */
#include "common.h"
#include "offload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PROTO_TCP 6
#define PROTO_UDP 17

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_CWR 0x80

static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static inline void put16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static inline uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

void vnet_hdr_get(vnet_hdr *h, const uint8_t *p) {
  h->flags = p[0];
  h->gso_type = p[1];
  memcpy(&h->hdr_len, p + 2, 2);
  memcpy(&h->gso_size, p + 4, 2);
  memcpy(&h->csum_start, p + 6, 2);
  memcpy(&h->csum_offset, p + 8, 2);
}

void vnet_hdr_put(uint8_t *p, const vnet_hdr *h) {
  p[0] = h->flags;
  p[1] = h->gso_type;
  memcpy(p + 2, &h->hdr_len, 2);
  memcpy(p + 4, &h->gso_size, 2);
  memcpy(p + 6, &h->csum_start, 2);
  memcpy(p + 8, &h->csum_offset, 2);
}

/* ---- checksum ---- */

uint64_t csum_add(uint64_t sum, const uint8_t *p, size_t len) {
  /* 32-bit words into a 64-bit accumulator: a 32-bit word is two 16-bit words
   * and 2^16 = 1 (mod 2^16 - 1), so this is the RFC 1071 sum; 2^32 words fit
   * before the accumulator could overflow. memcpy: no alignment assumed. */
  while (len >= 16) {
    uint32_t w[4];
    memcpy(w, p, 16);
    sum += (uint64_t)w[0] + w[1] + w[2] + w[3];
    p += 16;
    len -= 16;
  }
  while (len >= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    sum += w;
    p += 4;
    len -= 4;
  }
  if (len >= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    sum += w;
    p += 2;
    len -= 2;
  }
  if (len == 1) {
    /* The odd byte is the first (high-order on the wire) byte of a word whose
     * second byte is zero; building that word in memory keeps the byte order
     * right on any host. */
    uint8_t last[2] = {p[0], 0};
    uint16_t w;
    memcpy(&w, last, 2);
    sum += w;
  }
  return sum;
}

uint16_t csum_fold(uint64_t sum) {
  sum = (sum & 0xffffffffu) + (sum >> 32); /* < 2^33 */
  sum = (sum & 0xffffffffu) + (sum >> 32); /* <= 2^32 */
  sum = (sum & 0xffffu) + (sum >> 16);     /* <= 0x1ffff */
  sum = (sum & 0xffffu) + (sum >> 16);     /* <= 0x10000 */
  sum = (sum & 0xffffu) + (sum >> 16);     /* <= 0xffff */
  return (uint16_t)sum;
}

void csum_store(uint8_t *p, uint64_t sum) {
  uint16_t c = (uint16_t)~csum_fold(sum);
  memcpy(p, &c, 2);
}

/* A host-order 16-bit value as the memory-order word the sums work on. */
static inline uint64_t word(uint32_t v) { return htons((uint16_t)v); }

uint64_t csum_pseudo4(const uint8_t *ip, uint8_t proto, uint32_t l4_len) {
  /* source ‖ destination ‖ zero ‖ protocol ‖ TCP/UDP length */
  return csum_add(0, ip + 12, 8) + word(proto) + word(l4_len >> 16) + word(l4_len & 0xffff);
}

uint64_t csum_pseudo6(const uint8_t *ip, uint8_t proto, uint32_t l4_len) {
  /* source ‖ destination ‖ 32-bit length ‖ 3 zero bytes ‖ next header */
  return csum_add(0, ip + 8, 32) + word(l4_len >> 16) + word(l4_len & 0xffff) + word(proto);
}

static uint64_t pseudo(int v6, const uint8_t *ip, uint8_t proto, uint32_t l4_len) {
  return v6 ? csum_pseudo6(ip, proto, l4_len) : csum_pseudo4(ip, proto, l4_len);
}

static void ipv4_header_checksum(uint8_t *ip) {
  size_t ihl = (size_t)(ip[0] & 15) * 4;
  put16(ip + 10, 0);
  csum_store(ip + 10, csum_add(0, ip, ihl));
}

/* Full TCP or UDP checksum of the transport segment at ip + l4 (to ip + len). */
static void l4_checksum(uint8_t *ip, int v6, uint8_t proto, size_t l4, size_t len) {
  uint8_t *th = ip + l4;
  uint8_t *field = th + (proto == PROTO_TCP ? 16 : 6);
  uint32_t l4_len = (uint32_t)(len - l4);
  put16(field, 0);
  uint64_t sum = pseudo(v6, ip, proto, l4_len) + csum_add(0, th, l4_len);
  uint16_t c = (uint16_t)~csum_fold(sum);
  /* UDP sends a computed zero as all ones; zero means "no checksum". */
  if (proto == PROTO_UDP && c == 0) c = 0xffff;
  memcpy(field, &c, 2);
}

/* ---- parsing ---- */

/* The transport protocol and its offset in an IPv6 packet, past extension
 * headers; -1 for a fragment or a chain we do not follow. */
static int v6_transport(const uint8_t *pkt, size_t len, uint8_t *proto, size_t *off) {
  uint8_t next = pkt[6];
  size_t at = 40;
  for (int hops = 0; hops < 8; hops++) {
    size_t ext;
    switch (next) {
      case 0:  /* hop-by-hop options */
      case 43: /* routing */
      case 60: /* destination options */
        if (at + 8 > len) return -1;
        ext = ((size_t)pkt[at + 1] + 1) * 8;
        break;
      case 51: /* authentication header */
        if (at + 8 > len) return -1;
        ext = ((size_t)pkt[at + 1] + 2) * 4;
        break;
      case 44: /* fragment */
        return -1;
      default:
        *proto = next;
        *off = at;
        return at <= len ? 0 : -1;
    }
    next = pkt[at];
    at += ext;
  }
  return -1;
}

/* Version, length (trimmed to what the IP header says), transport protocol and
 * offset of an unfragmented IPv4/IPv6 packet; -1 otherwise. */
static int parse_ip(const uint8_t *pkt, size_t *len, int *v6, uint8_t *proto, size_t *l4) {
  if (*len < 1) return -1;
  int version = pkt[0] >> 4;
  if (version == 4) {
    if (*len < 20) return -1;
    size_t ihl = (size_t)(pkt[0] & 15) * 4;
    size_t total = get16(pkt + 2);
    if (ihl < 20 || total < ihl || total > *len) return -1;
    if ((get16(pkt + 6) & 0x3fff) != 0) return -1; /* MF or a fragment offset */
    *len = total;
    *v6 = 0;
    *proto = pkt[9];
    *l4 = ihl;
    return 0;
  }
  if (version == 6) {
    if (*len < 40) return -1;
    size_t total = 40 + (size_t)get16(pkt + 4);
    if (total > *len) return -1;
    *len = total;
    *v6 = 1;
    return v6_transport(pkt, total, proto, l4);
  }
  return -1;
}

/* ---- read side ---- */

int seg_begin(seg_state *s, uint8_t *buf, size_t n) {
  memset(s, 0, sizeof(*s));
  if (n <= VNET_HDR_LEN) return -1;
  vnet_hdr h;
  vnet_hdr_get(&h, buf);
  s->pkt = buf + VNET_HDR_LEN;
  s->len = n - VNET_HDR_LEN;
  s->csum_start = h.csum_start;
  s->csum_offset = h.csum_offset;
  int gso = h.gso_type & ~VNET_GSO_ECN;
  int needs_csum = (h.flags & VNET_F_NEEDS_CSUM) != 0;

  if (gso == VNET_GSO_NONE) {
    s->mode = SEG_COPY;
    if (!needs_csum) return 0; /* as is, exactly as without offload */
    size_t len = s->len;
    if (parse_ip(s->pkt, &len, &s->v6, &s->proto, &s->l4) == 0 && s->l4 == h.csum_start &&
        ((s->proto == PROTO_TCP && h.csum_offset == 16 && s->l4 + 20 <= len) ||
         (s->proto == PROTO_UDP && h.csum_offset == 6 && s->l4 + 8 <= len))) {
      s->len = len;
      s->csum = 1;
      return 0;
    }
    /* Something else with a partial checksum: the virtio rule, sum from
     * csum_start to the end (the field holds the seed) and store it there. */
    if ((size_t)h.csum_start + h.csum_offset + 2 > s->len) return -1;
    s->csum = 2;
    return 0;
  }

  size_t len = s->len;
  if (parse_ip(s->pkt, &len, &s->v6, &s->proto, &s->l4) != 0) return -1;
  s->len = len;
  if ((needs_csum && s->l4 != h.csum_start) || h.gso_size == 0) return -1;
  s->mss = h.gso_size;
  if (gso == VNET_GSO_TCPV4 || gso == VNET_GSO_TCPV6) {
    if ((gso == VNET_GSO_TCPV6) != s->v6 || s->proto != PROTO_TCP || s->l4 + 20 > len) return -1;
    size_t doff = (size_t)(s->pkt[s->l4 + 12] >> 4) * 4;
    if (doff < 20 || s->l4 + doff > len) return -1;
    s->hdr = s->l4 + doff;
    s->mode = SEG_TCP;
    return 0;
  }
  if (gso == VNET_GSO_UDP_L4) {
    if (s->proto != PROTO_UDP || s->l4 + 8 > len) return -1;
    s->hdr = s->l4 + 8;
    s->mode = SEG_UDP;
    return 0;
  }
  return -1; /* UFO or unknown: never negotiated */
}

static void fix_ip(const seg_state *s, uint8_t *ip, size_t seg_len) {
  if (s->v6) {
    put16(ip + 4, (uint32_t)(seg_len - 40));
  } else {
    put16(ip + 2, (uint32_t)seg_len);
    put16(ip + 4, get16(ip + 4) + s->seg); /* the ID goes up by one per segment */
    ipv4_header_checksum(ip);
  }
}

int seg_next(seg_state *s, uint8_t *out, size_t room, uint32_t *out_len) {
  if (s->mode == SEG_IDLE) return 0;
  if (s->mode == SEG_COPY) {
    /* The checksum goes in first, over the whole packet, so that a packet
     * longer than room is truncated like a plain read would truncate it. */
    uint8_t *pkt = s->pkt;
    if (s->csum == 1) {
      l4_checksum(pkt, s->v6, s->proto, s->l4, s->len);
    } else if (s->csum == 2) {
      uint64_t sum = csum_add(0, pkt + s->csum_start, s->len - s->csum_start);
      csum_store(pkt + s->csum_start + s->csum_offset, sum);
    }
    size_t n = s->len < room ? s->len : room;
    memcpy(out, pkt, n);
    *out_len = (uint32_t)n;
    s->mode = SEG_IDLE;
    return 1;
  }

  size_t total = s->len - s->hdr;
  if (s->pos >= total && s->seg > 0) {
    s->mode = SEG_IDLE;
    return 0;
  }
  size_t n = total - s->pos;
  if (n > s->mss) n = s->mss;
  if (room <= s->hdr) {
    s->mode = SEG_IDLE;
    return -1;
  }
  if (n > room - s->hdr) {
    /* TCP may be cut finer than the sender asked (a smaller MSS is always
     * allowed); a UDP datagram may not. */
    if (s->mode == SEG_UDP) {
      s->mode = SEG_IDLE;
      return -1;
    }
    n = room - s->hdr;
  }
  int last = s->pos + n >= total;
  size_t seg_len = s->hdr + n;
  memcpy(out, s->pkt, s->hdr);
  memcpy(out + s->hdr, s->pkt + s->hdr + s->pos, n);
  fix_ip(s, out, seg_len);
  uint8_t *th = out + s->l4;
  if (s->mode == SEG_TCP) {
    put32(th + 4, get32(th + 4) + (uint32_t)s->pos);
    uint8_t flags = th[13];
    if (s->seg > 0) flags &= (uint8_t)~TCP_CWR; /* congestion window reduced: said once */
    if (!last) flags &= (uint8_t)~(TCP_FIN | TCP_PSH);
    th[13] = flags;
  } else {
    put16(th + 4, (uint32_t)(8 + n));
  }
  l4_checksum(out, s->v6, s->proto, s->l4, seg_len);
  *out_len = (uint32_t)seg_len;
  s->pos += n;
  s->seg++;
  if (last) s->mode = SEG_IDLE;
  return 1;
}

uint32_t seg_pending(const seg_state *s) {
  if (s->mode == SEG_IDLE) return 0;
  if (s->mode == SEG_COPY) return 1;
  size_t left = s->len - s->hdr - s->pos;
  if (left == 0) return s->seg == 0 ? 1 : 0;
  return (uint32_t)((left + s->mss - 1) / s->mss);
}

/* ---- write side ---- */

typedef struct tcp_view {
  const uint8_t *p;
  size_t len;
  int v6;
  size_t l4;
  size_t hdr;
  size_t payload;
  uint32_t seq;
  uint8_t flags;
} tcp_view;

typedef struct udp_view {
  const uint8_t *p;
  size_t len;
  int v6;
  size_t l4;
  size_t payload;
} udp_view;

/* A TCP segment that may take part in coalescing: plain IPv4 (no options, not
 * a fragment) or IPv6 without extension headers, lengths consistent, a
 * payload, only ACK (and PSH) set, valid checksums. */
static int gro_candidate(tcp_view *v, const uint8_t *p, size_t len) {
  if (len < 40) return -1;
  if (p[0] == 0x45) {
    if (p[9] != PROTO_TCP || get16(p + 2) != len || (get16(p + 6) & 0x3fff) != 0) return -1;
    if (csum_fold(csum_add(0, p, 20)) != 0xffff) return -1;
    v->v6 = 0;
    v->l4 = 20;
  } else if ((p[0] >> 4) == 6) {
    if (len < 60 || p[6] != PROTO_TCP || 40 + (size_t)get16(p + 4) != len) return -1;
    v->v6 = 1;
    v->l4 = 40;
  } else {
    return -1;
  }
  const uint8_t *th = p + v->l4;
  size_t doff = (size_t)(th[12] >> 4) * 4;
  if (doff < 20 || v->l4 + doff >= len || v->l4 + doff > GRO_MAX_HEAD) return -1;
  if ((th[13] & ~(TCP_ACK | TCP_PSH)) != 0 || (th[13] & TCP_ACK) == 0) return -1;
  v->p = p;
  v->len = len;
  v->hdr = v->l4 + doff;
  v->payload = len - v->hdr;
  v->seq = get32(th + 4);
  v->flags = th[13];
  return 0;
}

static int tcp_checksum_valid(const tcp_view *v) {
  uint32_t l4_len = (uint32_t)(v->len - v->l4);
  uint64_t sum = pseudo(v->v6, v->p, PROTO_TCP, l4_len) + csum_add(0, v->p + v->l4, l4_len);
  return csum_fold(sum) == 0xffff;
}

/* Same flow and headers that may share one super-packet header: what the
 * kernel's own GRO compares (addresses, ports, ack, TCP options) plus the IP
 * fields that would otherwise be lost (TOS/traffic class, TTL, DF). */
static int gro_same(const tcp_view *a, const tcp_view *b) {
  if (a->v6 != b->v6 || a->hdr != b->hdr) return 0;
  const uint8_t *p = a->p, *q = b->p;
  if (a->v6) {
    if (memcmp(p, q, 4) != 0 || p[7] != q[7] || memcmp(p + 8, q + 8, 32) != 0) return 0;
  } else {
    if (p[1] != q[1] || p[6] != q[6] || p[8] != q[8] || memcmp(p + 12, q + 12, 8) != 0)
      return 0;
  }
  const uint8_t *t = p + a->l4, *u = q + b->l4;
  return memcmp(t, u, 4) == 0 && memcmp(t + 8, u + 8, 4) == 0 &&
         memcmp(t + 20, u + 20, a->hdr - a->l4 - 20) == 0;
}

/* A UDP datagram that may take part in coalescing: plain IPv4 (no options,
 * not a fragment, a valid header checksum) or IPv6 without extension headers,
 * the UDP length equal to what the IP header says, a payload, and a checksum
 * that is present (an IPv4 zero means none, which a super-packet could not
 * keep) and valid. */
static int udp_candidate(udp_view *v, const uint8_t *p, size_t len) {
  if (len < 29) return -1;
  if (p[0] == 0x45) {
    if (p[9] != PROTO_UDP || get16(p + 2) != len || (get16(p + 6) & 0x3fff) != 0) return -1;
    if (csum_fold(csum_add(0, p, 20)) != 0xffff) return -1;
    v->v6 = 0;
    v->l4 = 20;
  } else if ((p[0] >> 4) == 6) {
    if (len < 49 || p[6] != PROTO_UDP || 40 + (size_t)get16(p + 4) != len) return -1;
    v->v6 = 1;
    v->l4 = 40;
  } else {
    return -1;
  }
  const uint8_t *uh = p + v->l4;
  if (get16(uh + 4) != len - v->l4 || get16(uh + 6) == 0) return -1;
  v->p = p;
  v->len = len;
  v->payload = len - v->l4 - 8;
  return 0;
}

static int udp_checksum_valid(const udp_view *v) {
  uint32_t l4_len = (uint32_t)(v->len - v->l4);
  uint64_t sum = pseudo(v->v6, v->p, PROTO_UDP, l4_len) + csum_add(0, v->p + v->l4, l4_len);
  return csum_fold(sum) == 0xffff;
}

/* Datagram k of a run led by a that may share its super-packet header: the
 * same addresses, ports and IP fields the segmentation copies into every
 * datagram (TOS/traffic class and flow label, TTL/hop limit, DF). Without DF
 * the IPv4 IDs must count up by one, as the segmentation will number them
 * (with DF, IDs carry nothing, RFC 6864, and the kernel's UDP GRO ignores
 * them too). */
static int udp_same(const udp_view *a, const udp_view *b, size_t k) {
  if (a->v6 != b->v6) return 0;
  const uint8_t *p = a->p, *q = b->p;
  if (a->v6) {
    if (memcmp(p, q, 4) != 0 || p[7] != q[7] || memcmp(p + 8, q + 8, 32) != 0) return 0;
  } else {
    if (p[1] != q[1] || p[6] != q[6] || p[8] != q[8] || memcmp(p + 12, q + 12, 8) != 0)
      return 0;
    if ((p[6] & 0x40) == 0 && (uint16_t)(get16(p + 4) + k) != get16(q + 4)) return 0;
  }
  return memcmp(p + a->l4, q + b->l4, 4) == 0;
}

/* The TCP half of gro_plan: a run of segments of one flow with contiguous
 * sequence numbers, equal payloads but the last, no PSH but on the last. */
static void plan_tcp(gro_group *g, const tcp_view *lead, const uint8_t *arena,
                     const uint32_t *offsets, const uint32_t *lengths, size_t first,
                     size_t max) {
  if ((lead->flags & TCP_PSH) != 0) return;
  /* The next packet is looked at before the checksum of the first is
   * verified: most packets that cannot lead a group are not checksummed. */
  size_t mss = lead->payload;
  size_t total = lead->len;
  uint32_t next_seq = lead->seq + (uint32_t)mss;
  uint8_t last_flags = lead->flags;
  size_t k = 1;
  int lead_checked = 0;
  while (k < max && k < GRO_MAX_SEGMENTS) {
    tcp_view v;
    size_t i = first + k;
    if (gro_candidate(&v, arena + offsets[i], lengths[i]) != 0 || !gro_same(lead, &v) ||
        v.seq != next_seq || v.payload > mss || total + v.payload > 65535)
      break;
    if (!lead_checked) {
      if (!tcp_checksum_valid(lead)) return;
      lead_checked = 1;
    }
    if (!tcp_checksum_valid(&v)) break;
    total += v.payload;
    next_seq += (uint32_t)v.payload;
    last_flags = v.flags;
    k++;
    if (v.payload < mss || (v.flags & TCP_PSH) != 0) break;
  }
  if (k < 2) return;

  g->count = k;
  g->head_len = lead->hdr;
  memcpy(g->head, lead->p, lead->hdr);
  uint8_t *ip = g->head;
  if (lead->v6) {
    put16(ip + 4, (uint32_t)(total - 40));
  } else {
    put16(ip + 2, (uint32_t)total);
    ipv4_header_checksum(ip);
  }
  uint8_t *th = ip + lead->l4;
  th[13] |= last_flags & TCP_PSH;
  /* CHECKSUM_PARTIAL convention: the field holds the folded pseudo-header sum
   * (not complemented); the stack adds the rest from csum_start on. */
  uint16_t seed = csum_fold(pseudo(lead->v6, ip, PROTO_TCP, (uint32_t)(total - lead->l4)));
  memcpy(th + 16, &seed, 2);
  vnet_hdr h = {
      .flags = VNET_F_NEEDS_CSUM,
      .gso_type = lead->v6 ? VNET_GSO_TCPV6 : VNET_GSO_TCPV4,
      .hdr_len = (uint16_t)lead->hdr,
      .gso_size = (uint16_t)mss,
      .csum_start = (uint16_t)lead->l4,
      .csum_offset = 16,
  };
  vnet_hdr_put(g->vnet, &h);
}

/* The UDP half of gro_plan (USO, VIRTIO_NET_HDR_GSO_UDP_L4): a run of
 * datagrams of one flow with equal payloads but the last, which may be
 * shorter and ends the run. The kernel cuts the super-packet at gso_size and
 * gives every piece its own UDP length and checksum, so each datagram comes
 * out as it went in. */
static void plan_udp(gro_group *g, const udp_view *lead, const uint8_t *arena,
                     const uint32_t *offsets, const uint32_t *lengths, size_t first,
                     size_t max) {
  size_t size = lead->payload;
  size_t total = lead->len;
  size_t k = 1;
  int lead_checked = 0;
  while (k < max && k < GRO_MAX_SEGMENTS) {
    udp_view v;
    size_t i = first + k;
    if (udp_candidate(&v, arena + offsets[i], lengths[i]) != 0 || !udp_same(lead, &v, k) ||
        v.payload > size || total + v.payload > 65535)
      break;
    if (!lead_checked) {
      if (!udp_checksum_valid(lead)) return;
      lead_checked = 1;
    }
    if (!udp_checksum_valid(&v)) break;
    total += v.payload;
    k++;
    if (v.payload < size) break;
  }
  if (k < 2) return;

  size_t hdr = lead->l4 + 8;
  g->count = k;
  g->udp = 1;
  g->head_len = hdr;
  memcpy(g->head, lead->p, hdr);
  uint8_t *ip = g->head;
  if (lead->v6) {
    put16(ip + 4, (uint32_t)(total - 40));
  } else {
    put16(ip + 2, (uint32_t)total);
    ipv4_header_checksum(ip);
  }
  uint8_t *uh = ip + lead->l4;
  put16(uh + 4, (uint32_t)(total - lead->l4));
  /* The seed as for TCP; the segmentation swaps the super-packet's UDP length
   * in it for each piece's. */
  uint16_t seed = csum_fold(pseudo(lead->v6, ip, PROTO_UDP, (uint32_t)(total - lead->l4)));
  memcpy(uh + 6, &seed, 2);
  vnet_hdr h = {
      .flags = VNET_F_NEEDS_CSUM,
      .gso_type = VNET_GSO_UDP_L4,
      .hdr_len = (uint16_t)hdr,
      .gso_size = (uint16_t)size,
      .csum_start = (uint16_t)lead->l4,
      .csum_offset = 6,
  };
  vnet_hdr_put(g->vnet, &h);
}

void gro_plan(gro_group *g, const uint8_t *arena, const uint32_t *offsets,
              const uint32_t *lengths, size_t first, size_t max, unsigned kinds) {
  g->count = 1;
  g->udp = 0;
  g->head_len = 0;
  memset(g->vnet, 0, sizeof(g->vnet));
  if (max < 2) return;
  const uint8_t *p = arena + offsets[first];
  tcp_view tcp;
  udp_view udp;
  if ((kinds & GRO_TCP) != 0 && gro_candidate(&tcp, p, lengths[first]) == 0)
    plan_tcp(g, &tcp, arena, offsets, lengths, first, max);
  else if ((kinds & GRO_UDP) != 0 && udp_candidate(&udp, p, lengths[first]) == 0)
    plan_udp(g, &udp, arena, offsets, lengths, first, max);
}

int gro_iov(gro_group *g, struct iovec *iov, const uint8_t *arena, const uint32_t *offsets,
            const uint32_t *lengths, size_t first) {
  iov[0].iov_base = g->vnet;
  iov[0].iov_len = VNET_HDR_LEN;
  if (g->count == 1) {
    iov[1].iov_base = (void *)(arena + offsets[first]);
    iov[1].iov_len = lengths[first];
    return 2;
  }
  iov[1].iov_base = g->head;
  iov[1].iov_len = g->head_len;
  for (size_t k = 0; k < g->count; k++) {
    iov[2 + k].iov_base = (void *)(arena + offsets[first + k] + g->head_len);
    iov[2 + k].iov_len = lengths[first + k] - g->head_len;
  }
  return (int)(2 + g->count);
}

/* ---- test entry points ---- */

/* offloadChecksum(bytes, seed?) -> the 16-bit checksum field value (as a
 * big-endian number) for bytes, with `seed` (a 16-bit wire-order sum) added. */
static napi_value js_checksum(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc = 2;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1)
    return throw_kind(env, ERR_TYPE, "ERR_MISSING_ARGS", "expected at least 1 argument");
  uint8_t *data;
  size_t len;
  uint64_t seed = 0;
  if (arg_bytes(env, argv[0], "bytes", &data, &len) != 0) return NULL;
  if (argc > 1 && arg_uint(env, argv[1], "seed", 0xffff, &seed) != 0) return NULL;
  uint8_t field[2];
  csum_store(field, csum_add(word((uint32_t)seed), data, len));
  return make_int(env, get16(field));
}

static napi_value buffer_array(napi_env env, uint8_t *const *bufs, const size_t *lens,
                               size_t count) {
  napi_value out;
  if (napi_create_array_with_length(env, count, &out) != napi_ok) return NULL;
  for (size_t k = 0; k < count; k++) {
    napi_value b;
    void *copy;
    if (napi_create_buffer_copy(env, lens[k], bufs[k], &copy, &b) != napi_ok ||
        napi_set_element(env, out, (uint32_t)k, b) != napi_ok)
      return NULL;
  }
  return out;
}

/* offloadSegment(vnetHdrAndPacket, room) -> Buffer[] (what a read would hand
 * out, in order) or null when the packet would be dropped. */
static napi_value js_segment(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (arg_count(env, info, 2, argv) != 0) return NULL;
  uint8_t *data;
  size_t len;
  uint64_t room;
  if (arg_bytes(env, argv[0], "input", &data, &len) != 0 ||
      arg_uint(env, argv[1], "room", 1u << 20, &room) != 0)
    return NULL;
  if (room == 0) return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "room must be > 0");
  napi_value result = NULL;
  uint8_t *input = malloc(len + 1);
  uint8_t *out = malloc(room);
  uint8_t **bufs = calloc(1, sizeof(*bufs));
  size_t *lens = calloc(1, sizeof(*lens));
  size_t count = 0, cap = 1;
  int failed = input == NULL || out == NULL || bufs == NULL || lens == NULL;
  seg_state s;
  if (!failed) {
    memcpy(input, data, len);
    if (seg_begin(&s, input, len) != 0) goto dropped;
    for (;;) {
      uint32_t n;
      int r = seg_next(&s, out, room, &n);
      if (r < 0) goto dropped;
      if (r == 0) break;
      if (count == cap) {
        cap *= 2;
        uint8_t **nb = realloc(bufs, cap * sizeof(*bufs));
        if (nb != NULL) bufs = nb;
        size_t *nl = realloc(lens, cap * sizeof(*lens));
        if (nl != NULL) lens = nl;
        if (nb == NULL || nl == NULL) {
          failed = 1;
          break;
        }
      }
      bufs[count] = malloc(n ? n : 1);
      if (bufs[count] == NULL) {
        failed = 1;
        break;
      }
      memcpy(bufs[count], out, n);
      lens[count++] = n;
    }
    if (!failed) result = buffer_array(env, bufs, lens, count);
  }
  if (failed) throw_errno(env, ENOMEM, "out of memory");
  goto done;
dropped:
  napi_get_null(env, &result);
done:
  for (size_t k = 0; k < count; k++) free(bufs[k]);
  free(bufs);
  free(lens);
  free(out);
  free(input);
  return result;
}

/* offloadCoalesce(packets: Uint8Array[]) -> Buffer[]: what a write would send,
 * each element a vnet header followed by the (super-)packet. */
static napi_value js_coalesce(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (arg_count(env, info, 1, argv) != 0) return NULL;
  bool is_array = false;
  uint32_t count = 0;
  if (napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[0], &count) != napi_ok)
    return throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "packets must be an array");
  if (count > EDGETUN_MAX_BATCH)
    return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "at most %d packets",
                      EDGETUN_MAX_BATCH);
  uint32_t offsets[EDGETUN_MAX_BATCH], lengths[EDGETUN_MAX_BATCH];
  size_t total = 0;
  uint8_t *datas[EDGETUN_MAX_BATCH];
  for (uint32_t i = 0; i < count; i++) {
    napi_value el;
    size_t len;
    if (napi_get_element(env, argv[0], i, &el) != napi_ok ||
        arg_bytes(env, el, "packet", &datas[i], &len) != 0)
      return NULL;
    if (len > 65535)
      return throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "packet %u is too long", i);
    offsets[i] = (uint32_t)total;
    lengths[i] = (uint32_t)len;
    total += len;
  }
  uint8_t *arena = malloc(total + 1);
  uint8_t **bufs = calloc(count + 1, sizeof(*bufs));
  size_t *lens = calloc(count + 1, sizeof(*lens));
  size_t groups = 0;
  napi_value result = NULL;
  int failed = arena == NULL || bufs == NULL || lens == NULL;
  for (uint32_t i = 0; !failed && i < count; i++)
    memcpy(arena + offsets[i], datas[i], lengths[i]);
  for (size_t i = 0; !failed && i < count;) {
    gro_group g;
    struct iovec iov[2 + GRO_MAX_SEGMENTS];
    gro_plan(&g, arena, offsets, lengths, i, count - i, GRO_TCP | GRO_UDP);
    int n = gro_iov(&g, iov, arena, offsets, lengths, i);
    size_t size = 0;
    for (int k = 0; k < n; k++) size += iov[k].iov_len;
    uint8_t *b = malloc(size);
    if (b == NULL) {
      failed = 1;
      break;
    }
    size_t at = 0;
    for (int k = 0; k < n; k++) {
      memcpy(b + at, iov[k].iov_base, iov[k].iov_len);
      at += iov[k].iov_len;
    }
    bufs[groups] = b;
    lens[groups++] = size;
    i += g.count;
  }
  if (failed)
    throw_errno(env, ENOMEM, "out of memory");
  else
    result = buffer_array(env, bufs, lens, groups);
  for (size_t k = 0; k < groups; k++) free(bufs[k]);
  free(bufs);
  free(lens);
  free(arena);
  return result;
}

napi_status init_offload(napi_env env, napi_value exports) {
  EXPORT_FN(env, exports, "offloadChecksum", js_checksum);
  EXPORT_FN(env, exports, "offloadSegment", js_segment);
  EXPORT_FN(env, exports, "offloadCoalesce", js_coalesce);
  napi_value v;
  napi_status s = napi_create_int32(env, VNET_HDR_LEN, &v);
  if (s != napi_ok) return s;
  return napi_set_named_property(env, exports, "VNET_HDR_LEN", v);
}
