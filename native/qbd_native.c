/*
 * qbd_native: the few Linux system calls a block daemon needs and Node lacks.
 *
 * Everything takes a file descriptor that JavaScript opened with node:fs.
 * Calls that can take long (fallocate, BLKDISCARD, BLKZEROOUT) run as async
 * work on the libuv thread pool and return a Promise; the rest are quick and
 * synchronous. readNowait/writeNowait are synchronous too: with RWF_NOWAIT
 * the kernel refuses (EAGAIN) rather than wait for the disk. Failures carry `code` (the errno name), `errno` (negative, as in
 * node:fs errors) and `syscall`.
 *
 * The module keeps no global state, so every worker thread may load it.
 * src/native/native.ts is its only user; it validates arguments too, but the
 * checks here keep the addon safe on its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <node_api.h>

#include "fd_watch.h"
#include "fuse_mount.h"
#include "napi_util.h"
#include "vhost_user.h"

#define MAX_ALIGNMENT_REPORTED 4096
#define MAX_BUFFER_ALIGNMENT (1u << 30)
#define MAX_BUFFER_SIZE 4294967296.0

/* Reads a lock type name; `allow_unlock` admits "unlock". */
static bool get_lock_type(napi_env env, napi_value *argv, size_t argc,
                          size_t index, bool allow_unlock, short *out) {
  napi_valuetype type = napi_undefined;
  if (index < argc)
    NAPI_CHECK(env, napi_typeof(env, argv[index], &type));
  char name[16] = "";
  if (type == napi_string) {
    size_t length;
    NAPI_CHECK(env, napi_get_value_string_utf8(env, argv[index], name,
                                               sizeof(name), &length));
  }
  if (strcmp(name, "read") == 0) {
    *out = F_RDLCK;
    return true;
  }
  if (strcmp(name, "write") == 0) {
    *out = F_WRLCK;
    return true;
  }
  if (allow_unlock && strcmp(name, "unlock") == 0) {
    *out = F_UNLCK;
    return true;
  }
  napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE",
                        allow_unlock
                            ? "type must be 'read', 'write' or 'unlock'"
                            : "type must be 'read' or 'write'");
  return false;
}

/* ---- lseek SEEK_DATA / SEEK_HOLE ---------------------------------------- */

static napi_value seek(napi_env env, napi_callback_info info, int whence) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  int64_t offset;
  if (!get_fd(env, argv, argc, &fd) ||
      !get_integer(env, argv, argc, 1, "offset", 0, MAX_SAFE_INTEGER, &offset))
    return NULL;

  off_t found = lseek(fd, (off_t)offset, whence);
  if (found < 0 && errno != ENXIO) {
    throw_errno(env, errno, "lseek");
    return NULL;
  }
  return int64_result(env, found < 0 ? -1 : (int64_t)found);
}

static napi_value seek_data(napi_env env, napi_callback_info info) {
  return seek(env, info, SEEK_DATA);
}

static napi_value seek_hole(napi_env env, napi_callback_info info) {
  return seek(env, info, SEEK_HOLE);
}

/* ---- range operations on the thread pool --------------------------------- */

enum range_op {
  RANGE_FALLOCATE,
  RANGE_BLKDISCARD,
  RANGE_BLKZEROOUT,
};

struct range_request {
  napi_async_work work;
  napi_deferred deferred;
  enum range_op op;
  int fd;
  int mode; /* fallocate mode */
  int64_t offset;
  int64_t length;
  int err; /* errno of the call, 0 on success */
};

static const char *range_syscall(enum range_op op) {
  switch (op) {
  case RANGE_FALLOCATE:
    return "fallocate";
  case RANGE_BLKDISCARD:
    return "ioctl(BLKDISCARD)";
  case RANGE_BLKZEROOUT:
    return "ioctl(BLKZEROOUT)";
  }
  return "unknown";
}

