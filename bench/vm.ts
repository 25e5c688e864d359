/**
 * A tiny Linux guest for the tests and benchmark of vhost-user exports:
 * the host's kernel (/boot), an initramfs written here (busybox, the virtio modules the
 * kernel needs, a script and its files) and qemu-system-x86_64 under TCG.
 * The script's output comes back on the serial console.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const QEMU_SYSTEM = 'qemu-system-x86_64';
const BUSYBOX = '/bin/busybox';

/** The newest kernel in /boot with its module tree, or undefined. */
export function hostKernel(): { image: string; modules: string } | undefined {
  let names: string[];
  try {
    names = fs.readdirSync('/boot').filter((n) => n.startsWith('vmlinuz-'));
  } catch {
    return undefined;
  }
  for (const name of names.sort().reverse()) {
    const version = name.slice('vmlinuz-'.length);
    const modules = path.join('/lib/modules', version);
    if (fs.existsSync(path.join(modules, 'modules.dep'))) return { image: path.join('/boot', name), modules };
  }
  return undefined;
}

export function busyboxPath(): string | undefined {
  for (const p of [BUSYBOX, '/usr/bin/busybox']) if (fs.existsSync(p)) return p;
  return undefined;
}

/** The module files to load, dependencies first, for modules not built into the kernel. */
function moduleFiles(modulesDir: string, wanted: string[]): string[] {
  const deps = new Map<string, string[]>();
  for (const line of fs.readFileSync(path.join(modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const [mod, rest] = line.split(':');
    if (mod) deps.set(mod, (rest ?? '').trim().split(/\s+/).filter(Boolean));
  }
  const byName = new Map([...deps.keys()].map((k) => [path.basename(k).replace(/\.ko(\.\w+)?$/, ''), k]));
  const order: string[] = [];
  const visit = (file: string): void => {
    if (order.includes(file)) return;
    // modules.dep lists a module's dependencies, each with its own line.
    for (const d of [...(deps.get(file) ?? [])].reverse()) visit(d);
    order.push(file);
  };
  for (const name of wanted) {
    const file = byName.get(name);
    if (file) visit(file);
  }
  for (const f of order) if (!f.endsWith('.ko')) throw new Error(`compressed kernel module ${f}: not supported by the test initramfs`);
  return order.map((f) => path.join(modulesDir, f));
}

interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  rdev?: [number, number];
}

/** An initramfs archive (cpio "newc"), uncompressed. */
function cpio(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const pad = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);
  let ino = 1;
  for (const e of [...entries, { name: 'TRAILER!!!', mode: 0 }]) {
    const data = (e as CpioEntry).data ?? Buffer.alloc(0);
    const rdev = (e as CpioEntry).rdev ?? [0, 0];
    const name = Buffer.from(`${e.name}\0`);
    const fields = [ino++, e.mode, 0, 0, 1, 0, data.length, 0, 0, rdev[0], rdev[1], name.length, 0];
    const header = Buffer.from('070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join(''));
    parts.push(header, name, pad(header.length + name.length), data, pad(data.length));
  }
  return Buffer.concat(parts);
}

const DIR = 0o040755;
const FILE = 0o100755;
const CHAR = 0o020600;

/**
 * Writes an initramfs to `dest` whose /init loads the virtio PCI and block
 * modules, mounts what a script needs, runs `script` (with `files` beside
 * it at /) and powers off.
 */
export function writeInitramfs(dest: string, modulesDir: string, script: string, files: Record<string, Buffer> = {}): void {
  const busybox = busyboxPath();
  if (!busybox) throw new Error('busybox not found');
  const modules = moduleFiles(modulesDir, ['virtio_pci', 'virtio_blk']);
  const init = [
    '#!/bin/busybox sh',
    '/bin/busybox --install -s /bin',
    'mount -t devtmpfs dev /dev',
    'mount -t proc proc /proc',
    'mount -t sysfs sys /sys',
    ...modules.map((m) => `insmod /lib/modules/${path.basename(m)}`),
    'i=0; while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done',
    script,
    'poweroff -f',
    '',
  ].join('\n');
  const entries: CpioEntry[] = [
    { name: 'bin', mode: DIR },
    { name: 'dev', mode: DIR },
    { name: 'dev/console', mode: CHAR, rdev: [5, 1] },
    { name: 'proc', mode: DIR },
    { name: 'sys', mode: DIR },
    { name: 'lib', mode: DIR },
    { name: 'lib/modules', mode: DIR },
    { name: 'bin/busybox', mode: FILE, data: fs.readFileSync(busybox) },
    ...modules.map((m) => ({ name: `lib/modules/${path.basename(m)}`, mode: FILE, data: fs.readFileSync(m) })),
    ...Object.entries(files).map(([name, data]) => ({ name, mode: FILE, data })),
    { name: 'init', mode: FILE, data: Buffer.from(init) },
  ];
  fs.writeFileSync(dest, cpio(entries));
}

/**
 * Boots the guest with a vhost-user-blk disk served at `socket` and answers
 * what it printed on its console once it has powered off.
 */
export function bootWithVhostUserBlk(kernel: string, initramfs: string, socket: string, opts: { numQueues?: number; timeoutMs?: number } = {}): Promise<string> {
  const args = [
    '-accel', 'tcg', '-m', '256', '-smp', '1',
    // vhost-user needs the guest's memory shared with the back-end.
    '-object', 'memory-backend-memfd,id=mem,size=256M,share=on', '-numa', 'node,memdev=mem',
    '-chardev', `socket,id=vu,path=${socket}`,
    '-device', `vhost-user-blk-pci,chardev=vu,num-queues=${opts.numQueues ?? 1}`,
    '-kernel', kernel, '-initrd', initramfs,
    '-append', 'console=ttyS0 quiet panic=-1',
    '-display', 'none', '-nodefaults', '-serial', 'stdio', '-no-reboot',
  ];
  return new Promise((resolve, reject) => {
    const proc = spawn(QEMU_SYSTEM, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString('latin1')));
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => proc.kill('SIGKILL'), opts.timeoutMs ?? 300_000);
    proc.on('error', reject);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${QEMU_SYSTEM} ended with ${code ?? signal}: ${err}\n${out}`));
    });
  });
}
