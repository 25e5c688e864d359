/**
 * The message a built command sends: typed arguments, and transaction
 * actions wrapped as `{type, data}`. Like qmp-shell, `arguments` is always
 * present, even when empty.
 */

import { BuiltCommand, QmpMessage } from './command-builder';
import { ArgumentTyper } from './typing';

export function toQmpMessage(command: BuiltCommand, typer: ArgumentTyper): QmpMessage {
  switch (command.kind) {
    case 'raw':
      return command.message;
    case 'command':
      return { execute: command.name, arguments: typer.commandArguments(command.name, command.args) };
    case 'transaction':
      return {
        execute: 'transaction',
        arguments: {
          actions: command.actions.map((action) =>
            action.kind === 'raw'
              ? action.action
              : { type: action.name, data: typer.transactionData(action.name, action.args) },
          ),
        },
      };
  }
}
