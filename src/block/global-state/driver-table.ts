/** The GS callback tables of every driver, by QAPI driver name. */
import type { GsDriver } from './driver-gs';
import { fileGs, hostDeviceGs } from '../drivers/file/gs';
import { nullAioGs, nullCoGs } from '../drivers/null/gs';
import { rawGs } from '../drivers/raw/gs';

export const gsDrivers = new Map<string, GsDriver>([
  ['file', fileGs],
  ['host_device', hostDeviceGs],
  ['raw', rawGs],
  ['null-co', nullCoGs],
  ['null-aio', nullAioGs],
]);
