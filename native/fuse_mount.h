/*
 * mount(2) and umount2(2), which a FUSE export needs to put its file system
 * over the mountpoint and take it away again, and Node does not offer.
 */
#ifndef QBD_FUSE_MOUNT_H
#define QBD_FUSE_MOUNT_H

#include <node_api.h>

/* Adds mount and umount2 to `exports`. */
napi_status register_fuse_mount(napi_env env, napi_value exports);

#endif
