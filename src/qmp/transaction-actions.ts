/**
 * The actions of the `transaction` command, registered by the files that
 * own each action's logic (snapshots, backup, dirty bitmaps). Global state:
 * every callback runs on the main loop.
 *
 * The order is QEMU's: `prepare` of every action in list order; when one
 * throws, `abort` of the actions already prepared, newest first; otherwise
 * `commit` of every action in list order; then `clean` of every prepared
 * action, whatever happened. Only `prepare` may fail — it does all the work
 * that can still be undone, so commit cannot fail.
 */
import { QmpError } from './errors';

export interface TransactionAction {
  prepare(): void | Promise<void>;
  commit?(): void;
  abort?(): void | Promise<void>;
  clean?(): void | Promise<void>;
}

/** What the actions of one transaction share. */
export interface TransactionContext {
  /** `completion-mode` of the transaction's properties. */
  readonly completionMode: 'individual' | 'grouped';
  /**
   * Values actions of the same transaction leave for each other, keyed by
   * the owner's choice (e.g. a job group for grouped completion).
   */
  readonly shared: Map<string, unknown>;
}

export type TransactionActionFactory = (data: any, ctx: TransactionContext) => TransactionAction;

const factories = new Map<string, TransactionActionFactory>();

export function registerTransactionAction(type: string, factory: TransactionActionFactory): void {
  if (factories.has(type)) throw new Error(`transaction action '${type}' registered twice`);
  factories.set(type, factory);
}

export function transactionActionFactory(type: string): TransactionActionFactory | undefined {
  return factories.get(type);
}

export function registeredTransactionActions(): string[] {
  return [...factories.keys()];
}

/**
 * For actions that cannot complete as a group (snapshots, dirty bitmaps):
 * the first check of their `prepare`, with the reference's words.
 */
export function refuseGroupedCompletion(type: string, ctx: TransactionContext): void {
  if (ctx.completionMode !== 'individual') {
    throw QmpError.generic(`Action '${type}' does not support Transaction property completion-mode = ${ctx.completionMode}`);
  }
}
