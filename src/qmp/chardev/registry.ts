/**
 * Every character device by id, whether made by --chardev or chardev-add,
 * and the monitors attached to them. Each chardev is also a node under
 * `/chardevs` in the QOM tree, which gives the order query-chardev lists
 * them in. A chardev with a monitor is busy: it cannot be removed or
 * changed, as in the reference, where monitors do not support hot-swap.
 *
 * Global state: every function runs on the main loop.
 */
import * as fs from 'node:fs';
import { strerror } from '../../common/errno';
import { log } from '../../common/log';
import { assertMainLoop } from '../../common/thread-context';
import { QmpError } from '../errors';
import type { Transport } from '../transport';
import { chardevsContainer, type QomNode } from '../../qom/tree';
import { createChardev, type ChardevBackend } from './backends';
import type { Chardev } from './chardev';

interface Entry {
  chardev: Chardev;
  /** The monitor attached, if any. */
  frontend: boolean;
  /** logfile: a copy of everything the frontend writes. */
  logFd?: number;
}

const entries = new Map<string, Entry>();

function qomNode(chardev: Chardev): QomNode {
  return { typeName: chardev.qomType, accessor: (p) => chardev.accessor?.(p) };
}

function openLog(backend: ChardevBackend): number | undefined {
  const { logfile, logappend } = backend.data;
  if (logfile === undefined) return undefined;
  const { O_WRONLY, O_CREAT, O_APPEND, O_TRUNC } = fs.constants;
  try {
    return fs.openSync(logfile, O_WRONLY | O_CREAT | (logappend ? O_APPEND : O_TRUNC), 0o666);
  } catch (err) {
    throw new Error(`Could not create '${logfile}': ${strerror((err as NodeJS.ErrnoException).code)}`);
  }
}

/** Makes, opens and registers a chardev; errors are the backend's own words. */
async function create(id: string, backend: ChardevBackend, socketDefaults: { server: boolean; wait: boolean }): Promise<void> {
  const chardev = createChardev(id, backend, socketDefaults);
  const logFd = openLog(backend);
  try {
    await chardev.open();
  } catch (err) {
    if (logFd !== undefined) fs.closeSync(logFd);
    throw err;
  }
  const entry: Entry = { chardev, frontend: false };
  if (logFd !== undefined) entry.logFd = logFd;
  entries.set(id, entry);
  chardevsContainer().add(id, qomNode(chardev));
}

/** chardev-add. */
export async function chardevAdd(id: string, backend: ChardevBackend): Promise<Record<string, never>> {
  assertMainLoop();
  if (entries.has(id)) throw QmpError.generic(`Chardev with id '${id}' already exists`);
  try {
    await create(id, backend, { server: true, wait: false });
  } catch (err) {
    throw QmpError.generic(`Failed to add chardev '${id}': ${(err as Error).message}`);
  }
  return {};
}

/** --chardev: the reference words a duplicate id as its QOM container does. */
export async function chardevAddFromCommandLine(id: string, backend: ChardevBackend): Promise<void> {
  assertMainLoop();
  if (entries.has(id)) throw new Error(`attempt to add duplicate property '${id}' to object (type 'container')`);
  await create(id, backend, { server: false, wait: true });
}

async function remove(id: string): Promise<void> {
  const entry = entries.get(id)!;
  entries.delete(id);
  chardevsContainer().remove(id);
  if (entry.logFd !== undefined) fs.closeSync(entry.logFd);
  await entry.chardev.close();
}

/** chardev-remove. */
export async function chardevRemove(id: string): Promise<void> {
  assertMainLoop();
  const entry = entries.get(id);
  if (!entry) throw QmpError.generic(`Chardev '${id}' not found`);
  if (entry.frontend) throw QmpError.generic(`Chardev '${id}' is busy`);
  await remove(id);
}

/**
 * chardev-change. Only a chardev without a frontend can change, and the
 * reference does it by removing the old one and adding the new: when the
 * new one fails, the old one is gone too.
 */
export async function chardevChange(id: string, backend: ChardevBackend): Promise<Record<string, never>> {
  assertMainLoop();
  const entry = entries.get(id);
  if (!entry) throw QmpError.generic(`Chardev '${id}' does not exist`);
  if (entry.frontend) throw QmpError.generic('Chardev user does not support chardev hotswap');
  await remove(id);
  return chardevAdd(id, backend);
}

export function findChardev(id: string): Chardev | undefined {
  assertMainLoop();
  return entries.get(id)?.chardev;
}

/** query-chardev: in the order of `/chardevs`. */
export function listChardevs(): Array<{ label: string; filename: string; 'frontend-open': boolean }> {
  assertMainLoop();
  return chardevsContainer()
    .names()
    .map((id) => {
      const entry = entries.get(id)!;
      return { label: id, filename: entry.chardev.filename(), 'frontend-open': entry.frontend };
    });
}

/** --monitor: the chardev's connections go to the monitor from now on. */
export function attachFrontend(id: string, onConnection: (t: Transport) => void): void {
  assertMainLoop();
  const entry = entries.get(id);
  if (!entry) throw new Error(`chardev "${id}" not found`);
  if (entry.frontend) throw new Error(`Device '${id}' is in use`);
  entry.frontend = true;
  entry.chardev.attach((t) => onConnection(entry.logFd === undefined ? t : logged(t, entry.logFd)));
}

/** The transport, with what it sends also written to the log. */
function logged(t: Transport, fd: number): Transport {
  return {
    ...t,
    send: (text) => {
      try {
        fs.writeSync(fd, text + '\r\n');
      } catch (err) {
        // A full or broken log must not silence the monitor.
        log.warn({ err: (err as Error).message }, 'chardev logfile write failed');
      }
      t.send(text);
    },
  };
}

/** At exit: closes every chardev (sockets leave no file behind). */
export async function closeAllChardevs(): Promise<void> {
  assertMainLoop();
  await Promise.all([...entries.values()].map((e) => e.chardev.close().catch(() => undefined)));
}
