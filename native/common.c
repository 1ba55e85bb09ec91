/*
 * Error reporting, argument validation and the registry of owned descriptors.
 *
 * Every value coming from JS is checked here before it reaches a syscall or a
 * memcpy: a wrong call must end in a TypeError/RangeError, never in a write
 * outside the caller's buffer.
 */
#include "common.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *errno_name(int err) {
  static __thread char buf[64];
  /* libuv error codes are negated errno values on Unix, and libuv is the
   * source of the names Node itself prints, so codes match Node's errors. */
  uv_err_name_r(-err, buf, sizeof(buf));
  return buf;
}

static napi_value throw_message(napi_env env, int kind, const char *code, const char *msg,
                                int err) {
  napi_value code_v = NULL, msg_v, error;
  if (code != NULL && napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_v) != napi_ok)
    return NULL;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &msg_v) != napi_ok) return NULL;
  napi_status s;
  switch (kind) {
    case ERR_TYPE:
      s = napi_create_type_error(env, code_v, msg_v, &error);
      break;
    case ERR_RANGE:
      s = napi_create_range_error(env, code_v, msg_v, &error);
      break;
    default:
      s = napi_create_error(env, code_v, msg_v, &error);
      break;
  }
  if (s != napi_ok) return NULL;
  if (err != 0) set_prop_int(env, error, "errno", -err);
  napi_throw(env, error);
  return NULL;
}

napi_value throw_errno(napi_env env, int err, const char *fmt, ...) {
  char detail[384], msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof(detail), fmt, ap);
  va_end(ap);
  const char *name = errno_name(err);
  snprintf(msg, sizeof(msg), "%s: %s", name, detail);
  return throw_message(env, ERR_PLAIN, name, msg, err);
}

napi_value throw_kind(napi_env env, int kind, const char *code, const char *fmt, ...) {
  char msg[448];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  return throw_message(env, kind, code, msg, 0);
}

int arg_count(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < want) {
    throw_kind(env, ERR_TYPE, "ERR_MISSING_ARGS", "expected %zu arguments, got %zu", want, argc);
    return -1;
  }
  return 0;
}

static int is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return 0;
  return t == napi_undefined || t == napi_null;
}

static int typed_array(napi_env env, napi_value v, napi_typedarray_type want, const char *name,
                       const char *type_name, void **data, size_t *len) {
  bool is_ta = false;
  napi_typedarray_type type;
  size_t length;
  void *ptr;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &type, &length, &ptr, NULL, NULL) != napi_ok ||
      type != want) {
    throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "%s must be a %s", name, type_name);
    return -1;
  }
  /* A detached buffer reports length 0; treating it as empty keeps the range
   * checks below sufficient. */
  if (ptr == NULL) length = 0;
  *data = ptr;
  *len = length;
  return 0;
}

int arg_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len) {
  void *p;
  if (typed_array(env, v, napi_uint8_array, name, "Buffer or Uint8Array", &p, len) != 0)
    return -1;
  *data = p;
  return 0;
}

int arg_bytes_opt(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len) {
  if (is_nullish(env, v)) {
    *data = NULL;
    *len = 0;
    return 0;
  }
  return arg_bytes(env, v, name, data, len);
}

int arg_u32_array(napi_env env, napi_value v, const char *name, uint32_t **data, size_t *len) {
  void *p;
  if (typed_array(env, v, napi_uint32_array, name, "Uint32Array", &p, len) != 0) return -1;
  *data = p;
  return 0;
}

int arg_i32_array_opt(napi_env env, napi_value v, const char *name, int32_t **data,
                      size_t *len) {
  if (is_nullish(env, v)) {
    *data = NULL;
    *len = 0;
    return 0;
  }
  void *p;
  if (typed_array(env, v, napi_int32_array, name, "Int32Array", &p, len) != 0) return -1;
  *data = p;
  return 0;
}

int arg_int(napi_env env, napi_value v, const char *name, int64_t min, int64_t max,
            int64_t *out) {
  napi_valuetype t;
  double d;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number ||
      napi_get_value_double(env, v, &d) != napi_ok) {
    throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "%s must be a number", name);
    return -1;
  }
  if (!isfinite(d) || d != floor(d) || d < (double)min || d > (double)max) {
    throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE",
               "%s must be an integer in [%lld, %lld], got %g", name, (long long)min,
               (long long)max, d);
    return -1;
  }
  *out = (int64_t)d;
  return 0;
}

int arg_uint(napi_env env, napi_value v, const char *name, uint64_t max, uint64_t *out) {
  int64_t value;
  if (max > (uint64_t)INT64_MAX) max = (uint64_t)INT64_MAX;
  if (arg_int(env, v, name, 0, (int64_t)max, &value) != 0) return -1;
  *out = (uint64_t)value;
  return 0;
}

