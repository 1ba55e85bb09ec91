/*
 * Module entry: per-environment state (worker threads each get their own) and
 * the teardown that closes whatever JS left open.
 */
#include "common.h"

#include <stdlib.h>

addon_state *state_of(napi_env env) {
  addon_state *st = NULL;
  napi_get_instance_data(env, (void **)&st);
  return st;
}

void teardown_finished(addon_state *st) {
  if (st->cleanup_hook != NULL) {
    napi_async_cleanup_hook_handle hook = st->cleanup_hook;
    st->cleanup_hook = NULL;
    napi_remove_async_cleanup_hook(hook);
  }
}

/* Runs when the environment goes away (process exit, worker termination):
 * stop polling so libuv holds no handle on a closed fd, close the fds, and
 * tell Node we are done only once libuv has run every close callback, which
 * live in this library and must not run after it is unloaded. */
static void on_env_teardown(napi_async_cleanup_hook_handle hook, void *arg) {
  addon_state *st = arg;
  st->cleanup_hook = hook;
  st->tearing_down = 1;
  while (st->fds != NULL) fd_close(st, st->fds);
  if (st->pending_closes == 0) teardown_finished(st);
}

static void on_instance_free(napi_env env, void *data, void *hint) {
  addon_state *st = data;
  (void)env;
  (void)hint;
  /* Teardown has closed every descriptor by now; this only frees memory. */
  aead_free(st);
  free(st->mmsg_scratch);
  free(st);
}

static napi_status set_constant(napi_env env, napi_value exports, const char *name, int64_t v) {
  napi_value value;
  napi_status s = napi_create_int64(env, v, &value);
  if (s != napi_ok) return s;
  return napi_set_named_property(env, exports, name, value);
}

static napi_status init(napi_env env, napi_value exports) {
  addon_state *st = calloc(1, sizeof(*st));
  if (st == NULL) return napi_generic_failure;
  st->env = env;
  napi_status s = napi_get_uv_event_loop(env, &st->loop);
  if (s != napi_ok) {
    free(st);
    return s;
  }
  s = napi_set_instance_data(env, st, on_instance_free, NULL);
  if (s != napi_ok) {
    free(st);
    return s;
  }
  if ((s = napi_add_async_cleanup_hook(env, on_env_teardown, st, NULL)) != napi_ok) return s;
  if ((s = init_tun(env, exports)) != napi_ok) return s;
  if ((s = init_udp(env, exports)) != napi_ok) return s;
  if ((s = init_aead(env, exports)) != napi_ok) return s;
  if ((s = init_cookie(env, exports)) != napi_ok) return s;
  if ((s = init_lane(env, exports)) != napi_ok) return s;
  if ((s = init_dataplane(env, exports)) != napi_ok) return s;
  if ((s = init_poll(env, exports)) != napi_ok) return s;
  if ((s = init_netlink(env, exports)) != napi_ok) return s;
  if ((s = init_x25519(env, exports)) != napi_ok) return s;
  if ((s = set_constant(env, exports, "MAX_BATCH", EDGETUN_MAX_BATCH)) != napi_ok) return s;
  if ((s = set_constant(env, exports, "ENDPOINT_SIZE", EDGETUN_ENDPOINT_SIZE)) != napi_ok)
    return s;
  if ((s = set_constant(env, exports, "READABLE", EDGETUN_READABLE)) != napi_ok) return s;
  if ((s = set_constant(env, exports, "WRITABLE", EDGETUN_WRITABLE)) != napi_ok) return s;
  return napi_ok;
}

NAPI_MODULE_INIT() {
  if (init(env, exports) != napi_ok) {
    const napi_extended_error_info *e = NULL;
    napi_get_last_error_info(env, &e);
    napi_throw_error(env, NULL,
                     e != NULL && e->error_message != NULL ? e->error_message
                                                           : "edgetun addon init failed");
    return NULL;
  }
  return exports;
}
