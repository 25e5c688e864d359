/*
 * Watching a descriptor from the calling thread's event loop, and
 * non-blocking reads and writes on it: what an export needs for descriptors
 * Node cannot wrap in a stream (/dev/fuse, eventfds, sockets that carry
 * descriptors).
 */
#ifndef QBD_FD_WATCH_H
#define QBD_FD_WATCH_H

#include <node_api.h>

/* Adds watchFd, readFd and writeFd to `exports`. */
napi_status register_fd_watch(napi_env env, napi_value exports);

#endif
