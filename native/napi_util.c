/* Shared helpers of qbd_native; see napi_util.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "napi_util.h"

/* Paths and option strings are short; longer ones are refused, not cut. */
#define MAX_STRING 4096

void throw_napi_failure(napi_env env, const char *call) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending)
    return;
  const napi_extended_error_info *info = NULL;
  const char *why = NULL;
  if (napi_get_last_error_info(env, &info) == napi_ok && info != NULL)
    why = info->error_message;
  char message[256];
  snprintf(message, sizeof(message), "qbd_native: %s failed: %s", call,
           why != NULL ? why : "unknown N-API error");
  napi_throw_error(env, NULL, message);
}

/* errno names and texts for the failures these calls can report.
 * strerrorname_np() is glibc-only and strerror() is not thread-safe. */
struct errno_name {
  int number;
  const char *code;
  const char *text;
};

static const struct errno_name errno_names[] = {
    {EPERM, "EPERM", "operation not permitted"},
    {ENOENT, "ENOENT", "no such file or directory"},
    {EINTR, "EINTR", "interrupted system call"},
    {EIO, "EIO", "i/o error"},
    {ENXIO, "ENXIO", "no such device or address"},
    {EBADF, "EBADF", "bad file descriptor"},
    {EAGAIN, "EAGAIN", "resource temporarily unavailable"},
    {ENOMEM, "ENOMEM", "not enough memory"},
    {EACCES, "EACCES", "permission denied"},
    {EFAULT, "EFAULT", "bad address"},
    {EBUSY, "EBUSY", "resource busy"},
    {ENODEV, "ENODEV", "no such device"},
    {EISDIR, "EISDIR", "is a directory"},
    {EINVAL, "EINVAL", "invalid argument"},
    {ENOTTY, "ENOTTY", "inappropriate ioctl for device"},
    {ETXTBSY, "ETXTBSY", "text file is busy"},
    {EFBIG, "EFBIG", "file too large"},
    {ENOSPC, "ENOSPC", "no space left on device"},
    {ESPIPE, "ESPIPE", "invalid seek"},
    {EROFS, "EROFS", "read-only file system"},
    {EDEADLK, "EDEADLK", "resource deadlock avoided"},
    {ENOLCK, "ENOLCK", "no locks available"},
    {ENOSYS, "ENOSYS", "function not implemented"},
    {EOVERFLOW, "EOVERFLOW", "value too large for defined data type"},
    {EPIPE, "EPIPE", "broken pipe"},
    {ENOTCONN, "ENOTCONN", "socket is not connected"},
    {ECONNRESET, "ECONNRESET", "connection reset by peer"},
    {ENOTDIR, "ENOTDIR", "not a directory"},
    {EEXIST, "EEXIST", "file already exists"},
    {EMFILE, "EMFILE", "too many open files"},
    /* node:fs reports errno 95 as ENOTSUP; use the same name. */
    {ENOTSUP, "ENOTSUP", "operation not supported"},
#if EOPNOTSUPP != ENOTSUP
    {EOPNOTSUPP, "EOPNOTSUPP", "operation not supported"},
#endif
    {EDQUOT, "EDQUOT", "disk quota exceeded"},
    {ECANCELED, "ECANCELED", "operation canceled"},
};

napi_status make_errno_error(napi_env env, int err, const char *syscall,
                                    napi_value *result) {
  const char *code = "UNKNOWN";
  const char *text = "unknown error";
  for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++) {
    if (errno_names[i].number == err) {
      code = errno_names[i].code;
      text = errno_names[i].text;
      break;
    }
  }
  char message[160];
  if (strcmp(code, "UNKNOWN") == 0)
    snprintf(message, sizeof(message), "UNKNOWN: errno %d, %s", err, syscall);
  else
    snprintf(message, sizeof(message), "%s: %s, %s", code, text, syscall);

  napi_value code_value, message_value, syscall_value, errno_value;
  napi_status status;
  if ((status = napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH,
                                        &code_value)) != napi_ok ||
      (status = napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH,
                                        &message_value)) != napi_ok ||
      (status = napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH,
                                        &syscall_value)) != napi_ok ||
      (status = napi_create_int32(env, -err, &errno_value)) != napi_ok ||
      (status = napi_create_error(env, code_value, message_value, result)) !=
          napi_ok ||
      (status = napi_set_named_property(env, *result, "errno", errno_value)) !=
          napi_ok ||
      (status = napi_set_named_property(env, *result, "syscall",
                                        syscall_value)) != napi_ok)
    return status;
  return napi_ok;
}