int arg_bool(napi_env env, napi_value v, const char *name, int *out) {
  if (is_nullish(env, v)) {
    *out = 0;
    return 0;
  }
  bool b;
  if (napi_get_value_bool(env, v, &b) != napi_ok) {
    throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "%s must be a boolean", name);
    return -1;
  }
  *out = b;
  return 0;
}

int arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t bufsize,
               size_t *outlen, int *too_long) {
  *too_long = 0;
  if (is_nullish(env, v)) {
    buf[0] = 0;
    *outlen = 0;
    return 0;
  }
  size_t full;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &full) != napi_ok) {
    throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "%s must be a string", name);
    return -1;
  }
  if (full >= bufsize) *too_long = 1;
  size_t copied;
  if (napi_get_value_string_utf8(env, v, buf, bufsize, &copied) != napi_ok) return -1;
  if (strlen(buf) != copied) {
    throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_VALUE", "%s must not contain NUL characters",
               name);
    return -1;
  }
  *outlen = full;
  return 0;
}

int arg_fd(napi_env env, napi_value v, int *fd) {
  int64_t value;
  if (arg_int(env, v, "fd", 0, INT32_MAX, &value) != 0) return -1;
  *fd = (int)value;
  return 0;
}

int check_range(napi_env env, const char *name, size_t len, size_t per, uint64_t first,
                uint64_t count) {
  if (first + count < first || (first + count) > len / per) {
    throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE",
               "%s is too short: packets [%llu, %llu) need %llu entries, it has %zu", name,
               (unsigned long long)first, (unsigned long long)(first + count),
               (unsigned long long)((first + count) * per), len);
    return -1;
  }
  return 0;
}

int check_spans(napi_env env, size_t arena_len, const uint32_t *offsets,
                const uint32_t *lengths, uint64_t first, uint64_t count, uint64_t extra) {
  for (uint64_t i = first; i < first + count; i++) {
    uint64_t end = (uint64_t)offsets[i] + (lengths != NULL ? lengths[i] : 0) + extra;
    if (end > arena_len) {
      throw_kind(env, ERR_RANGE, "ERR_OUT_OF_RANGE",
                 "packet %llu [%u, %llu) lies outside the arena of %zu bytes",
                 (unsigned long long)i, offsets[i], (unsigned long long)end, arena_len);
      return -1;
    }
  }
  return 0;
}

owned_fd *require_fd(napi_env env, int fd, int kind) {
  owned_fd *e = fd_lookup(state_of(env), fd);
  if (e == NULL || e->kind != kind) {
    throw_errno(env, EBADF, "fd %d is not an open %s", fd,
                kind == FD_KIND_TUN ? "TUN device" : "UDP socket");
    return NULL;
  }
  return e;
}

napi_value make_int(napi_env env, int64_t v) {
  napi_value out = NULL;
  napi_create_int64(env, v, &out);
  return out;
}

napi_value make_undefined(napi_env env) {
  napi_value out = NULL;
  napi_get_undefined(env, &out);
  return out;
}

int set_prop_int(napi_env env, napi_value obj, const char *key, int64_t v) {
  napi_value value;
  if (napi_create_int64(env, v, &value) != napi_ok) return -1;
  return napi_set_named_property(env, obj, key, value) == napi_ok ? 0 : -1;
}

int set_prop_str(napi_env env, napi_value obj, const char *key, const char *v) {
  napi_value value;
  if (napi_create_string_utf8(env, v, NAPI_AUTO_LENGTH, &value) != napi_ok) return -1;
  return napi_set_named_property(env, obj, key, value) == napi_ok ? 0 : -1;
}

int set_prop_bool(napi_env env, napi_value obj, const char *key, int v) {
  napi_value value;
  if (napi_get_boolean(env, v != 0, &value) != napi_ok) return -1;
  return napi_set_named_property(env, obj, key, value) == napi_ok ? 0 : -1;
}

owned_fd *fd_register(addon_state *st, int fd, int kind, int family) {
  owned_fd *e = calloc(1, sizeof(*e));
  if (e == NULL) return NULL;
  e->fd = fd;
  e->kind = kind;
  e->family = family;
  e->next = st->fds;
  st->fds = e;
  return e;
}

owned_fd *fd_lookup(addon_state *st, int fd) {
  for (owned_fd *e = st->fds; e != NULL; e = e->next)
    if (e->fd == fd) return e;
  return NULL;
}

void fd_close(addon_state *st, owned_fd *entry) {
  /* The poll handle must be stopped before the fd is closed: libuv removes
   * the fd from epoll on stop, and a closed-then-reused fd number must never
   * be reported as ready to the old callback. */
  watch_release(st, entry);
  owned_fd **pp = &st->fds;
  while (*pp != NULL && *pp != entry) pp = &(*pp)->next;
  if (*pp == entry) *pp = entry->next;
  close(entry->fd);
  free(entry);
}

void call_js_without_arguments(napi_env env, napi_value callback, void *context, void *data) {
  (void)context;
  (void)data;
  if (env == NULL || callback == NULL) return;
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  napi_call_function(env, undefined, callback, 0, NULL, NULL);
}
