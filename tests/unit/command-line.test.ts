import { describe, it, expect } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CHARDEV_OPTIONS,
  CommandLineError,
  PROGRAM_NAME,
  TRACE_OPTIONS,
  locatedMessage,
  parseCommandLine,
  type ParsedCommandLine,
} from '../../src/cli/command-line';
import { qemuOptsHelp } from '../../src/cli/keyval';
import { helpText, versionText } from '../../src/cli/help';

function errorOf(argv: string[]): CommandLineError {
  try {
    parseCommandLine(argv);
  } catch (error) {
    expect(error).toBeInstanceOf(CommandLineError);
    return error as CommandLineError;
  }
  throw new Error(`expected a CommandLineError for ${JSON.stringify(argv)}`);
}

describe('parseCommandLine', () => {
  it('returns nothing to do for an empty command line', () => {
    expect(parseCommandLine([])).toEqual({ actions: [], help: false, version: false });
  });

  it('keeps actions in command-line order across different options', () => {
    const parsed = parseCommandLine([
      '--object', 'iothread,id=io0',
      '--blockdev', 'driver=null-co,node-name=n0',
      '--chardev', 'socket,id=c0,path=/run/qmp.sock,server=on,wait=off',
      '--monitor', 'c0',
      '--blockdev', 'null-aio,node-name=n1',
      '--nbd-server', 'addr.type=unix,addr.path=/run/nbd.sock',
      '--export', 'nbd,id=e0,node-name=n0,writable=on',
      '--pidfile', '/run/qbd.pid',
      '--daemonize',
      '-T', 'bdrv_*',
    ]);
    expect(parsed.help).toBe(false);
    expect(parsed.version).toBe(false);
    expect(parsed.actions).toEqual([
      { option: 'object', text: 'iothread,id=io0', value: { 'qom-type': 'iothread', id: 'io0' }, json: false, location: '--object iothread,id=io0' },
      { option: 'blockdev', text: 'driver=null-co,node-name=n0', value: { driver: 'null-co', 'node-name': 'n0' }, json: false, location: '--blockdev driver=null-co,node-name=n0' },
      {
        option: 'chardev',
        text: 'socket,id=c0,path=/run/qmp.sock,server=on,wait=off',
        value: { backend: 'socket', id: 'c0', path: '/run/qmp.sock', server: 'on', wait: 'off' },
        json: false,
        location: '--chardev socket,id=c0,path=/run/qmp.sock,server=on,wait=off',
      },
      { option: 'monitor', text: 'c0', value: { chardev: 'c0' }, json: false, location: '--monitor c0' },
      { option: 'blockdev', text: 'null-aio,node-name=n1', value: { driver: 'null-aio', 'node-name': 'n1' }, json: false, location: '--blockdev null-aio,node-name=n1' },
      {
        option: 'nbd-server',
        text: 'addr.type=unix,addr.path=/run/nbd.sock',
        value: { addr: { type: 'unix', path: '/run/nbd.sock' } },
        json: false,
        location: '--nbd-server addr.type=unix,addr.path=/run/nbd.sock',
      },
      {
        option: 'export',
        text: 'nbd,id=e0,node-name=n0,writable=on',
        value: { type: 'nbd', id: 'e0', 'node-name': 'n0', writable: 'on' },
        json: false,
        location: '--export nbd,id=e0,node-name=n0,writable=on',
      },
      { option: 'pidfile', path: '/run/qbd.pid', location: '--pidfile /run/qbd.pid' },
      { option: 'daemonize', location: '--daemonize' },
      { option: 'trace', text: 'bdrv_*', value: { enable: 'bdrv_*' }, location: '-T bdrv_*' },
    ]);
  });

  it('accepts --opt=value as well as --opt value', () => {
    const spaced = parseCommandLine(['--blockdev', 'null-co,node-name=n', '--pidfile', 'p']);
    const joined = parseCommandLine(['--blockdev=null-co,node-name=n', '--pidfile=p']);
    expect(joined.actions.map(({ location: _, ...rest }) => rest)).toEqual(
      spaced.actions.map(({ location: _, ...rest }) => rest),
    );
    expect(joined.actions.map((action) => action.location)).toEqual(['--blockdev=null-co,node-name=n', '--pidfile=p']);
  });

  it('splits only at the first "=" of --opt=value', () => {
    const [action] = parseCommandLine(['--object=iothread,id=io0']).actions;
    expect(action).toMatchObject({ option: 'object', value: { 'qom-type': 'iothread', id: 'io0' } });
  });

  it('accepts an empty value', () => {
    expect(parseCommandLine(['--blockdev=']).actions).toEqual([
      { option: 'blockdev', text: '', value: {}, json: false, location: '--blockdev=' },
    ]);
  });

  it('accepts a unique prefix of a long option, as getopt_long does', () => {
    const parsed = parseCommandLine(['--blo', 'null-co', '--pid', 'x.pid', '--daem', '--nbd=addr.type=unix,addr.path=s']);
    expect(parsed.actions.map((action) => action.option)).toEqual(['blockdev', 'pidfile', 'daemonize', 'nbd-server']);
    expect(parsed.actions[0]?.location).toBe('--blo null-co');
  });

  it('takes the next word as the value even when it starts with "-"', () => {
    expect(parseCommandLine(['--blockdev', '--object']).actions).toEqual([
      { option: 'blockdev', text: '--object', value: { driver: '--object' }, json: false, location: '--blockdev --object' },
    ]);
  });

  it('reads -T attached and detached, and --trace', () => {
    const parsed = parseCommandLine(['-Tfoo*', '-T', 'enable=bar,file=t.log', '--trace=events=list.txt']);
    expect(parsed.actions).toEqual([
      { option: 'trace', text: 'foo*', value: { enable: 'foo*' }, location: '-Tfoo*' },
      { option: 'trace', text: 'enable=bar,file=t.log', value: { enable: 'bar', file: 't.log' }, location: '-T enable=bar,file=t.log' },
      { option: 'trace', text: 'events=list.txt', value: { events: 'list.txt' }, location: '--trace=events=list.txt' },
    ]);
  });

  it('keeps every occurrence of repeatable options, --pidfile and --daemonize included', () => {
    const parsed = parseCommandLine(['--pidfile', 'a.pid', '--daemonize', '--pidfile', 'b.pid', '--daemonize']);
    expect(parsed.actions).toEqual([
      { option: 'pidfile', path: 'a.pid', location: '--pidfile a.pid' },
      { option: 'daemonize', location: '--daemonize' },
      { option: 'pidfile', path: 'b.pid', location: '--pidfile b.pid' },
      { option: 'daemonize', location: '--daemonize' },
    ]);
  });

  it('ignores everything after "--"', () => {
    expect(parseCommandLine(['--object', 'iothread,id=x', '--', 'stray', '--bogus']).actions).toHaveLength(1);
  });

  it('reads the JSON form of --blockdev, --object, --export, --monitor and --nbd-server', () => {
    const parsed = parseCommandLine([
      '--blockdev', '{"driver":"null-co","node-name":"n","size":1024,"read-only":true}',
      '--object', `{'qom-type':'iothread','id':'io0'}`,
      '--export', '{"type":"nbd","id":"e","node-name":"n"}',
      '--monitor', '{"chardev":"c0","pretty":true}',
      '--nbd-server', '{"addr":{"type":"unix","path":"s"}}',
    ]);
    expect(parsed.actions.map((action) => ('json' in action ? [action.option, action.json] : []))).toEqual([
      ['blockdev', true], ['object', true], ['export', true], ['monitor', true], ['nbd-server', true],
    ]);
    expect(parsed.actions[0]).toMatchObject({ value: { driver: 'null-co', 'node-name': 'n', size: 1024, 'read-only': true } });
    expect(parsed.actions[1]).toMatchObject({ value: { 'qom-type': 'iothread', id: 'io0' } });
    expect(parsed.actions[4]).toMatchObject({ value: { addr: { type: 'unix', path: 's' } } });
  });

  it('reads JSON only when the value starts with "{"', () => {
    expect(parseCommandLine(['--blockdev', ' {"driver":"null-co"}']).actions[0]).toMatchObject({
      value: { driver: ' {"driver":"null-co"}' },
      json: false,
    });
  });

  it('reads --chardev as QemuOpts, not as keyval or JSON', () => {
    const [action] = parseCommandLine(['--chardev', 'socket,id=c0,path=a,,b,server,nowait']).actions;
    expect(action).toEqual({
      option: 'chardev',
      text: 'socket,id=c0,path=a,,b,server,nowait',
      value: { backend: 'socket', id: 'c0', path: 'a,b', server: 'on', wait: 'off' },
      json: false,
      location: '--chardev socket,id=c0,path=a,,b,server,nowait',
      warnings: [
        "qbd: --chardev socket,id=c0,path=a,,b,server,nowait: warning: short-form boolean option 'server' deprecated\nPlease use server=on instead",
        "qbd: --chardev socket,id=c0,path=a,,b,server,nowait: warning: short-form boolean option 'nowait' deprecated\nPlease use wait=off instead",
      ],
    });
    expect(parseCommandLine(['--chardev', '{"id":"x"}']).actions[0]).toMatchObject({ value: { backend: '{"id":"x"}' } });
  });

  it('reports --object help and --object TYPE,help', () => {
    expect(parseCommandLine(['--object', 'help']).actions).toEqual([
      { option: 'object', text: 'help', value: {}, json: false, location: '--object help', help: true },
    ]);
    expect(parseCommandLine(['--object', 'iothread,id=x,help']).actions[0]).toMatchObject({
      value: { 'qom-type': 'iothread', id: 'x' },
      help: true,
    });
    expect(parseCommandLine(['--object', 'iothread,id=x']).actions[0]).not.toHaveProperty('help');
  });

  it('leaves --chardev help and -T help to the daemon as values', () => {
    expect(parseCommandLine(['--chardev', 'help']).actions[0]).toMatchObject({ value: { backend: 'help' } });
    expect(parseCommandLine(['-T', 'help']).actions[0]).toMatchObject({ value: { enable: 'help' } });
  });

  describe('help and version', () => {
    it('sets help for -h and --help, with no actions', () => {
      expect(parseCommandLine(['-h'])).toEqual({ actions: [], help: true, version: false });
      expect(parseCommandLine(['--help'])).toEqual({ actions: [], help: true, version: false });
      expect(parseCommandLine(['--he'])).toEqual({ actions: [], help: true, version: false });
    });

    it('sets version for -V and --version', () => {
      expect(parseCommandLine(['-V'])).toEqual({ actions: [], help: false, version: true });
      expect(parseCommandLine(['--version'])).toEqual({ actions: [], help: false, version: true });
    });

    it('lets the first of -h and -V win', () => {
      expect(parseCommandLine(['-hV']).help).toBe(true);
      expect(parseCommandLine(['-Vh']).version).toBe(true);
      expect(parseCommandLine(['-V', '-h']).version).toBe(true);
    });

    it('wins over bad values and positionals anywhere, and over later option errors', () => {
      expect(parseCommandLine(['--object', 'a=1,a.b=2', '-V']).version).toBe(true);
      expect(parseCommandLine(['stray', '-h']).help).toBe(true);
      expect(parseCommandLine(['-h', '--bogus']).help).toBe(true);
      expect(parseCommandLine(['-hT']).help).toBe(true);
      expect(parseCommandLine(['-Vx']).version).toBe(true);
    });

    it('loses to an earlier option error', () => {
      expect(errorOf(['--bogus', '-h']).message).toBe("qbd: unrecognized option '--bogus'");
      expect(errorOf(['-xV']).message).toBe("qbd: invalid option -- 'x'");
    });
  });

  describe('errors, worded like the reference', () => {
    const cases: Array<[string[], string]> = [
      [['--bogus'], "qbd: unrecognized option '--bogus'"],
      [['--bogus=1'], "qbd: unrecognized option '--bogus=1'"],
      [['--blockdevx=1'], "qbd: unrecognized option '--blockdevx=1'"],
      [['--blockdev'], "qbd: option '--blockdev' requires an argument"],
      [['--blo'], "qbd: option '--blockdev' requires an argument"],
      [['--trace'], "qbd: option '--trace' requires an argument"],
      [['--daemonize=1'], "qbd: option '--daemonize' doesn't allow an argument"],
      [['--daem=1'], "qbd: option '--daemonize' doesn't allow an argument"],
      [['--help=1'], "qbd: option '--help' doesn't allow an argument"],
      [
        ['--=x'],
        "qbd: option '--=x' is ambiguous; possibilities: '--blockdev' '--chardev' '--daemonize' '--export' '--help' '--monitor' '--nbd-server' '--object' '--pidfile' '--trace' '--version'",
      ],
      [['-x'], "qbd: invalid option -- 'x'"],
      [['-blockdev'], "qbd: invalid option -- 'b'"],
      [['-T'], "qbd: option requires an argument -- 'T'"],
      [['stray'], 'qbd: stray: Unexpected argument'],
      [['-'], 'qbd: -: Unexpected argument'],
      [[''], 'qbd: : Unexpected argument'],
      [['--blockdev', '{'], 'qbd: --blockdev {: JSON parse error, premature EOI'],
      [['--object={"qom-type":"iothread",}'], 'qbd: --object={"qom-type":"iothread",}: JSON parse error, expecting value'],
      [['--blockdev', 'driver=null-co,a=1,a.b=2'], "qbd: --blockdev driver=null-co,a=1,a.b=2: Parameters 'a.*' used inconsistently"],
      [['--blockdev=a.1=x'], "qbd: --blockdev=a.1=x: Parameter 'a.0' missing"],
      [['-Tbogus=1'], "qbd: -Tbogus=1: Invalid parameter 'bogus'"],
      [['--blockdev', 'help'], 'qbd: --blockdev help: Help is not available for this option'],
      [['--export', 'help'], 'qbd: --export help: Help is not available for this option'],
      [['--monitor', 'help'], 'qbd: --monitor help: Help is not available for this option'],
      [['--nbd-server', 'help'], 'qbd: --nbd-server help: Help is not available for this option'],
      [['--nbd-server', 'foo'], "qbd: --nbd-server foo: Expected '=' after parameter 'foo'"],
      [['--object', 'help,iothread'], "qbd: --object help,iothread: Expected '=' after parameter 'iothread'"],
      [['--object', 'iothread,,x'], "qbd: --object iothread,,x: Invalid parameter ''"],
      [['--chardev', 'socket,id=c0,a.b=1'], "qbd: --chardev socket,id=c0,a.b=1: Invalid parameter 'a.b'"],
      [
        ['--chardev', 'socket,id=1x'],
        "qbd: --chardev socket,id=1x: Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter.",
      ],
      [
        ['--chardev', 'id=c0,socket'],
        "qbd: --chardev id=c0,socket: warning: short-form boolean option 'socket' deprecated\nPlease use socket=on instead\n" +
          "qbd: --chardev id=c0,socket: Invalid parameter 'socket'",
      ],
    ];
    for (const [argv, message] of cases) {
      it(`refuses ${JSON.stringify(argv)}`, () => {
        const error = errorOf(argv);
        expect(error.message).toBe(message);
        expect(error.stdout).toBe('');
      });
    }

    it('reports option errors before any bad value, wherever they are', () => {
      expect(errorOf(['--blockdev', 'a=1,a.b=2', '--bogus']).message).toBe("qbd: unrecognized option '--bogus'");
      expect(errorOf(['stray', '--blockdev']).message).toBe("qbd: option '--blockdev' requires an argument");
    });

    it('reports the first bad value or positional in command-line order', () => {
      expect(errorOf(['--object', 'iothread,id=x', 'stray', '--blockdev', 'a=1,a.b=2']).message).toBe(
        'qbd: stray: Unexpected argument',
      );
      expect(errorOf(['--blockdev', 'a.1=x', 'stray']).message).toBe("qbd: --blockdev a.1=x: Parameter 'a.0' missing");
    });

    it('prints the option list for a QemuOpts help flag, and exits with an error', () => {
      const chardev = errorOf(['--chardev', 'socket,help']);
      expect(chardev.message).toBe('');
      expect(chardev.stdout).toBe(qemuOptsHelp(CHARDEV_OPTIONS));
      const trace = errorOf(['-T', 'foo,nofile,?']);
      expect(trace.message).toBe(
        "qbd: -T foo,nofile,?: warning: short-form boolean option 'nofile' deprecated\nPlease use file=off instead",
      );
      expect(trace.stdout).toBe(qemuOptsHelp(TRACE_OPTIONS));
    });
  });
});

