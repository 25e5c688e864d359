/**
 * strerror() texts for the errno codes that reach users in QMP errors
 * ("Could not open 'x': No such file or directory"). Node reports the code;
 * QEMU prints the C library's message.
 */
const MESSAGES: Record<string, string> = {
  EPERM: 'Operation not permitted',
  ENOENT: 'No such file or directory',
  EIO: 'Input/output error',
  ENXIO: 'No such device or address',
  EBADF: 'Bad file descriptor',
  EAGAIN: 'Resource temporarily unavailable',
  ENOMEM: 'Cannot allocate memory',
  EACCES: 'Permission denied',
  EBUSY: 'Device or resource busy',
  EEXIST: 'File exists',
  ENODEV: 'No such device',
  ENOTDIR: 'Not a directory',
  EISDIR: 'Is a directory',
  EINVAL: 'Invalid argument',
  EFBIG: 'File too large',
  ENOSPC: 'No space left on device',
  EROFS: 'Read-only file system',
  ENAMETOOLONG: 'File name too long',
  ENOSYS: 'Function not implemented',
  ELOOP: 'Too many levels of symbolic links',
  ENOTSUP: 'Operation not supported',
  EOPNOTSUPP: 'Operation not supported',
  ECONNREFUSED: 'Connection refused',
  ETIMEDOUT: 'Connection timed out',
  EDQUOT: 'Disk quota exceeded',
  ERANGE: 'Numerical result out of range',
  ESHUTDOWN: 'Cannot send after transport endpoint shutdown',
};

export function strerror(code: string | undefined): string {
  return (code && MESSAGES[code]) ?? code ?? 'Unknown error';
}
