/**
 * Splits a byte stream into JSON messages (QMP over a UNIX or TCP socket).
 *
 * QMP messages are JSON objects, usually followed by CRLF, but nothing
 * guarantees one message per read: a chunk may end in the middle of a
 * message, of a string or of a multi-byte character. The scanner keeps its
 * state (nesting depth, inside a string, after a backslash) across chunks and
 * returns each complete top-level object as text.
 */

import { StringDecoder } from 'node:string_decoder';

export class JsonStreamError extends Error {
  readonly code = 'QMP_STREAM_SYNTAX';
}

export interface JsonStreamOptions {
  /** Largest message accepted, in characters. */
  maxMessageLength?: number;
}

const DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024;

export class JsonMessageSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private readonly maxMessageLength: number;
  private partial = '';
  private depth = 0;
  private inString = false;
  private escaped = false;

  constructor(options: JsonStreamOptions = {}) {
    this.maxMessageLength = options.maxMessageLength ?? DEFAULT_MAX_MESSAGE;
  }

  /** Feeds bytes (or already decoded text); returns the messages completed by them. */
  push(chunk: Buffer | string): string[] {
    const text = typeof chunk === 'string' ? chunk : this.decoder.write(chunk);
    const messages: string[] = [];
    let start = this.depth > 0 ? 0 : -1;
    for (let i = 0; i < text.length; i++) {
      const ch = text[i]!;
      if (this.depth === 0) {
        if (ch === '{') {
          this.depth = 1;
          start = i;
        } else if (!/\s/.test(ch)) {
          throw new JsonStreamError(`unexpected character ${JSON.stringify(ch)} between messages`);
        }
        continue;
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (ch === '\\') this.escaped = true;
        else if (ch === '"') this.inString = false;
        continue;
      }
      if (ch === '"') this.inString = true;
      else if (ch === '{' || ch === '[') this.depth++;
      else if (ch === '}' || ch === ']') {
        this.depth--;
        if (this.depth === 0) {
          messages.push(this.partial + text.slice(start, i + 1));
          this.partial = '';
          start = -1;
        }
      }
    }
    if (this.depth > 0) {
      this.partial += text.slice(start);
      if (this.partial.length > this.maxMessageLength) {
        throw new JsonStreamError(`message longer than ${this.maxMessageLength} characters`);
      }
    }
    return messages;
  }
}
