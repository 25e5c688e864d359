/**
 * The storage sidecar's configuration: a JSON file and/or environment
 * variables, turned into a qemu-storage-daemon command line with safe
 * defaults for a pod. QMP listens only on a UNIX socket in a private
 * directory; NBD over TCP needs TLS credentials among the objects (x509
 * with verify-peer and a tls-authz allowlist, or PSK); exports are
 * read-only unless the configuration says `writable: true`.
 *
 * File (QBD_CONFIG, default /etc/qbd/config.json when it exists):
 *   { "qmp-socket": "/run/qbd/qmp.sock",
 *     "objects": [ {"qom-type": "iothread", "id": "io0"} ],
 *     "blockdevs": [ {"driver": "file", "node-name": "disk0", "filename": "/data/disk.img"} ],
 *     "nbd-server": {"addr": {"type": "unix", "path": "/run/qbd/nbd.sock"}},
 *     "exports": [ {"type": "nbd", "id": "e0", "node-name": "disk0"} ] }
 * Environment (appended after the file's entries, in numeric order):
 *   QBD_QMP_SOCKET, QBD_OBJECT_<n>, QBD_BLOCKDEV_<n>, QBD_NBD_SERVER, QBD_EXPORT_<n>
 *   each value JSON (starting with "{") or QEMU key=value syntax.
 */
import * as path from 'node:path';
import { parseKeyval } from '../cli/keyval';

/** An option value: JSON-like data, or key=value text kept as given so the daemon types it from the schema. */
export type OptionValue = Record<string, unknown> | { keyval: string; parsed: Record<string, unknown> };

export interface SidecarConfig {
  'qmp-socket'?: string;
  objects?: OptionValue[];
  blockdevs?: OptionValue[];
  'nbd-server'?: OptionValue;
  exports?: OptionValue[];
}

function isKeyval(v: OptionValue): v is { keyval: string; parsed: Record<string, unknown> } {
  return typeof (v as { keyval?: unknown }).keyval === 'string' && (v as { parsed?: unknown }).parsed !== undefined;
}

function fields(v: OptionValue): Record<string, unknown> {
  return isKeyval(v) ? v.parsed : v;
}

function argument(v: OptionValue): string {
  return isKeyval(v) ? v.keyval : JSON.stringify(v);
}

export class SidecarConfigError extends Error {}

export const DEFAULT_QMP_SOCKET = '/run/qbd/qmp.sock';

/** A value from the environment: JSON when it starts with '{', else key=value with the option's implied key. */
function envValue(name: string, text: string, impliedKey?: string): OptionValue {
  if (text.trimStart().startsWith('{')) {
    try {
      return JSON.parse(text) as Record<string, unknown>;
    } catch (err) {
      throw new SidecarConfigError(`${name}: invalid JSON: ${(err as Error).message}`);
    }
  }
  try {
    return { keyval: text, parsed: parseKeyval(text, impliedKey) as Record<string, unknown> };
  } catch (err) {
    throw new SidecarConfigError(`${name}: ${(err as Error).message}`);
  }
}

/** QBD_<PREFIX>_<n> variables in numeric order of n. */
function numbered(env: NodeJS.ProcessEnv, prefix: string, impliedKey?: string): OptionValue[] {
  const re = new RegExp(`^QBD_${prefix}_(\\d+)$`);
  return Object.keys(env)
    .map((k) => ({ k, m: re.exec(k) }))
    .filter((e): e is { k: string; m: RegExpExecArray } => e.m !== null)
    .sort((a, b) => Number(a.m[1]) - Number(b.m[1]))
    .map((e) => envValue(e.k, env[e.k]!, impliedKey));
}