/* Runs on a thread-pool thread: no napi calls allowed here. */
static void range_execute(napi_env env, void *data) {
  (void)env;
  struct range_request *req = data;
  /* The kernel rejects empty ranges with EINVAL; an empty range is a no-op. */
  if (req->length == 0) {
    req->err = 0;
    return;
  }
  int rc;
  do {
    if (req->op == RANGE_FALLOCATE) {
      rc = fallocate(req->fd, req->mode, (off_t)req->offset,
                     (off_t)req->length);
    } else {
      uint64_t range[2] = {(uint64_t)req->offset, (uint64_t)req->length};
      rc = ioctl(req->fd,
                 req->op == RANGE_BLKDISCARD ? BLKDISCARD : BLKZEROOUT, range);
    }
  } while (rc < 0 && errno == EINTR);
  req->err = rc < 0 ? errno : 0;
}

/* Runs on the JavaScript thread: settles the promise and frees the request. */
static void range_complete(napi_env env, napi_status status, void *data) {
  struct range_request *req = data;
  int err = status == napi_cancelled ? ECANCELED : req->err;
  napi_status settled;
  if (err == 0) {
    napi_value undefined;
    settled = napi_get_undefined(env, &undefined);
    if (settled == napi_ok)
      settled = napi_resolve_deferred(env, req->deferred, undefined);
  } else {
    napi_value error;
    settled = make_errno_error(env, err, range_syscall(req->op), &error);
    if (settled == napi_ok)
      settled = napi_reject_deferred(env, req->deferred, error);
  }
  napi_status deleted = napi_delete_async_work(env, req->work);
  free(req);
  /* A promise that can never settle would hang its caller: say so loudly. */
  if (settled != napi_ok)
    throw_napi_failure(env, "settling a range operation");
  else if (deleted != napi_ok)
    throw_napi_failure(env, "napi_delete_async_work");
}

/* Parses (fd, offset, length) and queues the operation; returns its promise. */
static napi_value start_range_op(napi_env env, napi_value *argv, size_t argc,
                                 enum range_op op, int mode,
                                 const char *resource) {
  int fd;
  int64_t offset, length;
  if (!get_fd(env, argv, argc, &fd) ||
      !get_integer(env, argv, argc, 1, "offset", 0, MAX_SAFE_INTEGER,
                   &offset) ||
      !get_integer(env, argv, argc, 2, "length", 0, MAX_SAFE_INTEGER, &length))
    return NULL;

  struct range_request *req = calloc(1, sizeof(*req));
  if (req == NULL) {
    throw_errno(env, ENOMEM, "calloc");
    return NULL;
  }
  req->op = op;
  req->fd = fd;
  req->mode = mode;
  req->offset = offset;
  req->length = length;

  napi_value resource_name, promise;
  if (napi_create_string_utf8(env, resource, NAPI_AUTO_LENGTH,
                              &resource_name) != napi_ok ||
      napi_create_async_work(env, NULL, resource_name, range_execute,
                             range_complete, req, &req->work) != napi_ok) {
    free(req);
    throw_napi_failure(env, "napi_create_async_work");
    return NULL;
  }
  if (napi_create_promise(env, &req->deferred, &promise) != napi_ok) {
    (void)napi_delete_async_work(env, req->work);
    free(req);
    throw_napi_failure(env, "napi_create_promise");
    return NULL;
  }
  if (napi_queue_async_work(env, req->work) != napi_ok) {
    /* The promise exists now: settle it rather than leave it pending. */
    napi_value message, error;
    if (napi_create_string_utf8(env, "qbd_native: napi_queue_async_work failed",
                                NAPI_AUTO_LENGTH, &message) == napi_ok &&
        napi_create_error(env, NULL, message, &error) == napi_ok)
      (void)napi_reject_deferred(env, req->deferred, error);
    (void)napi_delete_async_work(env, req->work);
    free(req);
  }
  return promise;
}

static napi_value punch_hole(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  return start_range_op(env, argv, argc, RANGE_FALLOCATE,
                        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        "qbd:punchHole");
}

