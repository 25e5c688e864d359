/**
 * Writing around readline's input line.
 *
 * An event may arrive while the user is typing. To show it without garbling
 * the input, the input area is erased, the text printed, and the prompt
 * redrawn with the same input and cursor. readline redraws relative to the
 * row it last drew the cursor on (its `prevRows`); once the area is erased
 * and the text printed, that row is gone, so it is reset before redrawing.
 */

import * as readline from 'node:readline';

interface RedrawState {
  prevRows?: number;
  line: string;
  cursor: number;
}

export function printAbovePrompt(rl: readline.Interface, output: NodeJS.WritableStream, text: string): void {
  const rows = rl.getCursorPos().rows;
  if (rows > 0) readline.moveCursor(output, 0, -rows);
  readline.cursorTo(output, 0);
  readline.clearScreenDown(output);
  output.write(`${text}\n`);
  (rl as unknown as RedrawState).prevRows = 0;
  rl.prompt(true);
}

/** Empties the input line without submitting it (Ctrl-C). */
export function discardInput(rl: readline.Interface): void {
  const state = rl as unknown as RedrawState;
  state.line = '';
  state.cursor = 0;
  state.prevRows = 0;
}
