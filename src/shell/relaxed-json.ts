/**
 * A forgiving JSON reader for values typed on the command line.
 *
 * It accepts strict JSON plus the habits qmp-shell users bring along from
 * Python literals: single-quoted strings, `True`/`False`/`None`, bare
 * identifier keys (`{driver: 'file'}`) and trailing commas. Integers beyond
 * 2^53 become BigInt so they reach the server unrounded.
 */

export class RelaxedJsonError extends Error {
  readonly code = 'RELAXED_JSON_SYNTAX';
  constructor(message: string, readonly position: number) {
    super(`${message} at position ${position}`);
  }
}

const KEYWORDS: Record<string, unknown> = {
  true: true,
  false: false,
  null: null,
  True: true,
  False: false,
  None: null,
};

export function parseRelaxedJson(text: string): unknown {
  const reader = new Reader(text);
  const value = reader.value();
  reader.skipSpace();
  if (!reader.atEnd()) reader.fail('unexpected text after the value');
  return value;
}

/** Turns the digits of a JSON number into a number, or a BigInt when unsafe. */
export function integerOrNumber(digits: string): number | bigint {
  if (/^[-+]?\d+$/.test(digits)) {
    const asNumber = Number(digits);
    return Number.isSafeInteger(asNumber) ? asNumber : BigInt(digits);
  }
  return Number(digits);
}

class Reader {
  private pos = 0;
  constructor(private readonly text: string) {}

  atEnd(): boolean {
    return this.pos >= this.text.length;
  }

  fail(message: string): never {
    throw new RelaxedJsonError(message, this.pos);
  }

  skipSpace(): void {
    while (!this.atEnd() && /\s/.test(this.text[this.pos]!)) this.pos++;
  }

  value(): unknown {
    this.skipSpace();
    const ch = this.text[this.pos];
    if (ch === '{') return this.object();
    if (ch === '[') return this.array();
    if (ch === '"' || ch === "'") return this.string();
    if (ch !== undefined && /[-+0-9]/.test(ch)) return this.number();
    const word = this.identifier();
    if (word !== '' && word in KEYWORDS) return KEYWORDS[word];
    return this.fail(word === '' ? 'expected a value' : `unknown word '${word}'`);
  }

  private object(): Record<string, unknown> {
    this.pos++; // '{'
    const result: Record<string, unknown> = {};
    for (;;) {
      this.skipSpace();
      if (this.text[this.pos] === '}') {
        this.pos++;
        return result;
      }
      const quote = this.text[this.pos];
      const key = quote === '"' || quote === "'" ? this.string() : this.identifier();
      if (key === '') this.fail('expected a key');
      this.skipSpace();
      if (this.text[this.pos] !== ':') this.fail("expected ':'");
      this.pos++;
      result[key] = this.value();
      if (!this.separator('}')) return result;
    }
  }

  private array(): unknown[] {
    this.pos++; // '['
    const result: unknown[] = [];
    for (;;) {
      this.skipSpace();
      if (this.text[this.pos] === ']') {
        this.pos++;
        return result;
      }
      result.push(this.value());
      if (!this.separator(']')) return result;
    }
  }

  /** After an item: true if another may follow, false once `close` is consumed. */
  private separator(close: string): boolean {
    this.skipSpace();
    const ch = this.text[this.pos];
    if (ch === ',') {
      this.pos++;
      return true;
    }
    if (ch === close) {
      this.pos++;
      return false;
    }
    return this.fail(`expected ',' or '${close}'`);
  }

  private string(): string {
    const quote = this.text[this.pos]!;
    const start = this.pos;
    this.pos++;
    let result = '';
    while (!this.atEnd()) {
      const ch = this.text[this.pos]!;
      if (ch === quote) {
        this.pos++;
        return result;
      }
      if (ch === '\\') {
        result += this.escape();
        continue;
      }
      result += ch;
      this.pos++;
    }
    this.pos = start;
    return this.fail('unterminated string');
  }

  private escape(): string {
    const ch = this.text[this.pos + 1];
    this.pos += 2;
    switch (ch) {
      case 'n': return '\n';
      case 't': return '\t';
      case 'r': return '\r';
      case 'b': return '\b';
      case 'f': return '\f';
      case 'u': {
        const hex = this.text.slice(this.pos, this.pos + 4);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail('bad \\u escape');
        this.pos += 4;
        return String.fromCharCode(parseInt(hex, 16));
      }
      case undefined:
        return this.fail('unterminated string');
      default:
        return ch; // \" \' \\ \/ and anything else stand for themselves
    }
  }

  private number(): number | bigint {
    const match = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?/.exec(this.text.slice(this.pos));
    if (!match) return this.fail('bad number');
    this.pos += match[0].length;
    return integerOrNumber(match[0]);
  }

  private identifier(): string {
    const match = /^[A-Za-z_][\w-]*/.exec(this.text.slice(this.pos));
    if (!match) return '';
    this.pos += match[0].length;
    return match[0];
  }
}
