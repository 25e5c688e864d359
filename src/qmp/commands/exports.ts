/** Commands of the NBD server and block exports. */
import { defineCommand } from '../command';
import {
  blockExportAdd,
  blockExportDel,
  nbdServerAdd,
  nbdServerStop,
  queryBlockExports,
  type BlockExportOptions,
} from '../../exports/export-registry';
import { listenAddress, nbdServerStart } from '../../exports/nbd/server-gs';

type RemoveMode = 'safe' | 'hard';

export function exportCommands() {
  return [
    defineCommand<{ addr: Record<string, unknown>; 'tls-creds'?: string; 'tls-authz'?: string; 'max-connections'?: number }>('nbd-server-start', async (args) => {
      const config: Parameters<typeof nbdServerStart>[0] = { address: listenAddress(args.addr, true), maxConnections: args['max-connections'] ?? 0 };
      if (args['tls-creds'] !== undefined) config.tlsCreds = args['tls-creds'];
      if (args['tls-authz'] !== undefined) config.tlsAuthz = args['tls-authz'];
      await nbdServerStart(config);
      return {};
    }),
    defineCommand<{ device: string; name?: string; description?: string; writable?: boolean; bitmap?: string }>('nbd-server-add', async (args) => {
      await nbdServerAdd(args);
      return {};
    }),
    defineCommand<{ name: string; mode?: RemoveMode }>('nbd-server-remove', async (args) => {
      await blockExportDel(args.name, args.mode);
      return {};
    }),
    defineCommand('nbd-server-stop', async () => {
      await nbdServerStop();
      return {};
    }),
    defineCommand<BlockExportOptions>('block-export-add', async (args) => {
      await blockExportAdd(args);
      return {};
    }),
    defineCommand<{ id: string; mode?: RemoveMode }>('block-export-del', async (args) => {
      await blockExportDel(args.id, args.mode);
      return {};
    }),
    defineCommand('query-block-exports', () => queryBlockExports()),
  ];
}