export function mergeEnvironment(file: SidecarConfig, env: NodeJS.ProcessEnv): SidecarConfig {
  const out: SidecarConfig = {
    'qmp-socket': env.QBD_QMP_SOCKET ?? file['qmp-socket'],
    objects: [...(file.objects ?? []), ...numbered(env, 'OBJECT', 'qom-type')],
    blockdevs: [...(file.blockdevs ?? []), ...numbered(env, 'BLOCKDEV', 'driver')],
    exports: [...(file.exports ?? []), ...numbered(env, 'EXPORT', 'type')],
  };
  const server = env.QBD_NBD_SERVER !== undefined ? envValue('QBD_NBD_SERVER', env.QBD_NBD_SERVER) : file['nbd-server'];
  if (server) out['nbd-server'] = server;
  return out;
}

const OFF = new Set<unknown>([false, 'off', 'false', 'no']);

/**
 * NBD over TCP only in TLS's forced mode, with credentials the objects
 * define for a server: x509 must verify peers and name a tls-authz object
 * (an allowlist, deny by default); PSK, where the key is the proof, may.
 */
function checkTcpTls(server: Record<string, unknown>, objects: OptionValue[]): void {
  const credsId = server['tls-creds'];
  if (!credsId) throw new SidecarConfigError('nbd-server: NBD over TCP needs tls-creds; use a UNIX socket in a shared volume, or give TLS credentials');
  const byId = new Map(objects.map((o) => [fields(o).id, fields(o)]));
  const creds = byId.get(credsId);
  if (!creds || (creds['qom-type'] !== 'tls-creds-x509' && creds['qom-type'] !== 'tls-creds-psk')) {
    throw new SidecarConfigError(`nbd-server: tls-creds '${String(credsId)}' must name a tls-creds-x509 or tls-creds-psk object of the configuration`);
  }
  if (creds.endpoint !== 'server') throw new SidecarConfigError(`nbd-server: TLS credentials '${String(credsId)}' need endpoint=server`);
  if (creds['qom-type'] !== 'tls-creds-x509') return;
  if (OFF.has(creds['verify-peer'])) throw new SidecarConfigError(`nbd-server: TLS credentials '${String(credsId)}' must verify clients (verify-peer=on) for NBD over TCP`);
  const authz = server['tls-authz'];
  const rules = authz === undefined ? undefined : byId.get(authz);
  if (!rules || (rules['qom-type'] !== 'authz-simple' && rules['qom-type'] !== 'authz-list')) {
    throw new SidecarConfigError('nbd-server: x509 over TCP needs tls-authz naming an authz-simple or authz-list object of the configuration');
  }
}

/** The command line qbd runs with. Throws SidecarConfigError for an unsafe or malformed configuration. */
export function commandLineFor(config: SidecarConfig): string[] {
  const qmp = config['qmp-socket'] ?? DEFAULT_QMP_SOCKET;
  if (!path.isAbsolute(qmp)) throw new SidecarConfigError(`qmp-socket must be an absolute path, not '${qmp}'`);
  const args: string[] = [];
  for (const o of config.objects ?? []) args.push('--object', argument(o));
  for (const b of config.blockdevs ?? []) args.push('--blockdev', argument(b));
  const server = config['nbd-server'];
  if (server) {
    const f = fields(server);
    const addrType = isKeyval(server) ? (f.addr as { type?: string } | undefined)?.type : (f.addr as { type?: string } | undefined)?.type;
    if (addrType === 'inet') checkTcpTls(f, config.objects ?? []);
    args.push('--nbd-server', argument(server));
  }
  for (const e of config.exports ?? []) {
    // Read-only unless asked: a consumer container should not be able to write by accident.
    if (isKeyval(e)) args.push('--export', e.parsed.writable === undefined ? `${e.keyval},writable=off` : e.keyval);
    else args.push('--export', JSON.stringify({ ...e, writable: e.writable === true }));
  }
  args.push('--chardev', `socket,id=qmp0,path=${qmp.replace(/,/g, ',,')},server=on,wait=off`, '--monitor', 'chardev=qmp0');
  return args;
}
