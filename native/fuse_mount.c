/*
 * mount(source, target, fstype, flags, data) and umount2(target, flags):
 * thin wrappers of the system calls, synchronous (both return at once; a
 * FUSE mount does not wait for its server's INIT answer). A failure throws
 * an Error with `code` (the errno name), `errno` and `syscall`, as node:fs
 * errors have.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/mount.h>

#include "fuse_mount.h"
#include "napi_util.h"

static napi_value do_mount(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *strings[4] = {NULL, NULL, NULL, NULL};
  static const char *const names[4] = {"source", "target", "fstype", "data"};
  static const size_t positions[4] = {0, 1, 2, 4};
  int64_t flags = 0;
  bool ok = true;
  for (size_t i = 0; i < 4 && ok; i++) ok = (strings[i] = get_string(env, argv, argc, positions[i], names[i])) != NULL;
  if (ok) ok = get_integer(env, argv, argc, 3, "flags", 0, 4294967295.0, &flags);
  int err = 0;
  if (ok && mount(strings[0], strings[1], strings[2], (unsigned long)flags, strings[3]) < 0) err = errno;
  for (size_t i = 0; i < 4; i++) free(strings[i]);
  if (err != 0) throw_errno(env, err, "mount");
  return NULL;
}

static napi_value do_umount2(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *target = get_string(env, argv, argc, 0, "target");
  if (target == NULL) return NULL;
  int64_t flags = 0;
  if (!get_integer(env, argv, argc, 1, "flags", 0, 2147483647.0, &flags)) {
    free(target);
    return NULL;
  }
  int err = umount2(target, (int)flags) < 0 ? errno : 0;
  free(target);
  if (err != 0) throw_errno(env, err, "umount2");
  return NULL;
}

napi_status register_fuse_mount(napi_env env, napi_value exports) {
  const napi_property_descriptor functions[] = {
      {"mount", NULL, do_mount, NULL, NULL, NULL, napi_enumerable, NULL},
      {"umount2", NULL, do_umount2, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof(functions) / sizeof(functions[0]), functions);
}
