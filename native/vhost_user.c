/*
 * What a vhost-user back-end needs and Node lacks: messages that carry file
 * descriptors over a UNIX socket (SCM_RIGHTS), guest memory regions mapped
 * from the descriptors a front-end sends, and the eventfds and memfds a
 * front-end creates (tests play the front-end).
 *
 * recvWithFds(fd, buf, offset, length) -> { bytes, fds }
 *   One recvmsg(MSG_DONTWAIT): bytes read (0 at end), or a negative errno
 *   (-EAGAIN: nothing yet); fds are the descriptors that came with them,
 *   close-on-exec. A message whose descriptors did not fit answers -EMSGSIZE
 *   and closes those that did.
 * sendWithFds(fd, buf, offset, length, fds) -> bytes or a negative errno.
 * mapShared(fd, offset, length) -> ArrayBuffer over mmap(MAP_SHARED,
 *   PROT_READ | PROT_WRITE) of the range; unmapped once the buffer is
 *   released (releaseMapping detaches it) and no view uses it any more.
 *   Lengths over Node's buffer limit (4 GiB on Node 20), and ranges past
 *   the end of a regular file (memfds are), throw.
 * releaseMapping(arrayBuffer): detaches the buffer, so JavaScript can no
 *   longer reach the memory, and lets the unmapping happen.
 * eventFd(nonBlocking) -> descriptor; memFd(name, size) -> descriptor.
 * closeFd(fd): close(2) of a descriptor node:fs did not open (a worker's
 *   fs.close warns about those).
 * setNonBlocking(fd): O_NONBLOCK on a received descriptor, so that a
 *   notifier a front-end never drains cannot block the serving thread.
 *
 * Failed system calls throw errno errors, except in the two message calls,
 * which their callers poll.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <node_api.h>

#include "napi_util.h"
#include "vhost_user.h"

/* More than any message of the protocol carries (a memory table has 8 at most). */
#define MAX_FDS 32
#define MAX_MAPPING 1099511627776.0

struct mapping {
  void *address;
  size_t length;
};

static napi_value recv_with_fds(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  uint8_t *data;
  size_t length;
  if (!get_fd(env, argv, argc, &fd) || !get_byte_range(env, argv, argc, 1, &data, &length)) return NULL;

  union {
    char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = data, .iov_len = length};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof(control.buf)};
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  int64_t bytes = n < 0 ? -(int64_t)errno : (int64_t)n;

  int fds[MAX_FDS];
  uint32_t count = 0;
  if (n >= 0) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k && count < MAX_FDS; i++) memcpy(&fds[count++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    if (msg.msg_flags & MSG_CTRUNC) {
      for (uint32_t i = 0; i < count; i++) close(fds[i]);
      count = 0;
      bytes = -EMSGSIZE;
    }
  }

  napi_value result, value, list;
  NAPI_CALL(env, napi_create_object(env, &result));
  NAPI_CALL(env, napi_create_int64(env, bytes, &value));
  NAPI_CALL(env, napi_set_named_property(env, result, "bytes", value));
  NAPI_CALL(env, napi_create_array_with_length(env, count, &list));
  for (uint32_t i = 0; i < count; i++) {
    NAPI_CALL(env, napi_create_int32(env, fds[i], &value));
    NAPI_CALL(env, napi_set_element(env, list, i, value));
  }
  NAPI_CALL(env, napi_set_named_property(env, result, "fds", list));
  return result;
}