static napi_value zero_range(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool keep_size = false;
  if (argc > 3) {
    napi_valuetype type;
    NAPI_CALL(env, napi_typeof(env, argv[3], &type));
    if (type == napi_boolean) {
      NAPI_CALL(env, napi_get_value_bool(env, argv[3], &keep_size));
    } else if (type != napi_undefined) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE",
                            "keepSize must be a boolean");
      return NULL;
    }
  }
  int mode = FALLOC_FL_ZERO_RANGE | (keep_size ? FALLOC_FL_KEEP_SIZE : 0);
  return start_range_op(env, argv, argc, RANGE_FALLOCATE, mode,
                        "qbd:zeroRange");
}

static napi_value allocate(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  return start_range_op(env, argv, argc, RANGE_FALLOCATE, 0, "qbd:allocate");
}

static napi_value block_device_discard(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  return start_range_op(env, argv, argc, RANGE_BLKDISCARD, 0,
                        "qbd:blockDeviceDiscard");
}

static napi_value block_device_zero_out(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  return start_range_op(env, argv, argc, RANGE_BLKZEROOUT, 0,
                        "qbd:blockDeviceZeroOut");
}

/* ---- page-cache reads and writes that never wait (RWF_NOWAIT) ----------- */

/* What readNowait/writeNowait answer instead of a byte count. */
#define NOWAIT_WOULD_BLOCK -1
#define NOWAIT_UNSUPPORTED -2

/*
 * One preadv2/pwritev2 with RWF_NOWAIT on the calling thread, for
 * (fd, buf, offset). Answers the bytes transferred (possibly fewer than
 * asked: the rest is not cached, or the file ends), NOWAIT_WOULD_BLOCK when
 * nothing could be done without waiting for the disk, or NOWAIT_UNSUPPORTED
 * when the kernel or file cannot do it at all (the caller should stop
 * trying). Other failures throw.
 */
static napi_value rw_nowait(napi_env env, napi_callback_info info, bool write) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  if (!get_fd(env, argv, argc, &fd))
    return NULL;
  bool is_typed_array = false;
  if (argc >= 2)
    NAPI_CALL(env, napi_is_typedarray(env, argv[1], &is_typed_array));
  napi_typedarray_type type = napi_int8_array;
  size_t length = 0, byte_offset;
  void *data = NULL;
  napi_value array_buffer;
  if (is_typed_array)
    NAPI_CALL(env, napi_get_typedarray_info(env, argv[1], &type, &length,
                                            &data, &array_buffer,
                                            &byte_offset));
  if (!is_typed_array || type != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE",
                          "buf must be a Uint8Array");
    return NULL;
  }
  int64_t offset;
  if (!get_integer(env, argv, argc, 2, "offset", 0, MAX_SAFE_INTEGER, &offset))
    return NULL;

  ssize_t done = 0;
  if (length > 0) {
#ifdef RWF_NOWAIT
    struct iovec iov = {data, length};
    do
      done = write ? pwritev2(fd, &iov, 1, (off_t)offset, RWF_NOWAIT)
                   : preadv2(fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
    while (done < 0 && errno == EINTR);
    if (done < 0) {
      if (errno == EAGAIN)
        done = NOWAIT_WOULD_BLOCK;
      else if (errno == EOPNOTSUPP || errno == ENOTSUP || errno == ENOSYS)
        done = NOWAIT_UNSUPPORTED;
      else {
        throw_errno(env, errno, write ? "pwritev2" : "preadv2");
        return NULL;
      }
    }
#else
    done = NOWAIT_UNSUPPORTED;
#endif
  }
  return int64_result(env, (int64_t)done);
}

static napi_value read_nowait(napi_env env, napi_callback_info info) {
  return rw_nowait(env, info, false);
}

static napi_value write_nowait(napi_env env, napi_callback_info info) {
  return rw_nowait(env, info, true);
}

/* ---- block device queries ------------------------------------------------ */

