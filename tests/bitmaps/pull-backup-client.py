# A pull-mode incremental backup client: reads from an NBD export only the
# extents the export's qemu:dirty-bitmap:NAME context marks dirty and writes
# them into the backup image at the same offsets. Prints the bytes copied.
# Usage: pull-backup-client.py URI BITMAP BACKUP_FILE
import sys
import nbd

uri, bitmap, backup = sys.argv[1], sys.argv[2], sys.argv[3]
context = 'qemu:dirty-bitmap:' + bitmap
h = nbd.NBD()
h.add_meta_context(context)
h.connect_uri(uri)
if not h.can_meta_context(context):
    sys.exit('the server does not offer ' + context)
size = h.get_size()
dirty = []


def extents(metacontext, offset, entries, err):
    if metacontext != context:
        return 0
    at = offset
    for i in range(0, len(entries), 2):
        length, flags = entries[i], entries[i + 1]
        if flags & 1:
            dirty.append((at, length))
        at += length
    seen[0] = at
    return 0


seen = [0]
offset = 0
while offset < size:
    seen[0] = offset
    h.block_status(min(size - offset, 1 << 30), offset, extents)
    offset = min(size, seen[0])

copied = 0
with open(backup, 'r+b') as out:
    for at, length in dirty:
        length = min(length, size - at)
        for chunk in range(at, at + length, 1 << 22):
            n = min(1 << 22, at + length - chunk)
            out.seek(chunk)
            out.write(h.pread(n, chunk))
            copied += n
h.shutdown()
print(copied)