static napi_value send_with_fds(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  uint8_t *data;
  size_t length;
  if (!get_fd(env, argv, argc, &fd) || !get_byte_range(env, argv, argc, 1, &data, &length)) return NULL;
  bool is_array = false;
  if (argc > 4) NAPI_CALL(env, napi_is_array(env, argv[4], &is_array));
  uint32_t count = 0;
  if (is_array) NAPI_CALL(env, napi_get_array_length(env, argv[4], &count));
  if (!is_array || count > MAX_FDS) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fds must be an array of at most 32 descriptors");
    return NULL;
  }
  int fds[MAX_FDS];
  for (uint32_t i = 0; i < count; i++) {
    napi_value element;
    int32_t value = -1;
    NAPI_CALL(env, napi_get_element(env, argv[4], i, &element));
    if (napi_get_value_int32(env, element, &value) != napi_ok || value < 0) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fds must hold descriptors");
      return NULL;
    }
    fds[i] = value;
  }

  union {
    char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof(control));
  struct iovec iov = {.iov_base = data, .iov_len = length};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (count > 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(count * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(count * sizeof(int));
    memcpy(CMSG_DATA(c), fds, count * sizeof(int));
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return int64_result(env, n < 0 ? -(int64_t)errno : (int64_t)n);
}

static void unmap(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  struct mapping *m = hint;
  munmap(m->address, m->length);
  free(m);
}

static napi_value map_shared(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  int64_t offset, length;
  if (!get_fd(env, argv, argc, &fd) || !get_integer(env, argv, argc, 1, "offset", 0, MAX_SAFE_INTEGER, &offset) ||
      !get_integer(env, argv, argc, 2, "length", 1, MAX_MAPPING, &length))
    return NULL;
  /* Pages past the end of a file are not backed: touching them would kill
     the process with SIGBUS, so a front-end may not map them. */
  struct stat st;
  if (fstat(fd, &st) < 0) {
    throw_errno(env, errno, "fstat");
    return NULL;
  }
  if (S_ISREG(st.st_mode) && (double)offset + (double)length > (double)st.st_size) {
    throw_errno(env, EINVAL, "mmap");
    return NULL;
  }
  struct mapping *m = malloc(sizeof(*m));
  if (m == NULL) {
    throw_errno(env, ENOMEM, "mmap");
    return NULL;
  }
  m->length = (size_t)length;
  m->address = mmap(NULL, m->length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)offset);
  if (m->address == MAP_FAILED) {
    int err = errno;
    free(m);
    throw_errno(env, err, "mmap");
    return NULL;
  }
  napi_value buffer;
  /* On failure (a length over Node's buffer limit, for one) Node has already
     called `unmap`: the mapping is gone and must not be released again. */
  NAPI_CALL(env, napi_create_external_arraybuffer(env, m->address, m->length, unmap, m, &buffer));
  return buffer;
}

static napi_value release_mapping(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool is_buffer = false;
  if (argc >= 1) NAPI_CALL(env, napi_is_arraybuffer(env, argv[0], &is_buffer));
  if (!is_buffer) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "mapping must be an ArrayBuffer");
    return NULL;
  }
  bool detached = false;
  NAPI_CALL(env, napi_is_detached_arraybuffer(env, argv[0], &detached));
  if (!detached) NAPI_CALL(env, napi_detach_arraybuffer(env, argv[0]));
  return NULL;
}

static napi_value event_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool non_blocking = false;
  if (argc >= 1) NAPI_CALL(env, napi_get_value_bool(env, argv[0], &non_blocking));
  int fd = eventfd(0, EFD_CLOEXEC | (non_blocking ? EFD_NONBLOCK : 0));
  if (fd < 0) {
    throw_errno(env, errno, "eventfd");
    return NULL;
  }
  return int32_result(env, fd);
}

static napi_value mem_fd(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *name = get_string(env, argv, argc, 0, "name");
  if (name == NULL) return NULL;
  int64_t size;
  if (!get_integer(env, argv, argc, 1, "size", 0, MAX_MAPPING, &size)) {
    free(name);
    return NULL;
  }
  int fd = memfd_create(name, MFD_CLOEXEC);
  free(name);
  if (fd < 0) {
    throw_errno(env, errno, "memfd_create");
    return NULL;
  }
  if (ftruncate(fd, (off_t)size) < 0) {
    int err = errno;
    close(fd);
    throw_errno(env, err, "ftruncate");
    return NULL;
  }
  return int32_result(env, fd);
}

static napi_value close_fd(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_fd_argument(env, info, &fd)) return NULL;
  if (close(fd) < 0 && errno != EINTR) {
    throw_errno(env, errno, "close");
    return NULL;
  }
  return NULL;
}

static napi_value set_non_blocking(napi_env env, napi_callback_info info) {
  int fd;
  if (!get_fd_argument(env, info, &fd)) return NULL;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    throw_errno(env, errno, "fcntl(F_SETFL)");
    return NULL;
  }
  return NULL;
}

napi_status register_vhost_user(napi_env env, napi_value exports) {
  const napi_property_descriptor functions[] = {
      {"recvWithFds", NULL, recv_with_fds, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendWithFds", NULL, send_with_fds, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mapShared", NULL, map_shared, NULL, NULL, NULL, napi_enumerable, NULL},
      {"releaseMapping", NULL, release_mapping, NULL, NULL, NULL, napi_enumerable, NULL},
      {"eventFd", NULL, event_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"memFd", NULL, mem_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"closeFd", NULL, close_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setNonBlocking", NULL, set_non_blocking, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof(functions) / sizeof(functions[0]), functions);
}
