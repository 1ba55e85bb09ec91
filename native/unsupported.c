/*
 * Non-Linux builds: TUN, recvmmsg/sendmmsg and the ioctls used here are
 * Linux interfaces. Building this stub keeps `npm ci` working on a developer
 * laptop; loading it explains why the data path is unavailable.
 */
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>

NAPI_MODULE_INIT() {
  (void)exports;
  napi_throw_error(env, "ERR_EDGETUN_UNSUPPORTED_PLATFORM",
                   "the edgetun native data path (TUN, recvmmsg/sendmmsg) needs Linux");
  return NULL;
}
