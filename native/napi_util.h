/*
 * Helpers every part of qbd_native shares: failing a napi call, errno
 * errors shaped as node:fs shapes them, argument checks and number results.
 */
#ifndef QBD_NAPI_UTIL_H
#define QBD_NAPI_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include <node_api.h>

/* Number.MAX_SAFE_INTEGER: offsets beyond it cannot cross into JavaScript. */
#define MAX_SAFE_INTEGER 9007199254740991.0

/* Return NULL from a napi callback when a napi call fails, leaving an
 * exception pending. */
#define NAPI_CALL(env, call)                                                   \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      throw_napi_failure((env), #call);                                        \
      return NULL;                                                             \
    }                                                                          \
  } while (0)

/* Like NAPI_CALL, for helpers that return bool. */
#define NAPI_CHECK(env, call)                                                  \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      throw_napi_failure((env), #call);                                        \
      return false;                                                            \
    }                                                                          \
  } while (0)

/* Throws an Error naming the napi call that failed, unless one is pending. */
void throw_napi_failure(napi_env env, const char *call);

/* An Error with `code` (the errno name), `errno` (negative) and `syscall`. */
napi_status make_errno_error(napi_env env, int err, const char *syscall,
                             napi_value *result);
void throw_errno(napi_env env, int err, const char *syscall);

/* Reads argument `index` as an integer in [min, max]; throws otherwise. */
bool get_integer(napi_env env, napi_value *argv, size_t argc, size_t index,
                 const char *name, double min, double max, int64_t *out);

/* Reads argument 0 as a file descriptor. */
bool get_fd(napi_env env, napi_value *argv, size_t argc, int *fd);

/* Reads the only argument of a callback that takes a file descriptor. */
bool get_fd_argument(napi_env env, napi_callback_info info, int *fd);

/* Reads (buf, offset, length) from arguments index..index+2: a Uint8Array
 * and a range inside it, as a pointer and a byte count. */
bool get_byte_range(napi_env env, napi_value *argv, size_t argc, size_t index,
                    uint8_t **data, size_t *length);

/* Reads argument `index` as a string into a fresh buffer the caller frees;
 * NULL (an exception pending) when it is not a string or is too long. */
char *get_string(napi_env env, napi_value *argv, size_t argc, size_t index,
                 const char *name);

/* A JavaScript number for a native result; NULL with an exception pending
 * when napi fails, so a callback can return it as is. */
napi_value int32_result(napi_env env, int32_t value);
napi_value int64_result(napi_env env, int64_t value);

#endif
