/**
 * `--chardev BACKEND,id=ID,...`: turns the QemuOpts values (text, already
 * checked against their types) into the ChardevBackend chardev-add takes,
 * with the reference's errors for what is missing.
 */
import type { ChardevBackend, ChardevCommon } from '../qmp/chardev/backends';
import { keyvalTyping, parseSize } from './keyval-typing';

export function chardevBackendFromOptions(opts: Record<string, unknown>): { id: string; backend: ChardevBackend } {
  const text = (key: string): string | undefined => (opts[key] === undefined ? undefined : String(opts[key]));
  const flag = (key: string): boolean | undefined => {
    const v = opts[key];
    return v === undefined ? undefined : typeof v === 'boolean' ? v : keyvalTyping.bool(String(v), key);
  };
  const id = text('id');
  if (!id) throw new Error(`chardev: no id specified`);
  const common: ChardevCommon = {};
  const logfile = text('logfile');
  if (logfile !== undefined) common.logfile = logfile;
  const logappend = flag('logappend');
  if (logappend !== undefined) common.logappend = logappend;

  // A mux shares one chardev between several frontends; qbd has no mux chardev.
  if (flag('mux')) throw new Error(`mux=on is not supported`);
  const backend = text('backend');
  switch (backend) {
    case 'null':
      return { id, backend: { type: 'null', data: common } };
    case 'stdio': {
      const signal = flag('signal');
      return { id, backend: { type: 'stdio', data: signal === undefined ? common : { ...common, signal } } };
    }
    case 'file': {
      const out = text('path');
      if (out === undefined) throw new Error('chardev: file: no filename given');
      const append = flag('append');
      return { id, backend: { type: 'file', data: append === undefined ? { ...common, out } : { ...common, out, append } } };
    }
    case 'ringbuf':
    case 'memory': {
      // size=0 means the default, as in the reference.
      const size = text('size') === undefined ? 0n : (parseSize(text('size')!) ?? 0n);
      return { id, backend: { type: backend, data: size === 0n ? common : { ...common, size } } };
    }
    case 'socket': {
      const path = text('path');
      const host = text('host');
      const port = text('port');
      if (path === undefined) {
        if (host === undefined && port === undefined) throw new Error('chardev: socket: no host given');
        if (port === undefined) throw new Error('chardev: socket: no port given');
      }
      const data: Extract<ChardevBackend, { type: 'socket' }>['data'] = {
        ...common,
        addr:
          path !== undefined
            ? { type: 'unix', data: flag('abstract') === undefined ? { path } : { path, abstract: flag('abstract')! } }
            : { type: 'inet', data: { host: host ?? '', port: port! } },
      };
      for (const key of ['server', 'wait', 'websocket', 'telnet', 'tn3270', 'nodelay'] as const) {
        const v = flag(key);
        if (v !== undefined) data[key] = v;
      }
      for (const key of ['tls-creds', 'tls-authz'] as const) {
        const v = text(key);
        if (v !== undefined) data[key] = v;
      }
      if (text('reconnect') !== undefined) data.reconnect = Number(text('reconnect'));
      return { id, backend: { type: 'socket', data } };
    }
    default:
      throw new Error(`'${String(backend)}' is not a valid char driver name`);
  }
}
