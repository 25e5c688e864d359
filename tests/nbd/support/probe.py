"""Sends exact NBD requests with libnbd (strict checks off, so bad requests
reach the server) and prints what each one got, as JSON: 0 for success, the
errno name for an error reply."""
import errno
import json
import sys

import nbd

ro_uri, rw_uri = sys.argv[1], sys.argv[2]


def connect(uri, structured=True, contexts=('base:allocation',)):
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.set_request_structured_replies(structured)
    for c in contexts:
        h.add_meta_context(c)
    h.connect_uri(uri)
    return h


def outcome(fn):
    try:
        fn()
        return 0
    except nbd.Error as e:
        return errno.errorcode.get(e.errnum, str(e.errnum)) if e.errnum else 'disconnected'


out = {}
ro = connect(ro_uri)
size = ro.get_size()
out['read past the end'] = outcome(lambda: ro.pread(512, size - 256))
out['read starting past the end'] = outcome(lambda: ro.pread(512, size + 4096))
out['unaligned read'] = outcome(lambda: ro.pread(3, 1))
out['zero-length read'] = outcome(lambda: ro.pread(0, 0))
out['read with an unknown flag'] = outcome(lambda: ro.pread(512, 0, 1 << 7))
out['read with FUA'] = outcome(lambda: ro.pread(512, 0, nbd.CMD_FLAG_FUA))
out['write to a read-only export'] = outcome(lambda: ro.pwrite(b'x' * 512, 0))
out['trim on a read-only export'] = outcome(lambda: ro.trim(512, 0))
out['zero on a read-only export'] = outcome(lambda: ro.zero(512, 0))
out['flush on a read-only export'] = outcome(lambda: ro.flush())
out['cache'] = outcome(lambda: ro.cache(4096, 0))
out['cache past the end'] = outcome(lambda: ro.cache(4096, size))
out['read of 64 MiB'] = outcome(lambda: ro.pread(64 << 20, 0))
out['block status past the end'] = outcome(lambda: ro.block_status(4096, size, lambda *a: 0))
out['still serving after errors'] = outcome(lambda: ro.pread(512, 0))

rw = connect(rw_uri)
size = rw.get_size()
out['write past the end'] = outcome(lambda: rw.pwrite(b'x' * 512, size - 256))
out['write starting past the end'] = outcome(lambda: rw.pwrite(b'x' * 512, size + 4096))
out['zero past the end'] = outcome(lambda: rw.zero(4096, size))
out['trim past the end'] = outcome(lambda: rw.trim(4096, size))
out['unaligned write'] = outcome(lambda: rw.pwrite(b'abc', 5))
out['unaligned read back'] = rw.pread(3, 5).decode()
out['write with FUA'] = outcome(lambda: rw.pwrite(b'y' * 4096, 4096, nbd.CMD_FLAG_FUA))
out['write with an unknown flag'] = outcome(lambda: rw.pwrite(b'y' * 512, 0, 1 << 9))
out['zero with NO_HOLE'] = outcome(lambda: rw.zero(4096, 8192, nbd.CMD_FLAG_NO_HOLE))
out['zero reads back as zero'] = rw.pread(4096, 8192) == bytes(4096)
out['trim'] = outcome(lambda: rw.trim(65536, 65536))
out['trim with FUA'] = outcome(lambda: rw.trim(65536, 65536, nbd.CMD_FLAG_FUA))
out['flush'] = outcome(lambda: rw.flush())
out['write of 33 MiB'] = outcome(lambda: rw.pwrite(bytes(33 << 20), 0))
out['still serving after an oversized write'] = outcome(lambda: rw.pread(512, 0))

simple = connect(rw_uri, structured=False, contexts=())
out['simple replies: read'] = outcome(lambda: simple.pread(512, 0))
out['simple replies: read past the end'] = outcome(lambda: simple.pread(512, size))
out['simple replies: DF flag'] = outcome(lambda: simple.pread(512, 0, nbd.CMD_FLAG_DF))

print(json.dumps(out, indent=1))