static napi_value block_device_size(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_fd_argument(env, info, &fd))
    return NULL;
  uint64_t size;
  if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
    throw_errno(env, errno, "ioctl(BLKGETSIZE64)");
    return NULL;
  }
  if ((double)size > MAX_SAFE_INTEGER) {
    throw_errno(env, EOVERFLOW, "ioctl(BLKGETSIZE64)");
    return NULL;
  }
  return int64_result(env, (int64_t)size);
}

static napi_value logical_block_size(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_fd_argument(env, info, &fd))
    return NULL;
  int size;
  if (ioctl(fd, BLKSSZGET, &size) < 0) {
    throw_errno(env, errno, "ioctl(BLKSSZGET)");
    return NULL;
  }
  return int32_result(env, size);
}

/* ---- open file description locks ---------------------------------------- */

/* Reads (fd, start, length, type) into `lock`; length 0 means "to the end". */
static bool get_lock_args(napi_env env, napi_value *argv, size_t argc,
                          bool allow_unlock, int *fd, struct flock *lock) {
  int64_t start, length;
  short type;
  if (!get_fd(env, argv, argc, fd) ||
      !get_integer(env, argv, argc, 1, "start", 0, MAX_SAFE_INTEGER, &start) ||
      !get_integer(env, argv, argc, 2, "length", 0, MAX_SAFE_INTEGER,
                   &length) ||
      !get_lock_type(env, argv, argc, 3, allow_unlock, &type))
    return false;
  memset(lock, 0, sizeof(*lock)); /* OFD locks require l_pid == 0 */
  lock->l_type = type;
  lock->l_whence = SEEK_SET;
  lock->l_start = (off_t)start;
  lock->l_len = (off_t)length;
  return true;
}

static napi_value ofd_set_lock(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  struct flock lock;
  if (!get_lock_args(env, argv, argc, true, &fd, &lock))
    return NULL;
  int rc;
  do
    rc = fcntl(fd, F_OFD_SETLK, &lock);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    throw_errno(env, errno, "fcntl(F_OFD_SETLK)");
    return NULL;
  }
  return NULL; /* undefined */
}

static napi_value ofd_test_lock(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  struct flock lock;
  if (!get_lock_args(env, argv, argc, false, &fd, &lock))
    return NULL;
  int rc;
  do
    rc = fcntl(fd, F_OFD_GETLK, &lock);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    throw_errno(env, errno, "fcntl(F_OFD_GETLK)");
    return NULL;
  }
  napi_value result, conflict;
  NAPI_CALL(env, napi_create_object(env, &result));
  NAPI_CALL(env, napi_get_boolean(env, lock.l_type != F_UNLCK, &conflict));
  NAPI_CALL(env, napi_set_named_property(env, result, "conflict", conflict));
  /* An OFD lock has no owning process: the kernel reports l_pid = -1. */
  if (lock.l_type != F_UNLCK && lock.l_pid > 0) {
    napi_value pid;
    NAPI_CALL(env, napi_create_int32(env, lock.l_pid, &pid));
    NAPI_CALL(env, napi_set_named_property(env, result, "pid", pid));
  }
  return result;
}

/* ---- aligned memory ------------------------------------------------------ */

static void free_aligned(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static napi_value aligned_buffer(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t size, alignment;
  if (!get_integer(env, argv, argc, 0, "size", 0, MAX_BUFFER_SIZE, &size) ||
      !get_integer(env, argv, argc, 1, "alignment", 1, MAX_BUFFER_ALIGNMENT,
                   &alignment))
    return NULL;
  if ((alignment & (alignment - 1)) != 0) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                           "alignment must be a power of two");
    return NULL;
  }
  /* posix_memalign wants a multiple of sizeof(void *); more is still fine. */
  size_t align = (size_t)alignment < sizeof(void *) ? sizeof(void *)
                                                     : (size_t)alignment;
  void *memory = NULL;
  int err = posix_memalign(&memory, align, size > 0 ? (size_t)size : 1);
  if (err != 0) {
    throw_errno(env, err, "posix_memalign");
    return NULL;
  }
  /* Never hand out stale heap contents: they could reach a client. */
  memset(memory, 0, size > 0 ? (size_t)size : 1);
  napi_value buffer;
  if (napi_create_external_buffer(env, (size_t)size, memory, free_aligned,
                                  NULL, &buffer) != napi_ok) {
    free(memory);
    throw_napi_failure(env, "napi_create_external_buffer");
    return NULL;
  }
  return buffer;
}

