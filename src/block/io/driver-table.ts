/** The I/O callback tables of every driver, by QAPI driver name. */
import type { IoDriver } from './driver-io';
import { fileIo } from '../drivers/file/io';
import { nullIo } from '../drivers/null/io';
import { rawIo } from '../drivers/raw/io';

export const ioDrivers = new Map<string, IoDriver<any>>([
  ['file', fileIo],
  ['host_device', fileIo],
  ['raw', rawIo],
  ['null-co', nullIo],
  ['null-aio', nullIo],
]);
