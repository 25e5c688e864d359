/*
 * Descriptor passing, shared mappings, eventfds and memfds for the
 * vhost-user-blk export (and the front-end its tests play).
 */
#ifndef QBD_VHOST_USER_H
#define QBD_VHOST_USER_H

#include <node_api.h>

/* Adds recvWithFds, sendWithFds, mapShared, releaseMapping, eventFd, memFd, closeFd and setNonBlocking to `exports`. */
napi_status register_vhost_user(napi_env env, napi_value exports);

#endif
