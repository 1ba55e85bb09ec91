/*
 * A bounded FIFO of datagrams with their remote and local endpoints, by which a
 * thread of the addon hands messages over to the JS thread: the handshake lane
 * (what passed the cookie gate) and the data-path thread (what only the JS path
 * can handle). The owner supplies the storage (arrays sized by its own room and
 * capacity) and holds its lock around every call.
 */
#ifndef EDGETUN_RING_H
#define EDGETUN_RING_H

#include "common.h"

#include <string.h>

typedef struct datagram_ring {
  uint8_t *data;      /* capacity slots of room bytes */
  uint32_t *lengths;  /* capacity */
  uint8_t *endpoints; /* capacity * EDGETUN_ENDPOINT_SIZE */
  uint8_t *locals;    /* capacity * EDGETUN_ENDPOINT_SIZE */
  unsigned room, capacity, head, size;
} datagram_ring;

/* Points the ring at an owner's arrays: `capacity` slots of `room` bytes. */
#define DATAGRAM_RING_OVER(owner, room_, capacity_)                                          \
  ((datagram_ring){(owner)->ring_data, (owner)->ring_lengths, (owner)->ring_endpoints,       \
                   (owner)->ring_locals, (room_), (capacity_), 0, 0})

/* Appends one datagram, cut to the room; returns its slot (for the owner's
 * per-slot notes), or -1 when the ring is full. */
static inline int datagram_ring_push(datagram_ring *r, const uint8_t *data, uint32_t length,
                                     const uint8_t *endpoint, const uint8_t *local) {
  if (r->size == r->capacity) return -1;
  unsigned slot = (r->head + r->size++) % r->capacity;
  if (length > r->room) length = r->room;
  memcpy(r->data + (size_t)slot * r->room, data, length);
  r->lengths[slot] = length;
  memcpy(r->endpoints + (size_t)slot * EDGETUN_ENDPOINT_SIZE, endpoint, EDGETUN_ENDPOINT_SIZE);
  memcpy(r->locals + (size_t)slot * EDGETUN_ENDPOINT_SIZE, local, EDGETUN_ENDPOINT_SIZE);
  return (int)slot;
}

static inline void datagram_ring_drop_head(datagram_ring *r) {
  r->head = (r->head + 1) % r->capacity;
  r->size--;
}

/* The arguments of a take(handle, arena, offsets, lengths, endpoints, locals,
 * count, room) call from JS, checked against the ring's room. */
typedef struct datagram_take {
  uint8_t *arena, *endpoints, *locals;
  uint32_t *offsets, *lengths;
  uint64_t count;
} datagram_take;

/* Reads argv[1..7] of a take call; 0, or -1 with a JS exception pending. */
static inline int datagram_take_args(napi_env env, napi_value *argv, unsigned ring_room,
                                     datagram_take *t) {
  size_t arena_len, off_len, len_len, ep_len, loc_len;
  uint64_t room;
  if (arg_bytes(env, argv[1], "arena", &t->arena, &arena_len) ||
      arg_u32_array(env, argv[2], "offsets", &t->offsets, &off_len) ||
      arg_u32_array(env, argv[3], "lengths", &t->lengths, &len_len) ||
      arg_bytes(env, argv[4], "endpoints", &t->endpoints, &ep_len) ||
      arg_bytes_opt(env, argv[5], "locals", &t->locals, &loc_len) ||
      arg_uint(env, argv[6], "count", EDGETUN_MAX_BATCH, &t->count) ||
      arg_uint(env, argv[7], "room", 1u << 20, &room))
    return -1;
  if (room < ring_room) {
    throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE", "room must be at least %u", ring_room);
    return -1;
  }
  if (check_range(env, "offsets", off_len, 1, 0, t->count) ||
      check_range(env, "lengths", len_len, 1, 0, t->count) ||
      check_range(env, "endpoints", ep_len, EDGETUN_ENDPOINT_SIZE, 0, t->count) ||
      (t->locals != NULL &&
       check_range(env, "locals", loc_len, EDGETUN_ENDPOINT_SIZE, 0, t->count)) ||
      check_spans(env, arena_len, t->offsets, NULL, 0, t->count, ring_room))
    return -1;
  return 0;
}

/* Moves up to t->count datagrams from the head into the caller's slots [0, n). */
static inline uint64_t datagram_ring_take(datagram_ring *r, const datagram_take *t) {
  uint64_t n = 0;
  while (n < t->count && r->size > 0) {
    unsigned slot = r->head;
    memcpy(t->arena + t->offsets[n], r->data + (size_t)slot * r->room, r->lengths[slot]);
    t->lengths[n] = r->lengths[slot];
    memcpy(t->endpoints + n * EDGETUN_ENDPOINT_SIZE,
           r->endpoints + (size_t)slot * EDGETUN_ENDPOINT_SIZE, EDGETUN_ENDPOINT_SIZE);
    if (t->locals != NULL)
      memcpy(t->locals + n * EDGETUN_ENDPOINT_SIZE,
             r->locals + (size_t)slot * EDGETUN_ENDPOINT_SIZE, EDGETUN_ENDPOINT_SIZE);
    datagram_ring_drop_head(r);
    n++;
  }
  return n;
}

#endif
