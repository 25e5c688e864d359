/** The I/O callback tables of every driver, by QAPI driver name. */
import type { IoDriver } from './driver-io';
import { fileIo } from '../drivers/file/io';
import { nullIo } from '../drivers/null/io';
import { qcow2Io } from '../drivers/qcow2/io';
import { nbdIo } from '../drivers/nbd/io';
import { rawIo } from '../drivers/raw/io';
import { mirrorTopIo } from '../drivers/mirror-top/io';
import { copyBeforeWriteIo } from '../drivers/copy-before-write/io';
import { commitTopIo } from '../drivers/commit-top/io';
import { copyOnReadIo } from '../drivers/copy-on-read/io';
import { snapshotAccessIo } from '../drivers/snapshot-access/io';

export const ioDrivers = new Map<string, IoDriver<any>>([
  ['file', fileIo],
  ['host_device', fileIo],
  ['nbd', nbdIo],
  ['raw', rawIo],
  ['qcow2', qcow2Io],
  ['null-co', nullIo],
  ['null-aio', nullIo],
  ['mirror_top', mirrorTopIo],
  ['copy-before-write', copyBeforeWriteIo],
  ['commit_top', commitTopIo],
  ['copy-on-read', copyOnReadIo],
  ['snapshot-access', snapshotAccessIo],
]);
