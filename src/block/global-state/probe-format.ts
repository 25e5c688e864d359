/** Guessing an image file's format where none is given (a backing file, a drive-* target in mode existing): qcow2 by magic, raw otherwise. */
import * as fs from 'node:fs';
import { QCOW2_MAGIC } from '../drivers/qcow2/common';

export function probeFormat(filename: string): string {
  try {
    const fd = fs.openSync(filename, 'r');
    try {
      const b = Buffer.alloc(4);
      fs.readSync(fd, b, 0, 4, 0);
      return b.readUInt32BE(0) === QCOW2_MAGIC ? 'qcow2' : 'raw';
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return 'raw';
  }
}
