/**
 * `qbd shell`: a QMP shell with qmp-shell's syntax and options, interactive
 * on a terminal, line-oriented (JSON lines out) on a pipe or with `-f`.
 */

import * as fs from 'node:fs';
import { Command } from 'commander';
import { ServerAddress, describeAddress, parseServerAddress } from './address';
import { runBatch } from './batch';
import { historyPath } from './history';
import { HANDSHAKE_TIMEOUT_MS, QmpClient, isErrorReply, versionText } from './qmp-client';
import { runRepl } from './repl';
import { QmpSchema, SchemaEntity } from './schema';
import { ShellSession } from './session';

interface ShellFlags {
  pretty?: boolean;
  verbose?: boolean;
  logfile?: string;
  skipNegotiation?: boolean;
  file?: string;
  exitOnError?: boolean;
  schema: boolean;
}

function buildProgram(): Command {
  return new Command('qbd shell')
    .description('Talk QMP to qbd or qemu-storage-daemon: qmp-shell syntax, typed arguments, completion, live events and jobs.')
    .argument('[address]', 'UNIX socket path, HOST:PORT, or ws://HOST:PORT/ (default: $QMP_SOCKET)')
    .option('-p, --pretty', 'pretty-print JSON (indented, keys sorted)')
    .option('-v, --verbose', 'echo each command as the JSON sent')
    .option('-l, --logfile <file>', 'log every command merged with its reply, and every event, to FILE')
    .option('-N, --skip-negotiation', 'do not send qmp_capabilities after the greeting')
    .option('-f, --file <file>', 'read commands from FILE instead of the terminal (non-interactive)')
    .option('-e, --exit-on-error', 'non-interactive: exit with status 1 at the first error reply or bad line')
    .option('--no-schema', 'do not fetch query-qmp-schema: guess value types as qmp-shell does')
    .addHelpText(
      'after',
      [
        '',
        'Without -f, the shell is interactive when stdin is a terminal; otherwise it reads',
        'commands line by line and prints each reply and event as one JSON line.',
        'History is kept in $QBD_SHELL_HISTORY, else ~/.qbd_shell_history.',
      ].join('\n'),
    )
    .showHelpAfterError();
}

export function main(argv: string[]): void {
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
  });
  run(argv).then(
    (code) => exit(code),
    (error: unknown) => {
      process.stderr.write(`qbd shell: ${(error as Error).message ?? String(error)}\n`);
      exit(1);
    },
  );
}

function exit(code: number): void {
  process.exitCode = code;
  // Anything still holding the event loop (a stray socket) must not keep the shell alive.
  setTimeout(() => process.exit(code), 500).unref();
}

async function run(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.parse(argv, { from: 'user' });
  const flags = program.opts<ShellFlags>();
  const addressText = program.args[0] ?? process.env.QMP_SOCKET;
  if (addressText === undefined || addressText === '') {
    program.error('error: no server address: give one, or set QMP_SOCKET');
  }
  let address: ServerAddress;
  try {
    address = parseServerAddress(addressText);
  } catch (error) {
    return program.error(`error: ${(error as Error).message}`);
  }
  const interactive = flags.file === undefined && process.stdin.isTTY === true;
  if (flags.file !== undefined) await readable(flags.file);
  const input = flags.file === undefined ? process.stdin : fs.createReadStream(flags.file);

  let client: QmpClient;
  try {
    client = await QmpClient.connect(address);
  } catch (error) {
    process.stderr.write(`qbd shell: cannot connect to ${describeAddress(address)}: ${(error as Error).message}\n`);
    return 1;
  }
  let schema: QmpSchema | undefined;
  try {
    if (!flags.skipNegotiation) await client.negotiate();
    schema = flags.schema && !flags.skipNegotiation ? await fetchSchema(client) : undefined;
  } catch (error) {
    client.close();
    process.stderr.write(`qbd shell: ${describeAddress(address)}: ${(error as Error).message}\n`);
    return 1;
  }
  const version = `Connected to QEMU ${versionText(client.greeting!)}`;
  if (interactive) {
    process.stdout.write(`Welcome to the qbd QMP shell!\n${version}\nType help for commands, Tab to complete, Ctrl-D to quit.\n\n`);
  } else {
    process.stderr.write(`${version}\n`);
  }

  const session = new ShellSession(client, schema, {
    pretty: flags.pretty === true,
    verbose: flags.verbose === true,
    logFile: flags.logfile,
  });
  try {
    return interactive
      ? await runRepl(session, { input: process.stdin, output: process.stdout, historyFile: historyPath() })
      : await runBatch(session, { input, output: process.stdout, errors: process.stderr, exitOnError: flags.exitOnError === true });
  } finally {
    session.close();
  }
}

async function fetchSchema(client: QmpClient): Promise<QmpSchema | undefined> {
  const reply = await client.executeWithin(HANDSHAKE_TIMEOUT_MS, 'query-qmp-schema');
  if (isErrorReply(reply) || !Array.isArray(reply.return)) return undefined;
  return new QmpSchema(reply.return as SchemaEntity[]);
}

function readable(file: string): Promise<void> {
  return fs.promises.access(file, fs.constants.R_OK).catch(() => {
    throw new Error(`cannot read ${file}`);
  });
}
