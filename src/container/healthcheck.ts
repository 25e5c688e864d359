/**
 * The container's health check: connects to the QMP socket, negotiates, and
 * asks query-version. Exit 0 when the daemon answers within the time limit,
 * 1 otherwise.
 */
import * as net from 'node:net';
import { DEFAULT_QMP_SOCKET } from './sidecar-config';

const TIMEOUT_MS = 5000;

function check(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.createConnection(socket);
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), TIMEOUT_MS);
    let buf = '';
    let step = 0;
    sock.on('error', () => done(false));
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
        buf = buf.slice(nl + 1);
        if (msg.event) continue;
        if (step === 0 && msg.QMP) sock.write('{"execute":"qmp_capabilities"}\n');
        else if (step === 1 && msg.return) sock.write('{"execute":"query-version"}\n');
        else if (step === 2 && msg.return) {
          clearTimeout(timer);
          return done(true);
        } else {
          clearTimeout(timer);
          return done(false);
        }
        step++;
      }
    });
  });
}

if (require.main === module) {
  void check(process.env.QBD_QMP_SOCKET ?? DEFAULT_QMP_SOCKET).then((ok) => process.exit(ok ? 0 : 1));
}

export { check };
