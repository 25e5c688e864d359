/**
 * The FUSE export type, GS half: its options checked as
 * qemu-storage-daemon 7.2 checks them, the file system mounted over the
 * mountpoint (a regular file) and unmounted again, and the resizes the
 * serving context asks for. Requests are served in the node's I/O context
 * (`session-io.ts`).
 */
import * as fs from 'node:fs';
import { assertMainLoop } from '../../common/thread-context';
import { strerror } from '../../common/errno';
import { log } from '../../common/log';
import { QmpError } from '../../qmp/errors';
import type { IoContext } from '../../block/global-state/io-context';
import { resizeNode } from '../../block/global-state/resize';
import { PERM, PERM_ALL } from '../../block/common/permissions';
import { fdWatchAvailable } from '../../native/fd-watch';
import { fuseMountAvailable, MNT_DETACH, MS_NODEV, MS_NOSUID, mount, umount2 } from '../../native/fuse-mount';
import type { BlockExportOptions, ExportDriver, ExportHandle, ExportInstance, ExportPlan } from '../export-driver';
import * as msg from './messages';
import { MAX_READ, S_IFREG } from './protocol';

type AllowOther = 'off' | 'on' | 'auto';

/** Exports by mountpoint, as given: the same string twice is refused before anything looks at the path. */
const mounted = new Map<string, FuseExport>();
/** Exports by id, for the resizes their contexts ask for. */
const byId = new Map<string, FuseExport>();
/** Contexts whose resize requests are already routed here. */
const routed = new WeakSet<IoContext>();

/** The reference's is_regular_file(): a missing path and anything but a regular file are refused. */
function checkRegularFile(path: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch (err) {
    throw QmpError.generic(`Failed to stat '${path}': ${strerror((err as NodeJS.ErrnoException).code)}`);
  }
  if (!st.isFile()) throw QmpError.generic(`'${path}' is not a regular file`);
}

/**
 * Opens /dev/fuse and mounts it over `mountpoint` with the options libfuse
 * would give the reference's session. Answers the session's descriptor.
 */
function mountSession(mountpoint: string, allowOther: boolean): number {
  const fd = fs.openSync('/dev/fuse', fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const data = `fd=${fd},rootmode=${S_IFREG.toString(8)},user_id=${uid},group_id=${gid},default_permissions${allowOther ? ',allow_other' : ''},max_read=${MAX_READ}`;
  try {
    mount('/dev/fuse', mountpoint, 'fuse', MS_NOSUID | MS_NODEV, data);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  return fd;
}

/** allow-other=auto tries with it first, and quietly without when that fails. */
function mountWithPolicy(mountpoint: string, policy: AllowOther): { fd: number; allowOther: boolean } {
  try {
    if (policy !== 'off') return { fd: mountSession(mountpoint, true), allowOther: true };
  } catch (err) {
    if (policy === 'on') throw err;
  }
  return { fd: mountSession(mountpoint, false), allowOther: false };
}

class FuseExport implements ExportInstance {
  /** The daemon serves the export from a worker: this keeps the main loop from ending meanwhile. */
  private readonly keepAlive = setInterval(() => undefined, 1 << 30);
  private unmounted = false;

  constructor(
    readonly handle: ExportHandle,
    readonly mountpoint: string,
    private readonly ctx: IoContext,
    private readonly fd: number,
  ) {}

  clients(): Promise<number> {
    // As in the reference, open files do not hold the export: removal unmounts lazily.
    return Promise.resolve(0);
  }

  private unmount(): void {
    if (this.unmounted) return;
    this.unmounted = true;
    try {
      umount2(this.mountpoint, MNT_DETACH);
    } catch (err) {
      // EINVAL: someone unmounted it already, which the reference does not mind either.
      const quiet = (err as NodeJS.ErrnoException).code === 'EINVAL';
      (quiet ? log.debug : log.warn)({ export: this.handle.id, mountpoint: this.mountpoint, err: (err as Error).message }, 'FUSE export could not be unmounted');
    }
  }

  async remove(): Promise<void> {
    assertMainLoop();
    this.unmount();
    try {
      await this.ctx.channel.request(msg.fuseExportRemove, { id: this.handle.id });
    } finally {
      fs.close(this.fd, () => undefined);
      clearInterval(this.keepAlive);
      if (mounted.get(this.mountpoint) === this) mounted.delete(this.mountpoint);
      if (byId.get(this.handle.id) === this) byId.delete(this.handle.id);
    }
  }

  /** A resize asked for by a request on the file (truncate, a write past the end of a growable export, fallocate). */
  resize(length: number, preallocation: 'off' | 'falloc'): Promise<number> {
    assertMainLoop();
    return resizeNode(this.handle.node, length, true, preallocation);
  }
}

function routeResizes(ctx: IoContext): void {
  if (routed.has(ctx)) return;
  routed.add(ctx);
  ctx.channel.onRequest(msg.fuseResize, ({ id, length, preallocation }) => {
    const exp = byId.get(id);
    if (!exp) throw Object.assign(new Error(`FUSE export '${id}' is gone`), { code: 'ENODEV' });
    return exp.resize(length, preallocation);
  });
}

export const fuseExportDriver: ExportDriver = {
  type: 'fuse',
  prepare(opts: BlockExportOptions, handle: ExportHandle): ExportPlan {
    assertMainLoop();
    if (!fuseMountAvailable || !fdWatchAvailable) {
      throw QmpError.generic('FUSE exports need the native addon (mount and /dev/fuse access), which is not loaded');
    }
    const mountpoint = opts.mountpoint as string;
    const writable = opts.writable === true;
    const growable = opts.growable === true;
    const policy = (opts['allow-other'] as AllowOther | undefined) ?? 'auto';
    if (mounted.has(mountpoint)) throw QmpError.generic(`There already is a FUSE export on '${mountpoint}'`);
    checkRegularFile(mountpoint);
    return {
      // A writable or growable file can be truncated and grown by its users: the export may resize the node.
      perm: PERM.CONSISTENT_READ | (writable ? PERM.WRITE : 0) | (writable || growable ? PERM.RESIZE : 0),
      shared: PERM_ALL,
      async start() {
        const node = handle.node;
        const ctx = node.ctx;
        let session: { fd: number; allowOther: boolean };
        try {
          session = mountWithPolicy(mountpoint, policy);
        } catch (err) {
          log.error({ export: handle.id, mountpoint, err: (err as Error).message }, 'FUSE mount failed');
          throw QmpError.generic('Failed to mount FUSE session to export');
        }
        const exp = new FuseExport(handle, mountpoint, ctx, session.fd);
        mounted.set(mountpoint, exp);
        byId.set(handle.id, exp);
        routeResizes(ctx);
        const entry: msg.FuseExportEntry = {
          id: handle.id,
          nodeName: node.name,
          fd: session.fd,
          writable,
          growable,
          allowOther: session.allowOther,
          mode: S_IFREG | 0o400 | (writable ? 0o200 : 0),
          uid: process.getuid?.() ?? 0,
          gid: process.getgid?.() ?? 0,
        };
        try {
          await ctx.channel.request(msg.fuseExportAdd, entry);
        } catch (err) {
          await exp.remove().catch(() => undefined);
          throw err;
        }
        return exp;
      },
    };
  },
};
