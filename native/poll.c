/*
 * Readiness: one uv_poll_t per owned descriptor, created on the first
 * watch() and re-armed with a new event mask afterwards. The loop is
 * level-triggered, so a JS callback that leaves packets in the queue is called
 * again on the next loop turn instead of losing them; nothing spins while the
 * queue is empty.
 */
#include "common.h"

#include <errno.h>
#include <stdlib.h>

struct fd_watch {
  uv_poll_t handle;
  addon_state *st;
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  int events;
  int in_callback;
  int closing;
};

static void release_js(fd_watch *w) {
  if (w->callback != NULL) {
    napi_delete_reference(w->env, w->callback);
    w->callback = NULL;
  }
  if (w->async != NULL) {
    napi_async_destroy(w->env, w->async);
    w->async = NULL;
  }
}

static void on_handle_closed(uv_handle_t *h) {
  fd_watch *w = h->data;
  addon_state *st = w->st;
  free(w);
  /* The environment (and st) stays alive until the cleanup hook is removed,
   * so st is still valid here even during teardown. */
  if (--st->pending_closes == 0 && st->tearing_down) teardown_finished(st);
}

static void close_watch(fd_watch *w) {
  w->st->pending_closes++;
  uv_close((uv_handle_t *)&w->handle, on_handle_closed);
}

static void on_ready(uv_poll_t *h, int status, int events) {
  fd_watch *w = h->data;
  napi_env env = w->env;
  if (w->closing || w->callback == NULL) return;

  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, argv[2], result;
  if (napi_get_reference_value(env, w->callback, &cb) == napi_ok && cb != NULL &&
      /* napi_make_callback wants an object receiver; the handlers are arrow
       * functions or bound methods, so which object does not matter. */
      napi_get_global(env, &recv) == napi_ok &&
      napi_create_int32(env, events & (EDGETUN_READABLE | EDGETUN_WRITABLE), &argv[0]) ==
          napi_ok &&
      napi_create_int32(env, status, &argv[1]) == napi_ok) {
    w->in_callback = 1;
    /* napi_make_callback (not napi_call_function) so that promise jobs queued
     * by the handler run before control returns to libuv, as with any Node
     * I/O callback. */
    napi_status s = napi_make_callback(env, w->async, recv, cb, 2, argv, &result);
    w->in_callback = 0;
    if (s == napi_pending_exception) {
      napi_value err;
      if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
    }
  }
  napi_close_handle_scope(env, scope);
  /* close() from inside the handler deferred releasing the JS references to
   * here, because the callback was still running. */
  if (w->closing) release_js(w);
}

void watch_release(addon_state *st, owned_fd *entry) {
  fd_watch *w = entry->watch;
  if (w == NULL) return;
  entry->watch = NULL;
  w->closing = 1;
  uv_poll_stop(&w->handle);
  if (!st->tearing_down && !w->in_callback) release_js(w);
  close_watch(w);
}

/* watch(fd, events, callback): events is a mask of READABLE/WRITABLE; 0 stops
 * polling but keeps the handle for a later watch(). */
static napi_value js_watch(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (arg_count(env, info, 3, argv) != 0) return NULL;
  addon_state *st = state_of(env);
  int fd;
  int64_t events;
  if (arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (arg_int(env, argv[1], "events", 0, EDGETUN_READABLE | EDGETUN_WRITABLE, &events) != 0)
    return NULL;
  napi_valuetype t;
  if (napi_typeof(env, argv[2], &t) != napi_ok || t != napi_function) {
    return throw_kind(env, ERR_TYPE, "ERR_INVALID_ARG_TYPE", "callback must be a function");
  }
  owned_fd *entry = fd_lookup(st, fd);
  if (entry == NULL) return throw_errno(env, EBADF, "fd %d is not open in this addon", fd);

  fd_watch *w = entry->watch;
  if (w == NULL) {
    w = calloc(1, sizeof(*w));
    if (w == NULL) return throw_errno(env, ENOMEM, "cannot allocate poll handle");
    int r = uv_poll_init(st->loop, &w->handle, fd);
    if (r != 0) {
      free(w);
      return throw_errno(env, -r, "uv_poll_init failed for fd %d", fd);
    }
    w->handle.data = w;
    w->st = st;
    w->env = env;
    napi_value name;
    if (napi_create_string_utf8(env, "edgetun:fd", NAPI_AUTO_LENGTH, &name) != napi_ok ||
        napi_async_init(env, NULL, name, &w->async) != napi_ok) {
      close_watch(w);
      return NULL;
    }
    if (entry->unref) uv_unref((uv_handle_t *)&w->handle);
    entry->watch = w;
  }
  if (w->callback != NULL) napi_delete_reference(env, w->callback);
  w->callback = NULL;
  if (napi_create_reference(env, argv[2], 1, &w->callback) != napi_ok) return NULL;

  w->events = (int)events;
  int r = events == 0 ? uv_poll_stop(&w->handle)
                      : uv_poll_start(&w->handle, (int)events, on_ready);
  if (r != 0) return throw_errno(env, -r, "cannot poll fd %d", fd);
  return make_undefined(env);
}

/* watchRef(fd, ref): an unreferenced watch does not keep the process alive,
 * for sockets that should not block exit on their own. */
static napi_value js_watch_ref(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (arg_count(env, info, 2, argv) != 0) return NULL;
  int fd, ref;
  if (arg_fd(env, argv[0], &fd) != 0 || arg_bool(env, argv[1], "ref", &ref) != 0) return NULL;
  owned_fd *entry = fd_lookup(state_of(env), fd);
  if (entry == NULL) return throw_errno(env, EBADF, "fd %d is not open in this addon", fd);
  entry->unref = !ref;
  if (entry->watch != NULL) {
    if (ref)
      uv_ref((uv_handle_t *)&entry->watch->handle);
    else
      uv_unref((uv_handle_t *)&entry->watch->handle);
  }
  return make_undefined(env);
}

/* close(fd): stops polling and closes. Closing an fd twice, or one the addon
 * did not open, is EBADF rather than a silent close of an unrelated fd. */
static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (arg_count(env, info, 1, argv) != 0) return NULL;
  int fd;
  if (arg_fd(env, argv[0], &fd) != 0) return NULL;
  addon_state *st = state_of(env);
  owned_fd *entry = fd_lookup(st, fd);
  if (entry == NULL) return throw_errno(env, EBADF, "fd %d is not open in this addon", fd);
  fd_close(st, entry);
  return make_undefined(env);
}

napi_status init_poll(napi_env env, napi_value exports) {
  EXPORT_FN(env, exports, "watch", js_watch);
  EXPORT_FN(env, exports, "watchRef", js_watch_ref);
  EXPORT_FN(env, exports, "close", js_close);
  return napi_ok;
}