void throw_errno(napi_env env, int err, const char *syscall) {
  napi_value error;
  if (make_errno_error(env, err, syscall, &error) != napi_ok) {
    throw_napi_failure(env, "make_errno_error");
    return;
  }
  if (napi_throw(env, error) != napi_ok)
    throw_napi_failure(env, "napi_throw");
}

bool get_integer(napi_env env, napi_value *argv, size_t argc,
                        size_t index, const char *name, double min, double max,
                        int64_t *out) {
  char message[128];
  napi_valuetype type = napi_undefined;
  if (index < argc)
    NAPI_CHECK(env, napi_typeof(env, argv[index], &type));
  if (type != napi_number) {
    snprintf(message, sizeof(message), "%s must be a number", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
    return false;
  }
  double value;
  NAPI_CHECK(env, napi_get_value_double(env, argv[index], &value));
  if (!isfinite(value) || trunc(value) != value || value < min ||
      value > max) {
    snprintf(message, sizeof(message), "%s must be an integer in [%.0f, %.0f]",
             name, min, max);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", message);
    return false;
  }
  *out = (int64_t)value;
  return true;
}

bool get_fd(napi_env env, napi_value *argv, size_t argc, int *fd) {
  int64_t value;
  if (!get_integer(env, argv, argc, 0, "fd", 0, 2147483647.0, &value))
    return false;
  *fd = (int)value;
  return true;
}

bool get_fd_argument(napi_env env, napi_callback_info info, int *fd) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  return get_fd(env, argv, argc, fd);
}


bool get_byte_range(napi_env env, napi_value *argv, size_t argc, size_t index,
                    uint8_t **data, size_t *length) {
  bool is_typed = false;
  if (argc > index)
    NAPI_CHECK(env, napi_is_typedarray(env, argv[index], &is_typed));
  napi_typedarray_type type = napi_int8_array;
  size_t elements = 0;
  void *base = NULL;
  if (is_typed)
    NAPI_CHECK(env, napi_get_typedarray_info(env, argv[index], &type,
                                             &elements, &base, NULL, NULL));
  if (!is_typed || type != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE",
                          "buf must be a Uint8Array");
    return false;
  }
  int64_t offset, count;
  if (!get_integer(env, argv, argc, index + 1, "offset", 0, (double)elements,
                   &offset) ||
      !get_integer(env, argv, argc, index + 2, "length", 0,
                   (double)elements - (double)offset, &count))
    return false;
  *data = (uint8_t *)base + offset;
  *length = (size_t)count;
  return true;
}

char *get_string(napi_env env, napi_value *argv, size_t argc, size_t index,
                 const char *name) {
  napi_valuetype type = napi_undefined;
  if (index < argc && napi_typeof(env, argv[index], &type) != napi_ok)
    return NULL;
  if (type != napi_string) {
    char message[64];
    snprintf(message, sizeof(message), "%s must be a string", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
    return NULL;
  }
  size_t length = 0;
  if (napi_get_value_string_utf8(env, argv[index], NULL, 0, &length) !=
      napi_ok)
    return NULL;
  if (length >= MAX_STRING) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                           "string argument too long");
    return NULL;
  }
  char *out = malloc(length + 1);
  if (out == NULL) {
    throw_errno(env, ENOMEM, "malloc");
    return NULL;
  }
  if (napi_get_value_string_utf8(env, argv[index], out, length + 1,
                                 &length) != napi_ok) {
    free(out);
    return NULL;
  }
  return out;
}

napi_value int32_result(napi_env env, int32_t value) {
  napi_value result;
  NAPI_CALL(env, napi_create_int32(env, value, &result));
  return result;
}

napi_value int64_result(napi_env env, int64_t value) {
  napi_value result;
  NAPI_CALL(env, napi_create_int64(env, value, &result));
  return result;
}
