# Writes COUNT blocks of 64 KiB through an NBD URI, block i filled with
# byte (i % 250) + 1, one at a time, printing "ack i" once each write is
# acknowledged; then flushes and prints "done". Exits non-zero on any error.
import sys
import time
import nbd

uri, count = sys.argv[1], int(sys.argv[2])
h = nbd.NBD()
h.connect_uri(uri)
for i in range(count):
    h.pwrite(bytes([(i % 250) + 1]) * 65536, i * 65536)
    print("ack %d" % i, flush=True)
    time.sleep(0.02)
h.flush()
print("done", flush=True)
h.shutdown()
