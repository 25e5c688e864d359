/**
 * Structured logging (pino) to stderr. Quiet by default: only warnings and
 * errors. `QBD_LOG=debug` or `-T` on the command line raises the level. Logs
 * never go to a QMP stream, which may be stdout with `--chardev stdio`.
 */
import pino from 'pino';

const level = process.env.QBD_LOG ?? 'warn';

export const log = pino(
  { name: 'qbd', level, base: { pid: process.pid } },
  pino.destination({ fd: 2, sync: true }),
);

export function setLogLevel(newLevel: string): void {
  log.level = newLevel;
}
