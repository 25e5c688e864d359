/**
 * Structured logging (pino) to stderr. Quiet by default: only warnings and
 * errors. `QBD_LOG=debug` or `-T` on the command line raises the level. Logs
 * never go to a QMP stream, which may be stdout with `--chardev stdio`.
 *
 * pino is loaded on the first message that passes the level: a daemon that
 * has nothing to say does not pay for it at start-up.
 */
import type { Logger } from 'pino';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;
type Level = (typeof LEVELS)[number];

let level: Level = (LEVELS as readonly string[]).includes(process.env.QBD_LOG ?? '') ? (process.env.QBD_LOG as Level) : 'warn';
let logger: Logger | undefined;

function pinoLogger(): Logger {
  if (!logger) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const pino = require('pino') as typeof import('pino');
    logger = pino({ name: 'qbd', level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
  }
  return logger;
}

function enabled(l: Level): boolean {
  return LEVELS.indexOf(l) >= LEVELS.indexOf(level);
}

type LogFn = (obj: object | string, msg?: string) => void;

function at(l: Level): LogFn {
  return (obj, msg) => {
    if (!enabled(l)) return;
    if (typeof obj === 'string') pinoLogger()[l](obj);
    else pinoLogger()[l](obj, msg);
  };
}

export const log = {
  trace: at('trace'),
  debug: at('debug'),
  info: at('info'),
  warn: at('warn'),
  error: at('error'),
  fatal: at('fatal'),
};

export function setLogLevel(newLevel: string): void {
  if (!(LEVELS as readonly string[]).includes(newLevel)) return;
  level = newLevel as Level;
  if (logger) logger.level = level;
}