describe('locatedMessage', () => {
  it('prefixes the program name and the location', () => {
    expect(locatedMessage('--blockdev x', 'boom')).toBe('qbd: --blockdev x: boom');
    expect(locatedMessage(undefined, 'boom')).toBe('qbd: boom');
    expect(PROGRAM_NAME).toBe('qbd');
  });
});

describe('helpText and versionText', () => {
  it('mentions every option and the shell', () => {
    const text = helpText();
    for (const option of ['-h, --help', '-V, --version', '-T, --trace', '--blockdev', '--chardev', '--daemonize', '--export', '--monitor', '--nbd-server', '--object', '--pidfile', 'qbd shell']) {
      expect(text).toContain(option);
    }
    expect(text.endsWith('\n')).toBe(true);
  });

  it('names the version', () => {
    expect(versionText('1.2.3')).toMatch(/^qbd version 1\.2\.3\n/);
  });
});

// ---------------------------------------------------------------------------
// The same command lines given to qemu-storage-daemon itself.

const REFERENCE = 'qemu-storage-daemon';
const referenceInstalled = spawnSync(REFERENCE, ['--version'], { stdio: 'ignore' }).status === 0;
const describeReference = referenceInstalled || process.env['CI'] ? describe : describe.skip;
/**
 * How long the reference is left running: one that accepted its command line
 * keeps running, and is killed then. A bit more than the start-up of a busy
 * machine, so that a refusal (or a warning) is not missed.
 */
