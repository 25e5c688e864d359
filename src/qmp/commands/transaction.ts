/**
 * The `transaction` command: runs the registered actions in QEMU's order
 * (see transaction-actions.ts), all or nothing. `abort` is the action that
 * always fails. An action type no code has registered fails the transaction
 * at its place in the list, so the actions before it are undone.
 */
import { assertMainLoop } from '../../common/thread-context';
import { log } from '../../common/log';
import { defineCommand } from '../command';
import { QmpError } from '../errors';
import {
  registerTransactionAction,
  transactionActionFactory,
  type TransactionAction,
  type TransactionContext,
} from '../transaction-actions';

interface TransactionArgs {
  actions: Array<{ type: string; data: Record<string, unknown> }>;
  properties?: { 'completion-mode'?: 'individual' | 'grouped' };
}

registerTransactionAction('abort', () => ({
  prepare() {
    throw QmpError.generic('Transaction aborted using Abort action');
  },
}));

export async function runTransaction(args: TransactionArgs): Promise<void> {
  assertMainLoop();
  const ctx: TransactionContext = { completionMode: args.properties?.['completion-mode'] ?? 'individual', shared: new Map() };
  const prepared: TransactionAction[] = [];
  try {
    for (const { type, data } of args.actions) {
      const factory = transactionActionFactory(type);
      if (!factory) throw QmpError.generic(`Transaction action '${type}' is not supported`);
      const action = factory(data, ctx);
      await action.prepare();
      prepared.push(action);
    }
  } catch (err) {
    for (const action of [...prepared].reverse()) {
      try {
        await action.abort?.();
      } catch (abortErr) {
        log.error({ err: (abortErr as Error).message }, 'transaction action abort failed');
      }
    }
    await clean(prepared);
    throw err;
  }
  for (const action of prepared) action.commit?.();
  await clean(prepared);
}

async function clean(prepared: TransactionAction[]): Promise<void> {
  for (const action of prepared) {
    try {
      await action.clean?.();
    } catch (err) {
      log.error({ err: (err as Error).message }, 'transaction action clean failed');
    }
  }
}

export function transactionCommands() {
  return [
    defineCommand<TransactionArgs>('transaction', async (args) => {
      await runTransaction(args);
      return {};
    }),
  ];
}
