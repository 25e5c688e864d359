/**
 * The container's entry point: reads the sidecar configuration, prepares the
 * private QMP directory, and runs the daemon in this process (so SIGTERM
 * reaches it directly). Arguments given to the container replace the
 * configuration: `docker run qbd --blockdev …` works as with plain qbd.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { main as daemonMain } from '../main';
import { commandLineFor, DEFAULT_QMP_SOCKET, mergeEnvironment, SidecarConfigError, type SidecarConfig } from './sidecar-config';

function readConfigFile(env: NodeJS.ProcessEnv): SidecarConfig {
  const file = env.QBD_CONFIG ?? '/etc/qbd/config.json';
  if (!fs.existsSync(file)) {
    if (env.QBD_CONFIG) throw new SidecarConfigError(`configuration file ${file} not found`);
    return {};
  }
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as SidecarConfig;
  } catch (err) {
    throw new SidecarConfigError(`${file}: ${(err as Error).message}`);
  }
}

/** The QMP socket's directory: created if needed, and private to the daemon's user. */
function preparePrivateDir(socket: string): void {
  const dir = path.dirname(socket);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
}

export function main(argv: string[]): void {
  if (argv.length > 0) return daemonMain(argv);
  try {
    const config = mergeEnvironment(readConfigFile(process.env), process.env);
    preparePrivateDir(config['qmp-socket'] ?? DEFAULT_QMP_SOCKET);
    daemonMain(commandLineFor(config));
  } catch (err) {
    if (!(err instanceof SidecarConfigError)) throw err;
    process.stderr.write(`qbd-entrypoint: ${err.message}\n`);
    process.exit(1);
  }
}

if (require.main === module) main(process.argv.slice(2));