const RUN_MS = 500;
/** A reference expected to refuse its command line is waited for longer. */
const REFUSAL_WAIT_MS = 10_000;

interface ReferenceRun {
  /** False when it was still running when killed, i.e. it accepted the command line. */
  exited: boolean;
  code: number | null;
  stdout: string;
  stderr: string;
}

function runReference(argv: string[], waitMs: number): Promise<ReferenceRun> {
  const directory = mkdtempSync(join(tmpdir(), 'qbd-cli-'));
  return new Promise((resolve, reject) => {
    const child = spawn(REFERENCE, argv, { cwd: directory, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let exited = false;
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), waitMs);
    child.on('exit', (code) => {
      exited = code !== null;
    });
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      rmSync(directory, { recursive: true, force: true });
      resolve({ exited, code, stdout, stderr });
    });
  });
}

/** Runs the reference on every command line, a few at a time (the machine is small). */
async function runAll(argvs: string[][], waitMs = REFUSAL_WAIT_MS): Promise<ReferenceRun[]> {
  const results: ReferenceRun[] = new Array(argvs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < argvs.length) {
      const index = next++;
      results[index] = await runReference(argvs[index] as string[], waitMs);
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  return results;
}

function requireReference(): void {
  expect(referenceInstalled, `${REFERENCE} must be installed when CI is set`).toBe(true);
}

function ourOutcome(argv: string[]): ParsedCommandLine | CommandLineError {
  try {
    return parseCommandLine(argv);
  } catch (error) {
    if (error instanceof CommandLineError) return error;
    throw error;
  }
}

describeReference('compared with qemu-storage-daemon', () => {
  it('refuses the same command lines with the same words', async () => {
    requireReference();
    const refused: string[][] = [
      ['--bogus'],
      ['--bogus=1'],
      ['--blockdev'],
      ['--blo'],
      ['-T'],
      ['--trace'],
      ['--daemonize=1'],
      ['--daem=1'],
      ['--=x'],
      ['-x'],
      ['-blockdev'],
      ['-xV'],
      ['--bogus', '--blo'],
      ['--blockdev', 'a=1,a.b=2', '--bogus'],
      ['stray'],
      ['-'],
      [''],
      ['--object', 'iothread,id=io0', 'stray'],
      ['--blockdev', '{'],
      ['--blockdev', '{"a":1,"a":2}'],
      ['--blockdev', `{'driver':'null-co'} x`],
      ['--blockdev', '{"a":"\\ud800"}'],
      ['--blockdev', '{"a":1.}'],
      ['--blockdev', 'driver=null-co,a=1,a.b=2'],
      ['--blockdev=driver=null-co,a.0=x,a.2=y'],
      ['--blockdev', 'driver=null-co,foo'],
      ['--blockdev', 'null-co,,x'],
      ['--blockdev', 'driver=null-co,a.0x=1'],
      ['--blockdev', `driver=null-co,a.${'k'.repeat(128)}=1`],
      ['--blockdev', 'help'],
      ['--object', 'iothread,id=io0', '--blockdev', 'x.y.0=1,x.y.z=2'],
      ['--object', 'iothread,,x'],
      ['--object', 'help,iothread'],
      ['--object', '{'],
      ['--nbd-server', 'foo'],
      ['--nbd-server', 'help'],
      ['--monitor', 'help'],
      ['--export', 'nbd,a.0=x,a.1'],
      ['--chardev', 'socket,id=c0,bogus=1'],
      ['--chardev', 'socket,id=1x'],
      ['--chardev', 'id=c0,socket'],
      ['--chardev', 'socket,id=c0,server=maybe'],
      ['--chardev', 'socket,id=c0,reconnect=5x'],
      ['-Tbogus=1'],
      ['-T', 'a,id=1'],
    ];
    const runs = await runAll(refused);
    refused.forEach((argv, index) => {
      const run = runs[index] as ReferenceRun;
      const ours = ourOutcome(argv);
      const label = JSON.stringify(argv);
      expect(run.exited, label).toBe(true);
      expect(run.code, label).toBe(1);
      expect(ours, label).toBeInstanceOf(CommandLineError);
      const expected = run.stderr.replaceAll(`${REFERENCE}:`, `${PROGRAM_NAME}:`).trimEnd();
      expect((ours as CommandLineError).message, label).toBe(expected);
    });
  });

  it('prints the same option list for a QemuOpts help flag', async () => {
    requireReference();
    const argvs = [['--chardev', 'socket,help'], ['-T', 'x,?'], ['-T', 'foo,nofile,?']];
    const runs = await runAll(argvs);
    argvs.forEach((argv, index) => {
      const run = runs[index] as ReferenceRun;
      const ours = ourOutcome(argv) as CommandLineError;
      expect(run.code).toBe(1);
      expect(ours.stdout).toBe(run.stdout);
      expect(ours.message).toBe(run.stderr.replaceAll(`${REFERENCE}:`, `${PROGRAM_NAME}:`).trimEnd());
    });
  });

  it('stops for help and version at the same point', async () => {
    requireReference();
    const cases: Array<[string[], 'help' | 'version']> = [
      [['--object', 'a=1,a.b=2', '-V'], 'version'],
      [['stray', '--help'], 'help'],
      [['-h', '--bogus'], 'help'],
      [['-hT'], 'help'],
      [['-Vh'], 'version'],
      [['--vers'], 'version'],
    ];
    const runs = await runAll(cases.map(([argv]) => argv));
    cases.forEach(([argv, which], index) => {
      const run = runs[index] as ReferenceRun;
      expect(run.code, JSON.stringify(argv)).toBe(0);
      expect(run.stdout, JSON.stringify(argv)).toMatch(which === 'help' ? /^Usage:/ : /^qemu-storage-daemon version/);
      const ours = ourOutcome(argv) as ParsedCommandLine;
      expect(ours[which], JSON.stringify(argv)).toBe(true);
    });
  });

  it('accepts the same command lines, with the same warnings', async () => {
    requireReference();
    const accepted: string[][] = [
      ['--blockdev', 'null-co,node-name=n0'],
      ['--blockdev=driver=null-co,node-name=n0,size=1048576,cache.direct=off'],
      ['--blockdev', 'driver=null-co,node-name=n0,driver=null-aio'],
      ['--blockdev', `{'driver':'null-co','node-name':'n0'}`],
      ['--blo', 'null-co,node-name=n0', '--obj', 'iothread,id=io0'],
      ['--object', 'iothread,id=io0'],
      ['--object', '{"qom-type":"iothread","id":"io0"}  '],
      ['--chardev', 'socket,id=c0,path=qmp.sock,server=on,wait=off', '--monitor', 'c0'],
      ['--chardev', 'socket,id=c0,path=qmp.sock,server,nowait', '--monitor', 'chardev=c0,pretty=on'],
      ['--chardev', 'socket,id=c0,path=qmp.sock,server=on,wait=off,'],
      ['--chardev', 'socket,id=c0,id=c1,path=qmp.sock,server=on,wait=off', '--monitor', 'c0'],
      ['--blockdev', 'null-co,node-name=n0', '--nbd-server', 'addr.type=unix,addr.path=nbd.sock', '--export', 'nbd,id=e0,node-name=n0'],
      ['--pidfile', 'a.pid', '--pidfile', 'b.pid', '--object', 'iothread,id=io0'],
      ['-T', 'enable=nonexistent*'],
      ['--', 'stray', '--bogus'],
    ];
    const runs = await runAll(accepted, RUN_MS);
    accepted.forEach((argv, index) => {
      const run = runs[index] as ReferenceRun;
      const label = JSON.stringify(argv);
      expect(run.exited, `${label}: ${run.stderr}`).toBe(false);
      const ours = ourOutcome(argv);
      expect(ours, label).not.toBeInstanceOf(CommandLineError);
      const warnings = (ours as ParsedCommandLine).actions.flatMap((action) => ('warnings' in action ? action.warnings ?? [] : []));
      const expected = run.stderr
        .replaceAll(`${REFERENCE}:`, `${PROGRAM_NAME}:`)
        .trimEnd();
      expect(warnings.join('\n'), label).toBe(expected);
    });
  });

  it('fails later, on the value, where only the schema can tell', async () => {
    requireReference();
    // The reference's message shows what the tree held: we must build the same.
    const cases: Array<[string[], string, Record<string, unknown>]> = [
      [['--blockdev', 'driver=file,,'], "Parameter 'driver' does not accept value 'file,'", { driver: 'file,' }],
      [['--blockdev', 'driver=file,driver=raw'], "Parameter 'file' is missing", { driver: 'raw' }],
      [['--blockdev', ''], "Parameter 'driver' is missing", {}],
      [['--blockdev', '1abc,x=1'], "Parameter 'driver' does not accept value '1abc'", { driver: '1abc', x: '1' }],
      [['--object', 'iothread'], "Parameter 'id' is missing", { 'qom-type': 'iothread' }],
      [['--object', '{"qom-type":"help"}'], "Parameter 'qom-type' does not accept value 'help'", { 'qom-type': 'help' }],
      [['--blockdev', '{"driver":"null-co\\u0041"}'], "Parameter 'driver' does not accept value 'null-coA'", { driver: 'null-coA' }],
    ];
    const runs = await runAll(cases.map(([argv]) => argv));
    cases.forEach(([argv, message, value], index) => {
      const run = runs[index] as ReferenceRun;
      expect(run.code, JSON.stringify(argv)).toBe(1);
      expect(run.stderr, JSON.stringify(argv)).toContain(message);
      const ours = ourOutcome(argv) as ParsedCommandLine;
      expect(ours.actions[0], JSON.stringify(argv)).toMatchObject({ value });
    });
  });
});
