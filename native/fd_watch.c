/*
 * watchFd(fd, writable, callback) -> { close() }: a libuv poll handle on the
 * loop of the thread that calls it (the main loop or an I/O context's
 * worker). The callback runs on that thread with (status, events): status 0
 * or a negative errno from libuv, events a mask of 1 (readable) and 2
 * (writable). It keeps the loop alive until close(); close() is idempotent,
 * and a worker that ends closes what it still watches.
 *
 * readFd(fd, buf, offset, length) and writeFd(fd, buf, offset, length)
 * answer the bytes moved or a negative errno (-EAGAIN when a non-blocking
 * descriptor has nothing), never throwing for a failed system call: the
 * callers poll and expect EAGAIN as often as data.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <uv.h>

#include "fd_watch.h"
#include "napi_util.h"

#define EVENT_READABLE 1
#define EVENT_WRITABLE 2

struct watch {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  bool closed;
  /* Set while the callback runs: a close from inside it must leave the
     callback's async context alive until napi_make_callback returns. */
  bool in_callback;
  /* The memory goes once libuv has closed the handle and the JavaScript
     close function (which points here) has been collected: a close() after
     the handle is gone must still find the watch. */
  bool uv_closed;
  bool function_held;
};

static void watch_freed(uv_handle_t *handle) {
  struct watch *w = handle->data;
  w->uv_closed = true;
  if (!w->function_held) free(w);
}

static void close_function_collected(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct watch *w = data;
  w->function_held = false;
  if (w->uv_closed) free(w);
}

/* Lets go of the callback and its async context, and closes the handle. */
static void watch_release(struct watch *w) {
  napi_delete_reference(w->env, w->callback);
  napi_async_destroy(w->env, w->async);
  uv_close((uv_handle_t *)&w->poll, watch_freed);
}

/* Stops the handle; from inside the callback, the release waits for it to
   return (watch_event does it). */
static void watch_close(struct watch *w) {
  if (w->closed) return;
  w->closed = true;
  uv_poll_stop(&w->poll);
  if (!w->in_callback) watch_release(w);
}

static void watch_cleanup_hook(void *arg) {
  watch_close(arg);
}

static void watch_event(uv_poll_t *poll, int status, int events) {
  struct watch *w = poll->data;
  if (w->closed) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, resource, argv[2], result;
  int mask = ((events & UV_READABLE) ? EVENT_READABLE : 0) |
             ((events & UV_WRITABLE) ? EVENT_WRITABLE : 0);
  if (napi_get_reference_value(env, w->callback, &callback) == napi_ok &&
      napi_create_object(env, &resource) == napi_ok &&
      napi_create_int32(env, status, &argv[0]) == napi_ok &&
      napi_create_int32(env, mask, &argv[1]) == napi_ok) {
    /* napi_make_callback runs the microtasks the callback queued, as a
       libuv callback of Node's own would. An exception it leaves would stay
       pending with nobody to see it: it goes to uncaughtException. */
    w->in_callback = true;
    napi_make_callback(env, w->async, resource, callback, 2, argv, &result);
    w->in_callback = false;
    bool pending = false;
    napi_value error;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
        napi_get_and_clear_last_exception(env, &error) == napi_ok)
      napi_fatal_exception(env, error);
  }
  if (w->closed) watch_release(w);
  napi_close_handle_scope(env, scope);
}

static napi_value watch_stop(napi_env env, napi_callback_info info) {
  napi_value self;
  struct watch *w = NULL;
  NAPI_CALL(env, napi_get_cb_info(env, info, NULL, NULL, &self, (void **)&w));
  if (w != NULL && !w->closed) {
    napi_remove_env_cleanup_hook(env, watch_cleanup_hook, w);
    watch_close(w);
  }
  return NULL;
}

static napi_value watch_fd(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  if (!get_fd(env, argv, argc, &fd)) return NULL;
  bool writable = false;
  napi_valuetype type = napi_undefined;
  if (argc > 1) NAPI_CALL(env, napi_typeof(env, argv[1], &type));
  if (type != napi_boolean) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "writable must be a boolean");
    return NULL;
  }
  NAPI_CALL(env, napi_get_value_bool(env, argv[1], &writable));
  type = napi_undefined;
  if (argc > 2) NAPI_CALL(env, napi_typeof(env, argv[2], &type));
  if (type != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "callback must be a function");
    return NULL;
  }

  uv_loop_t *loop;
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  struct watch *w = calloc(1, sizeof(*w));
  if (w == NULL) {
    throw_errno(env, ENOMEM, "watchFd");
    return NULL;
  }
  int rc = uv_poll_init(loop, &w->poll, fd);
  if (rc < 0) {
    free(w);
    throw_errno(env, -rc, "uv_poll_init");
    return NULL;
  }
  w->poll.data = w;
  w->env = env;
  napi_value name;
  if (napi_create_string_utf8(env, "qbd.fdWatch", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &w->async) != napi_ok) {
    uv_close((uv_handle_t *)&w->poll, watch_freed);
    throw_napi_failure(env, "napi_async_init");
    return NULL;
  }
  if (napi_create_reference(env, argv[2], 1, &w->callback) != napi_ok) {
    napi_async_destroy(env, w->async);
    uv_close((uv_handle_t *)&w->poll, watch_freed);
    throw_napi_failure(env, "napi_create_reference");
    return NULL;
  }
  rc = uv_poll_start(&w->poll, UV_READABLE | (writable ? UV_WRITABLE : 0), watch_event);
  if (rc < 0) {
    watch_close(w);
    throw_errno(env, -rc, "uv_poll_start");
    return NULL;
  }
  napi_add_env_cleanup_hook(env, watch_cleanup_hook, w);

  napi_value handle, close_fn;
  NAPI_CALL(env, napi_create_object(env, &handle));
  NAPI_CALL(env, napi_create_function(env, "close", NAPI_AUTO_LENGTH, watch_stop, w, &close_fn));
  w->function_held = true;
  if (napi_add_finalizer(env, close_fn, w, close_function_collected, NULL, NULL) != napi_ok) {
    w->function_held = false;
    napi_remove_env_cleanup_hook(env, watch_cleanup_hook, w);
    watch_close(w);
    throw_napi_failure(env, "napi_add_finalizer");
    return NULL;
  }
  NAPI_CALL(env, napi_set_named_property(env, handle, "close", close_fn));
  return handle;
}

static napi_value transfer(napi_env env, napi_callback_info info, bool write_side) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  uint8_t *data;
  size_t length;
  if (!get_fd(env, argv, argc, &fd) || !get_byte_range(env, argv, argc, 1, &data, &length)) return NULL;
  ssize_t n;
  do {
    n = write_side ? write(fd, data, length) : read(fd, data, length);
  } while (n < 0 && errno == EINTR);
  return int64_result(env, n < 0 ? -(int64_t)errno : (int64_t)n);
}

static napi_value read_fd(napi_env env, napi_callback_info info) {
  return transfer(env, info, false);
}

static napi_value write_fd(napi_env env, napi_callback_info info) {
  return transfer(env, info, true);
}

napi_status register_fd_watch(napi_env env, napi_value exports) {
  const napi_property_descriptor functions[] = {
      {"watchFd", NULL, watch_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readFd", NULL, read_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeFd", NULL, write_fd, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof(functions) / sizeof(functions[0]), functions);
}
