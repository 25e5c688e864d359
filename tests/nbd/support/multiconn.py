"""Multi-conn: a write acknowledged on one connection, then a flush on a
second, must be visible on a third. Prints 'ok' or what went wrong."""
import sys

import nbd

uri = sys.argv[1]
handles = []
for _ in range(3):
    h = nbd.NBD()
    h.connect_uri(uri)
    handles.append(h)
writer, flusher, reader = handles
if not writer.can_multi_conn():
    print('multi-conn not advertised')
    sys.exit(0)
pattern = bytes([0xA5]) * 65536
writer.pwrite(pattern, 131072)
flusher.flush()
got = reader.pread(65536, 131072)
print('ok' if got == pattern else 'stale data')
