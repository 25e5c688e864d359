/** Commands about the monitor itself: negotiation, version, schema, quit. */
import { defineCommand } from '../command';
import { QmpError } from '../errors';
import { commandList, introspect } from '../schema/introspection';
import type { Schema } from '../schema/schema';
import { versionInfo } from '../../version';

export function controlCommands(schema: Schema, quit: () => void) {
  // The schema does not change while the daemon runs: build the answers once, on first use.
  let schemaInfo: unknown[] | undefined;
  let commands: unknown[] | undefined;
  return [
    defineCommand<{ enable?: string[] }>('qmp_capabilities', (args, ctx) => {
      if (ctx.monitor.negotiated) {
        throw new QmpError('CommandNotFound', 'Capabilities negotiation is already complete, command ignored');
      }
      ctx.monitor.completeNegotiation((args.enable ?? []).includes('oob'));
      return {};
    }),
    defineCommand('query-version', () => versionInfo()),
    defineCommand('query-commands', () => (commands ??= commandList(schema))),
    defineCommand('query-qmp-schema', () => (schemaInfo ??= introspect(schema))),
    defineCommand('quit', () => {
      // Reply first, then shut down, as QEMU does.
      setImmediate(quit);
      return {};
    }),
  ];
}
