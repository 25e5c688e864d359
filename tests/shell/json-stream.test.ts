import { describe, it, expect } from 'vitest';
import { JsonMessageSplitter, JsonStreamError } from '../../src/shell/json-stream';

const MESSAGES = [
  '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}',
  '{"return": {}, "id": "a"}',
  '{"event": "X", "data": {"text": "braces } { and \\"quotes\\" and \\\\"}, "timestamp": {"seconds": 1}}',
  '{"return": [{"name": "n\\u00e9ud", "list": [[], {}]}]}',
  '{"error": {"class": "GenericError", "desc": "caf\u00e9 \u2603"}}',
];
const STREAM = Buffer.from(MESSAGES.map((message) => `${message}\r\n`).join(''));

/** A small deterministic generator, so a failure can be replayed. */
function randomCuts(seed: number, length: number): number[] {
  let state = seed;
  const cuts: number[] = [];
  for (let at = 0; at < length; ) {
    state = (state * 1103515245 + 12345) % 2147483648;
    at += 1 + (state % 23);
    if (at < length) cuts.push(at);
  }
  return cuts;
}

describe('JsonMessageSplitter', () => {
  it('returns each message of a stream fed in one piece', () => {
    expect(new JsonMessageSplitter().push(STREAM)).toEqual(MESSAGES);
  });

  it('returns the same messages however the bytes are cut, even inside a UTF-8 character', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const splitter = new JsonMessageSplitter();
      const received: string[] = [];
      let from = 0;
      for (const cut of [...randomCuts(seed, STREAM.length), STREAM.length]) {
        received.push(...splitter.push(STREAM.subarray(from, cut)));
        from = cut;
      }
      expect(received, `seed ${seed}`).toEqual(MESSAGES);
    }
  });

  it('handles one byte at a time', () => {
    const splitter = new JsonMessageSplitter();
    const received: string[] = [];
    for (let i = 0; i < STREAM.length; i++) received.push(...splitter.push(STREAM.subarray(i, i + 1)));
    expect(received).toEqual(MESSAGES);
  });

  it('rejects text between messages that is not white space', () => {
    expect(() => new JsonMessageSplitter().push('{"a": 1} x')).toThrow(JsonStreamError);
  });

  it('rejects a message longer than the limit', () => {
    const splitter = new JsonMessageSplitter({ maxMessageLength: 16 });
    expect(() => splitter.push('{"a": "0123456789abcdef')).toThrow(/longer than 16/);
  });
});