static napi_value buffer_address_alignment(napi_env env,
                                           napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool is_typed_array = false;
  if (argc >= 1)
    NAPI_CALL(env, napi_is_typedarray(env, argv[0], &is_typed_array));
  if (!is_typed_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE",
                          "buf must be a Uint8Array");
    return NULL;
  }
  napi_typedarray_type type;
  size_t length, byte_offset;
  void *data = NULL;
  napi_value array_buffer;
  /* `data` already points at the view's first element. */
  NAPI_CALL(env, napi_get_typedarray_info(env, argv[0], &type, &length, &data,
                                          &array_buffer, &byte_offset));
  uintptr_t address = (uintptr_t)data;
  uintptr_t alignment = address & (~address + 1); /* lowest set bit */
  if (address == 0 || alignment > MAX_ALIGNMENT_REPORTED)
    alignment = MAX_ALIGNMENT_REPORTED;
  napi_value result;
  NAPI_CALL(env, napi_create_uint32(env, (uint32_t)alignment, &result));
  return result;
}

/* ---- descriptors ---------------------------------------------------------- */

/* A second descriptor for the same open socket or file, close-on-exec: lets
   one thread hand a connection to another, each closing its own copy. */
static napi_value dup_fd(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_fd_argument(env, info, &fd))
    return NULL;
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) {
    throw_errno(env, errno, "fcntl(F_DUPFD_CLOEXEC)");
    return NULL;
  }
  return int32_result(env, copy);
}

/* ---- module -------------------------------------------------------------- */

NAPI_MODULE_INIT() {
  const napi_property_descriptor functions[] = {
      {"seekData", NULL, seek_data, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seekHole", NULL, seek_hole, NULL, NULL, NULL, napi_enumerable, NULL},
      {"punchHole", NULL, punch_hole, NULL, NULL, NULL, napi_enumerable, NULL},
      {"zeroRange", NULL, zero_range, NULL, NULL, NULL, napi_enumerable, NULL},
      {"allocate", NULL, allocate, NULL, NULL, NULL, napi_enumerable, NULL},
      {"blockDeviceSize", NULL, block_device_size, NULL, NULL, NULL,
       napi_enumerable, NULL},
      {"logicalBlockSize", NULL, logical_block_size, NULL, NULL, NULL,
       napi_enumerable, NULL},
      {"blockDeviceDiscard", NULL, block_device_discard, NULL, NULL, NULL,
       napi_enumerable, NULL},
      {"blockDeviceZeroOut", NULL, block_device_zero_out, NULL, NULL, NULL,
       napi_enumerable, NULL},
      {"ofdSetLock", NULL, ofd_set_lock, NULL, NULL, NULL, napi_enumerable,
       NULL},
      {"ofdTestLock", NULL, ofd_test_lock, NULL, NULL, NULL, napi_enumerable,
       NULL},
      {"alignedBuffer", NULL, aligned_buffer, NULL, NULL, NULL,
       napi_enumerable, NULL},
      {"bufferAddressAlignment", NULL, buffer_address_alignment, NULL, NULL,
       NULL, napi_enumerable, NULL},
      {"dupFd", NULL, dup_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readNowait", NULL, read_nowait, NULL, NULL, NULL, napi_enumerable,
       NULL},
      {"writeNowait", NULL, write_nowait, NULL, NULL, NULL, napi_enumerable,
       NULL},
  };
  NAPI_CALL(env, napi_define_properties(
                     env, exports, sizeof(functions) / sizeof(functions[0]),
                     functions));
  NAPI_CALL(env, register_fd_watch(env, exports));
  NAPI_CALL(env, register_fuse_mount(env, exports));
  NAPI_CALL(env, register_vhost_user(env, exports));
  return exports;
}
