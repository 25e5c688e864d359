/** The GS callback tables of every driver, by QAPI driver name. */
import type { GsDriver } from './driver-gs';
import { fileGs, hostDeviceGs } from '../drivers/file/gs';
import { nullAioGs, nullCoGs } from '../drivers/null/gs';
import { qcow2Gs } from '../drivers/qcow2/gs';
import { nbdGs } from '../drivers/nbd/gs';
import { rawGs } from '../drivers/raw/gs';
import { mirrorTopGs } from '../drivers/mirror-top/gs';
import { copyBeforeWriteGs } from '../drivers/copy-before-write/gs';
import { commitTopGs } from '../drivers/commit-top/gs';
import { copyOnReadGs } from '../drivers/copy-on-read/gs';
import { snapshotAccessGs } from '../drivers/snapshot-access/gs';

export const gsDrivers = new Map<string, GsDriver>([
  ['file', fileGs],
  ['host_device', hostDeviceGs],
  ['nbd', nbdGs],
  ['raw', rawGs],
  ['qcow2', qcow2Gs],
  ['null-co', nullCoGs],
  ['null-aio', nullAioGs],
  ['mirror_top', mirrorTopGs],
  ['copy-before-write', copyBeforeWriteGs],
  ['commit_top', commitTopGs],
  ['copy-on-read', copyOnReadGs],
  ['snapshot-access', snapshotAccessGs],
]);
