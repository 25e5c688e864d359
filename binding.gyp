{
  "targets": [
    {
      "target_name": "qbd_native",
      "sources": [
        "native/qbd_native.c",
        "native/napi_util.c",
        "native/fd_watch.c",
        "native/fuse_mount.c",
        "native/vhost_user.c"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "_GNU_SOURCE",
        "_FILE_OFFSET_BITS=64"
      ],
      "cflags_c": [
        "-std=gnu11",
        "-Wall",
        "-Wextra",
        "-Wshadow",
        "-Wconversion",
        "-Wno-sign-conversion"
      ]
    }
  ]
}
