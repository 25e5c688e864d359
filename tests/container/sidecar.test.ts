/**
 * The storage sidecar: configuration to command line, with the safe
 * defaults; and the image's build and run steps performed without a
 * container engine, the daemon started exactly as the image starts it.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { commandLineFor, mergeEnvironment, SidecarConfigError } from '../../src/container/sidecar-config';
import { tempDir, waitFor } from '../helpers/daemons';

const REPO = path.resolve(__dirname, '..', '..');

describe('the sidecar configuration', () => {
  it('builds the command line from the file, then numbered environment entries in order', () => {
    const config = mergeEnvironment(
      { blockdevs: [{ driver: 'null-co', 'node-name': 'a' }] },
      { QBD_BLOCKDEV_10: 'null-co,node-name=c', QBD_BLOCKDEV_2: '{"driver":"null-co","node-name":"b"}', QBD_OBJECT_0: 'iothread,id=io0' },
    );
    expect(commandLineFor(config)).toEqual([
      '--object', 'iothread,id=io0',
      '--blockdev', '{"driver":"null-co","node-name":"a"}',
      '--blockdev', '{"driver":"null-co","node-name":"b"}',
      '--blockdev', 'null-co,node-name=c',
      '--chardev', 'socket,id=qmp0,path=/run/qbd/qmp.sock,server=on,wait=off',
      '--monitor', 'chardev=qmp0',
    ]);
  });

  it('makes exports read-only unless writable is asked for', () => {
    const args = commandLineFor({ exports: [{ type: 'nbd', id: 'e0', 'node-name': 'a' }, { type: 'nbd', id: 'e1', 'node-name': 'b', writable: true }] });
    expect(args.filter((_, i) => args[i - 1] === '--export').map((a) => JSON.parse(a).writable)).toEqual([false, true]);
    const fromEnv = commandLineFor(mergeEnvironment({}, { QBD_EXPORT_0: 'nbd,id=e0,node-name=a', QBD_EXPORT_1: 'nbd,id=e1,node-name=b,writable=on' }));
    expect(fromEnv.filter((_, i) => fromEnv[i - 1] === '--export')).toEqual(['nbd,id=e0,node-name=a,writable=off', 'nbd,id=e1,node-name=b,writable=on']);
  });

  it('refuses NBD over TCP without TLS credentials', () => {
    expect(() => commandLineFor({ 'nbd-server': { addr: { type: 'inet', host: '0.0.0.0', port: '10809' } } })).toThrow(SidecarConfigError);
    expect(() => commandLineFor({ 'nbd-server': { addr: { type: 'inet', host: '0.0.0.0', port: '10809' }, 'tls-creds': 'tls0' } })).toThrow(/must name a tls-creds-x509/);
  });

  it('takes x509 over TCP only for a server that verifies clients against a tls-authz allowlist', () => {
    const tcp = { addr: { type: 'inet', host: '0.0.0.0', port: '10809' }, 'tls-creds': 'tls0', 'tls-authz': 'authz0' };
    const x509 = { 'qom-type': 'tls-creds-x509', id: 'tls0', dir: '/etc/qbd/tls', endpoint: 'server' };
    const authz = { 'qom-type': 'authz-list', id: 'authz0', rules: [{ match: 'C=GB,O=Example,CN=reader', policy: 'allow' }] };
    expect(commandLineFor({ objects: [x509, authz], 'nbd-server': tcp })).toContain('--nbd-server');
    expect(() => commandLineFor({ objects: [{ ...x509, endpoint: undefined }, authz], 'nbd-server': tcp })).toThrow(/endpoint=server/);
    expect(() => commandLineFor({ objects: [{ ...x509, 'verify-peer': false }, authz], 'nbd-server': tcp })).toThrow(/verify-peer=on/);
    expect(() => commandLineFor({ objects: [x509], 'nbd-server': tcp })).toThrow(/tls-authz/);
    const fromEnv = mergeEnvironment({}, {
      QBD_OBJECT_0: 'tls-creds-x509,id=tls0,dir=/etc/qbd/tls,endpoint=server,verify-peer=off',
      QBD_OBJECT_1: 'authz-simple,id=authz0,identity=CN=reader',
      QBD_NBD_SERVER: 'addr.type=inet,addr.host=0.0.0.0,addr.port=10809,tls-creds=tls0,tls-authz=authz0',
    });
    expect(() => commandLineFor(fromEnv)).toThrow(/verify-peer=on/);
  });

  it('takes PSK over TCP, with or without tls-authz', () => {
    const psk = { 'qom-type': 'tls-creds-psk', id: 'tls0', dir: '/etc/qbd/psk', endpoint: 'server' };
    expect(commandLineFor({ objects: [psk], 'nbd-server': { addr: { type: 'inet', host: '::', port: '10809' }, 'tls-creds': 'tls0' } })).toContain('--nbd-server');
  });

  it('keeps QMP on a UNIX socket at an absolute path, escaping commas', () => {
    expect(() => commandLineFor({ 'qmp-socket': 'relative.sock' })).toThrow('absolute path');
    expect(commandLineFor({ 'qmp-socket': '/run/a,b/qmp.sock' })).toContain('socket,id=qmp0,path=/run/a,,b/qmp.sock,server=on,wait=off');
  });

  it('reports malformed environment values by name', () => {
    expect(() => mergeEnvironment({}, { QBD_BLOCKDEV_0: '{"driver":' })).toThrow(/QBD_BLOCKDEV_0: invalid JSON/);
  });
});

describe('the image, built and run without a container engine', () => {
  it('builds in a clean directory, starts as an unprivileged user, answers its health check, and stops on SIGTERM', async () => {
    const out = tempDir('qbd-image-');
    fs.chmodSync(out, 0o755);
    const run = execFileSync(path.join(REPO, 'docker', 'simulate-image.sh'), [out], { encoding: 'utf8', timeout: 300_000 }).trim();
    expect(fs.existsSync(path.join(run, 'node_modules', 'vitest'))).toBe(false);
    const volume = path.join(out, 'volume');
    fs.mkdirSync(volume, { mode: 0o777 });
    fs.chmodSync(volume, 0o777);
    const socket = path.join(volume, 'qbd', 'qmp.sock');
    const asRoot = process.getuid?.() === 0;
    const node = process.execPath;
    const entry = path.join(run, 'dist', 'src', 'container', 'entrypoint.js');
    const [cmd, args] = asRoot ? ['setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', node, entry]] : [node, [entry]];
    const env = { PATH: process.env.PATH, QBD_QMP_SOCKET: socket, QBD_BLOCKDEV_0: 'null-co,node-name=disk0,size=1048576' };
    const proc = spawn(cmd, args as string[], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    proc.stderr.on('data', (d) => (err += d));
    let exited = false;
    proc.on('exit', () => (exited = true));
    await waitFor(() => exited || fs.existsSync(socket), 20_000, `the sidecar's socket (${err})`);
    expect(exited ? `exited: ${err}` : '').toBe('');
    const st = fs.statSync(path.dirname(socket));
    expect(st.mode & 0o777).toBe(0o700);
    if (asRoot) expect(st.uid).toBe(65534);
    const health = spawn(node, [path.join(run, 'dist', 'src', 'container', 'healthcheck.js')], { env });
    expect(await new Promise((r) => health.on('exit', r))).toBe(0);
    const code = new Promise((r) => proc.on('exit', r));
    proc.kill('SIGTERM');
    expect(await code).toBe(0);
    const unhealthy = spawn(node, [path.join(run, 'dist', 'src', 'container', 'healthcheck.js')], { env });
    expect(await new Promise((r) => unhealthy.on('exit', r))).toBe(1);
    fs.rmSync(out, { recursive: true, force: true });
  }, 400_000);
});
