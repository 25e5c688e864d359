/**
 * Streaming JSON reader of the QMP monitor.
 *
 * A QMP client writes a stream of JSON texts; reads can hold several texts,
 * part of one, or whitespace. This reader turns bytes into a sequence of
 * events, one per JSON text or per error, exactly as qemu-storage-daemon's
 * parser does, because clients see the difference: the same input must give
 * the same number of replies, in the same order, with the same wording.
 *
 * The reference parser is three layers, and so is this file:
 *   lexer    — a byte-driven state machine producing tokens; a lexical error
 *              produces an error token and a recovery state that skips bytes
 *              up to a resynchronisation point;
 *   streamer — counts braces and brackets and ends the message once both
 *              counts are back to zero (or one went negative); it enforces
 *              the limits;
 *   parser   — builds the value; the first error wins and the whole message
 *              is dropped. The reference collects the tokens and parses them
 *              by recursive descent at the end of the message; here the same
 *              grammar is fed one token at a time, which finds the same
 *              first error without holding a token list.
 *
 * A fast path hands a whole, simple object found in one chunk to JSON.parse;
 * it bails out on anything where the two could differ, so results and errors
 * are the same either way.
 *
 * Behaviour observed on qemu-storage-daemon 7.2 (one line in, replies out):
 *   garbage              → "JSON parse error, invalid keyword 'garbage'"
 *   garbage garbage      → two errors: every token at depth zero is a message
 *   Garbage              → "stray 'G'" then the rest of the word is skipped
 *   } or ]               → "expecting value" (one per stray closer)
 *   "abc⏎                → "stray '\"abc\n'" (the newline is part of the text)
 *   "a\qb"               → "invalid escape sequence in string"
 *   "\uFFFE", "\uD800"   → "\uFFFE is not a valid Unicode character"
 *   bad UTF-8, U+FFFE raw, surrogates encoded → "invalid UTF-8 sequence in
 *                           string"; C0 80 is accepted as U+0000
 *   01 / 1. / - / 1e     → "stray '01'" / "stray '1.\n'" / …
 *   0e1                  → integer 0, "invalid keyword 'e'", integer 1
 *   'single'             → accepted, as is \' inside either kind of string
 *   0xFF                 → "stray '\uFFFD'"; a client may send it to reset
 *   1, "x", [1]          → delivered as values (the dispatcher answers "QMP
 *                           input must be a JSON object")
 *   {"a":1,"a":2}        → "duplicate key"
 *   {"a": "x\x01", "b":1} → six replies: the stray error, then recovery stops
 *                           at ',' and each later token is its own message
 *   [ ×1025              → "JSON nesting depth limit exceeded", counts reset,
 *                           so ] ×1025 afterwards gives 1025 "expecting value"
 *   a keyword of 2000 letters → the message is cut at 1023 bytes after
 *                           "JSON parse error, " (the reference formats parse
 *                           errors into a 1024-byte buffer); "stray" texts are
 *                           not cut, but stop at the first NUL byte
 *   connection closed mid-message → the partial input is dropped silently
 *
 * Numbers: an integer is a JS number when it is a safe integer, a BigInt when
 * it fits the reference's int64/uint64 range but not a double's 53 bits, and
 * a double (as the reference does) beyond that range. "-0" is the integer 0.
 * Floats are JS numbers, so `1.0` arrives as `1`, indistinguishable from the
 * integer 1 (the reference would refuse 1.0 where the schema wants an
 * integer); "-0.0" stays -0.
 */

/** Limits of one message; the defaults are the reference's. */
export interface JsonReaderLimits {
  /** Bytes of all tokens of one message (whitespace excluded), and of one token. */
  maxMessageBytes: number;
  /** Tokens in one message. */
  maxTokens: number;
  /** Open braces plus open brackets. */
  maxDepth: number;
}

export type JsonReaderEvent =
  | { kind: 'value'; value: unknown }
  | { kind: 'error'; message: string };

export const DEFAULT_JSON_READER_LIMITS: Readonly<JsonReaderLimits> = Object.freeze({
  maxMessageBytes: 64 * 1024 * 1024,
  maxTokens: 2 * 1024 * 1024,
  maxDepth: 1024,
});

export const JSON_TOKEN_SIZE_LIMIT_EXCEEDED = 'JSON token size limit exceeded';
export const JSON_TOKEN_COUNT_LIMIT_EXCEEDED = 'JSON token count limit exceeded';
export const JSON_NESTING_DEPTH_LIMIT_EXCEEDED = 'JSON nesting depth limit exceeded';

// ---------------------------------------------------------------------------
// Lexer tables
// ---------------------------------------------------------------------------

// Lexer states. Start and Recovery hold no token text.
const S_START = 0;
const S_RECOVERY = 1;
const S_DQ_STRING = 2;
const S_DQ_ESCAPE = 3;
const S_SQ_STRING = 4;
const S_SQ_ESCAPE = 5;
const S_ZERO = 6;
const S_SIGN = 7;
const S_DIGITS = 8;
const S_MANTISSA = 9; // after '.', a digit must follow
const S_MANTISSA_DIGITS = 10;
const S_EXP_E = 11;
const S_EXP_SIGN = 12;
const S_EXP_DIGITS = 13;
const S_KEYWORD = 14;
const STATE_COUNT = 15;

// Token kinds, also used as table actions ("this byte completes a token").
const T_LCURLY = 16;
const T_RCURLY = 17;
const T_LSQUARE = 18;
const T_RSQUARE = 19;
const T_COLON = 20;
const T_COMMA = 21;
const T_INTEGER = 22;
const T_FLOAT = 23;
const T_KEYWORD = 24;
const T_STRING = 25;
/** Table action: lexical error; the byte is part of the error text. */
const A_ERROR = 30;

/** Flag on an action: the byte is not consumed and is looked at again. */
const LOOKAHEAD = 0x80;

const CH_TAB = 0x09;
const CH_LF = 0x0a;
const CH_CR = 0x0d;
const CH_SPACE = 0x20;
const CH_DQUOTE = 0x22;
const CH_SQUOTE = 0x27;
const CH_PLUS = 0x2b;
const CH_COMMA = 0x2c;
const CH_MINUS = 0x2d;
const CH_DOT = 0x2e;
const CH_SLASH = 0x2f;
const CH_0 = 0x30;
const CH_1 = 0x31;
const CH_9 = 0x39;
const CH_COLON = 0x3a;
const CH_UPPER_E = 0x45;
const CH_LSQUARE = 0x5b;
const CH_BACKSLASH = 0x5c;
const CH_RSQUARE = 0x5d;
const CH_A = 0x61;
const CH_B = 0x62;
const CH_E = 0x65;
const CH_F = 0x66;
const CH_L = 0x6c;
const CH_N = 0x6e;
const CH_R = 0x72;
const CH_T = 0x74;
const CH_U = 0x75;
const CH_Z = 0x7a;
const CH_LCURLY = 0x7b;
const CH_RCURLY = 0x7d;

/** next action = LEX_TABLE[state * 256 + byte]; unlisted bytes are errors. */
const LEX_TABLE = buildLexTable();

function buildLexTable(): Uint8Array {
  const t = new Uint8Array(STATE_COUNT * 256).fill(A_ERROR);
  const set = (state: number, from: number, to: number, action: number): void => {
    t.fill(action, state * 256 + from, state * 256 + to + 1);
  };
  const one = (state: number, ch: number, action: number): void => set(state, ch, ch, action);
  // A number or keyword ends at whatever byte follows it; that byte is then
  // lexed afresh ("1x" is the integer 1 and the keyword x).
  const terminal = (state: number, token: number): void => set(state, 0, 255, token | LOOKAHEAD);

  one(S_START, CH_DQUOTE, S_DQ_STRING);
  one(S_START, CH_SQUOTE, S_SQ_STRING);
  one(S_START, CH_0, S_ZERO);
  set(S_START, CH_1, CH_9, S_DIGITS);
  one(S_START, CH_MINUS, S_SIGN);
  one(S_START, CH_LCURLY, T_LCURLY);
  one(S_START, CH_RCURLY, T_RCURLY);
  one(S_START, CH_LSQUARE, T_LSQUARE);
  one(S_START, CH_RSQUARE, T_RSQUARE);
  one(S_START, CH_COLON, T_COLON);
  one(S_START, CH_COMMA, T_COMMA);
  set(S_START, CH_A, CH_Z, S_KEYWORD);
  for (const ws of [CH_SPACE, CH_TAB, CH_CR, CH_LF]) one(S_START, ws, S_START);

  // After an error, skip up to a structural character, a control character
  // other than tab, or 0xFE/0xFF; that byte is then lexed from Start (so a
  // control character or 0xFF there is an error of its own).
  set(S_RECOVERY, 0x00, 0x1f, S_START | LOOKAHEAD);
  set(S_RECOVERY, 0x20, 0xfd, S_RECOVERY);
  set(S_RECOVERY, 0xfe, 0xff, S_START | LOOKAHEAD);
  one(S_RECOVERY, CH_TAB, S_RECOVERY);
  for (const ch of [CH_LSQUARE, CH_RSQUARE, CH_LCURLY, CH_RCURLY, CH_COMMA, CH_COLON]) {
    one(S_RECOVERY, ch, S_START | LOOKAHEAD);
  }

  // Strings take any byte from 0x20 to 0xFD; escapes and UTF-8 are checked by
  // the parser, not here (so "\q" is a parse error, "\<TAB>" a lexical one).
  set(S_DQ_STRING, 0x20, 0xfd, S_DQ_STRING);
  one(S_DQ_STRING, CH_BACKSLASH, S_DQ_ESCAPE);
  one(S_DQ_STRING, CH_DQUOTE, T_STRING);
  set(S_DQ_ESCAPE, 0x20, 0xfd, S_DQ_STRING);
  set(S_SQ_STRING, 0x20, 0xfd, S_SQ_STRING);
  one(S_SQ_STRING, CH_BACKSLASH, S_SQ_ESCAPE);
  one(S_SQ_STRING, CH_SQUOTE, T_STRING);
  set(S_SQ_ESCAPE, 0x20, 0xfd, S_SQ_STRING);

  // "0" may be followed by a fraction but not by digits nor an exponent.
  terminal(S_ZERO, T_INTEGER);
  set(S_ZERO, CH_0, CH_9, A_ERROR);
  one(S_ZERO, CH_DOT, S_MANTISSA);

  set(S_SIGN, CH_0, CH_0, S_ZERO);
  set(S_SIGN, CH_1, CH_9, S_DIGITS);

  terminal(S_DIGITS, T_INTEGER);
  set(S_DIGITS, CH_0, CH_9, S_DIGITS);
  one(S_DIGITS, CH_E, S_EXP_E);
  one(S_DIGITS, CH_UPPER_E, S_EXP_E);
  one(S_DIGITS, CH_DOT, S_MANTISSA);

  set(S_MANTISSA, CH_0, CH_9, S_MANTISSA_DIGITS);

  terminal(S_MANTISSA_DIGITS, T_FLOAT);
  set(S_MANTISSA_DIGITS, CH_0, CH_9, S_MANTISSA_DIGITS);
  one(S_MANTISSA_DIGITS, CH_E, S_EXP_E);
  one(S_MANTISSA_DIGITS, CH_UPPER_E, S_EXP_E);

  one(S_EXP_E, CH_MINUS, S_EXP_SIGN);
  one(S_EXP_E, CH_PLUS, S_EXP_SIGN);
  set(S_EXP_E, CH_0, CH_9, S_EXP_DIGITS);
  set(S_EXP_SIGN, CH_0, CH_9, S_EXP_DIGITS);

  terminal(S_EXP_DIGITS, T_FLOAT);
  set(S_EXP_DIGITS, CH_0, CH_9, S_EXP_DIGITS);

  terminal(S_KEYWORD, T_KEYWORD);
  set(S_KEYWORD, CH_A, CH_Z, S_KEYWORD);
  return t;
}

/** Bytes a string may hold without any decoding: printable ASCII but '\'. */
const PLAIN_STRING_BYTE = (() => {
  const t = new Uint8Array(256);
  t.fill(1, 0x20, 0x7f);
  t[CH_BACKSLASH] = 0;
  return t;
})();

/** Bytes that keep the lexer inside a "string" or a 'string' without any event. */
const STRING_RUN_BYTE = ((): Uint8Array[] => {
  const dq = new Uint8Array(256).fill(1, 0x20, 0xfe);
  dq[CH_BACKSLASH] = 0;
  const sq = dq.slice();
  dq[CH_DQUOTE] = 0;
  sq[CH_SQUOTE] = 0;
  const byState: Uint8Array[] = [];
  byState[S_DQ_STRING] = dq;
  byState[S_SQ_STRING] = sq;
  return byState;
})();

// ---------------------------------------------------------------------------
// Token decoding (the reference decodes in its parser; an undecodable token is
// a parse error, reported only if the parser gets to that token)
// ---------------------------------------------------------------------------

/** A token the parser refuses when it reaches it, with the reason. */
class RefusedToken {
  constructor(readonly message: string) {}
}

const PARSE_ERROR_PREFIX = 'JSON parse error, ';
/** The reference formats parse errors into a 1024-byte buffer. */
const PARSE_MESSAGE_MAX = 1023;

function parseErrorMessage(detail: string): string {
  return PARSE_ERROR_PREFIX + (detail.length > PARSE_MESSAGE_MAX ? detail.slice(0, PARSE_MESSAGE_MAX) : detail);
}

function isValidCodepoint(cp: number): boolean {
  if (cp > 0x10ffff) return false;
  if ((cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe) return false; // noncharacter (also catches -1)
  if (cp >= 0xd800 && cp <= 0xdfff) return false;
  return true;
}

const MIN_CODEPOINT_FOR_LENGTH = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];

/** Where decodeModUtf8 stopped (a module variable saves an allocation per call). */
let decodeEnd = 0;

/**
 * Decodes one code point the way the reference does ("modified UTF-8": the
 * overlong C0 80 means U+0000; noncharacters and surrogates are invalid).
 * Returns the code point, or −1 if invalid, and sets decodeEnd. A sequence
 * cut short stops before the byte that is not a continuation; the end of
 * the range reads as a NUL, like the end of a C string.
 */
function decodeModUtf8(src: Buffer, p: number, end: number): number {
  let byte = src[p++]!;
  let cp: number;
  if (byte < 0x80) {
    cp = byte;
  } else if (byte >= 0xfe || (byte & 0x40) === 0) {
    cp = -1; // impossible byte, or continuation byte without a lead
  } else {
    let len = 0;
    let mask = 0x80;
    for (; byte & mask; mask >>= 1) len++;
    cp = byte & (mask - 1);
    for (let i = 1; i < len; i++) {
      byte = p < end ? src[p]! : 0;
      if ((byte & 0xc0) !== 0x80) {
        decodeEnd = p;
        return -1;
      }
      p++;
      cp = (cp << 6) | (byte & 0x3f);
    }
    if (!isValidCodepoint(cp)) {
      cp = -1;
    } else if (cp < MIN_CODEPOINT_FOR_LENGTH[len - 2]! && !(cp === 0 && len === 2)) {
      cp = -1; // overlong
    }
  }
  decodeEnd = p;
  return cp;
}

/**
 * Bytes as the reference shows them in an error reply: a C string, so they
 * stop at the first NUL, and undecodable sequences become U+FFFD.
 */
function bytesForMessage(src: Buffer, start: number, end: number): string {
  const nul = src.indexOf(0, start);
  if (nul >= 0 && nul < end) end = nul;
  let out = '';
  let p = start;
  while (p < end) {
    if (src[p]! < 0x80) {
      const runStart = p;
      while (p < end && src[p]! < 0x80) p++;
      out += src.toString('latin1', runStart, p);
      continue;
    }
    const cp = decodeModUtf8(src, p, end);
    out += String.fromCodePoint(cp < 0 ? 0xfffd : cp);
    p = decodeEnd;
  }
  return out;
}

function hexValue(ch: number): number {
  if (ch >= CH_0 && ch <= CH_9) return ch - CH_0;
  const lower = ch | 0x20;
  if (lower >= CH_A && lower <= CH_F) return lower - CH_A + 10;
  return -1;
}

/** Four hex digits at p (bytes past end read as NUL), or −1. */
function fourHex(src: Buffer, p: number, end: number): number {
  let cp = 0;
  for (let i = 0; i < 4; i++) {
    const d = p + i < end ? hexValue(src[p + i]!) : -1;
    if (d < 0) return -1;
    cp = (cp << 4) | d;
  }
  return cp;
}

/** A string token, quotes included. */
function decodeString(src: Buffer, start: number, end: number): string | RefusedToken {
  // The lexer guarantees the token ends with its closing quote, that this
  // quote appears nowhere else unescaped, and that a byte follows each '\'.
  const last = end - 1;
  let p = start + 1;
  while (p < last && PLAIN_STRING_BYTE[src[p]!]) p++;
  if (p === last) return src.toString('latin1', start + 1, last);

  let out = src.toString('latin1', start + 1, p);
  while (p < last) {
    const ch = src[p]!;
    if (ch === CH_BACKSLASH) {
      const escapeStart = p;
      const escaped = src[p + 1]!;
      p += 2;
      switch (escaped) {
        case CH_DQUOTE: out += '"'; break;
        case CH_SQUOTE: out += "'"; break;
        case CH_BACKSLASH: out += '\\'; break;
        case CH_SLASH: out += '/'; break;
        case CH_B: out += '\b'; break;
        case CH_F: out += '\f'; break;
        case CH_N: out += '\n'; break;
        case CH_R: out += '\r'; break;
        case CH_T: out += '\t'; break;
        case CH_U: {
          let cp = fourHex(src, p, end);
          p += 4;
          // A high surrogate escape followed by a low one makes one character.
          if (cp >= 0xd800 && cp <= 0xdbff && p + 1 < last && src[p] === CH_BACKSLASH && src[p + 1] === CH_U) {
            const low = fourHex(src, p + 2, end);
            if (low >= 0xdc00 && low <= 0xdfff) {
              cp = 0x10000 + ((cp & 0x3ff) << 10) + (low & 0x3ff);
              p += 6;
            }
          }
          if (!isValidCodepoint(cp)) {
            // The reference shows the six bytes from the backslash, or fewer
            // if the token ends first.
            const shown = bytesForMessage(src, escapeStart, Math.min(p, end));
            return new RefusedToken(parseErrorMessage(`${shown} is not a valid Unicode character`));
          }
          out += String.fromCodePoint(cp);
          break;
        }
        default:
          return new RefusedToken(parseErrorMessage('invalid escape sequence in string'));
      }
    } else if (ch < 0x80) {
      const runStart = p;
      while (p < last && PLAIN_STRING_BYTE[src[p]!]) p++;
      if (p === runStart) p++; // DEL
      out += src.toString('latin1', runStart, p);
    } else {
      const cp = decodeModUtf8(src, p, end);
      if (cp < 0) return new RefusedToken(parseErrorMessage('invalid UTF-8 sequence in string'));
      out += String.fromCodePoint(cp);
      p = decodeEnd;
    }
  }
  return out;
}

const INT64_MIN = -(2n ** 63n);
const UINT64_MAX = 2n ** 64n - 1n;
/** Length of an integer token (sign included) that is always a safe integer. */
const SAFE_INTEGER_TEXT_LENGTH = 15;

function decodeInteger(src: Buffer, start: number, end: number): number | bigint {
  if (end - start <= SAFE_INTEGER_TEXT_LENGTH) {
    const negative = src[start] === CH_MINUS;
    let n = 0;
    for (let p = negative ? start + 1 : start; p < end; p++) n = n * 10 + (src[p]! - CH_0);
    return negative && n !== 0 ? -n : n; // "-0" is the integer 0
  }
  const text = src.toString('latin1', start, end);
  const big = BigInt(text);
  // The reference keeps an integer exact if it fits int64 or uint64, and
  // otherwise reads it as a double.
  if (big < INT64_MIN || big > UINT64_MAX) return Number(text);
  const n = Number(big);
  return Number.isSafeInteger(n) ? n : big;
}

function decodeKeyword(src: Buffer, start: number, end: number): unknown {
  const length = end - start;
  const c0 = src[start];
  if (length === 4 && c0 === CH_T && src[start + 1] === CH_R && src[start + 2] === CH_U && src[start + 3] === CH_E) return true;
  if (length === 4 && c0 === CH_N && src[start + 1] === CH_U && src[start + 2] === CH_L && src[start + 3] === CH_L) return null;
  if (length === 5 && src.toString('latin1', start, end) === 'false') return false;
  // Only the start of a long keyword can show in the (cut) message.
  const shown = src.toString('latin1', start, Math.min(end, start + PARSE_MESSAGE_MAX));
  return new RefusedToken(parseErrorMessage(`invalid keyword '${shown}'`));
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

// What the parser expects from the next token.
const EXPECT_VALUE = 0;
const EXPECT_VALUE_OR_CLOSE = 1; // just after '['
const EXPECT_KEY_OR_CLOSE = 2; // just after '{'
const EXPECT_COLON = 3;
const EXPECT_ARRAY_NEXT = 4; // ',' or ']'
const EXPECT_OBJECT_NEXT = 5; // ',' or '}'
const EXPECT_NOTHING = 6; // the value is complete

interface OpenContainer {
  container: unknown[] | Record<string, unknown>;
  isArray: boolean;
  /** The value being parsed is the key of a member (the reference parses any value there, then checks it is a string). */
  inKey: boolean;
  key: string;
}

const hasOwn = Object.prototype.hasOwnProperty;

/**
 * The reference's recursive-descent parser, fed one token at a time: it looks
 * at tokens in the same order and stops at the same first error, with the
 * same words; it only needs no token list and no recursion. After an error
 * it ignores tokens until the streamer ends the message.
 */
class MessageParser {
  failure: string | undefined;
  private expect = EXPECT_VALUE;
  private readonly open: OpenContainer[] = [];
  private value: unknown;

  reset(): void {
    this.failure = undefined;
    this.expect = EXPECT_VALUE;
    this.open.length = 0;
    this.value = undefined;
  }

  /** Feeds a token; value is the decoded value of a scalar token. */
  feed(kind: number, value: unknown): void {
    if (this.failure !== undefined) return;
    switch (this.expect) {
      case EXPECT_VALUE:
        break;
      case EXPECT_VALUE_OR_CLOSE:
        if (kind === T_RSQUARE) return this.close();
        break;
      case EXPECT_KEY_OR_CLOSE:
        if (kind === T_RCURLY) return this.close();
        break;
      case EXPECT_COLON:
        if (kind !== T_COLON) return this.fail(parseErrorMessage('missing : in object pair'));
        this.expect = EXPECT_VALUE;
        return;
      case EXPECT_ARRAY_NEXT:
        if (kind === T_RSQUARE) return this.close();
        if (kind !== T_COMMA) return this.fail(parseErrorMessage('expected separator in list'));
        this.expect = EXPECT_VALUE;
        return;
      case EXPECT_OBJECT_NEXT:
        if (kind === T_RCURLY) return this.close();
        if (kind !== T_COMMA) return this.fail(parseErrorMessage('expected separator in dict'));
        this.open[this.open.length - 1]!.inKey = true;
        this.expect = EXPECT_VALUE;
        return;
      default:
        // The streamer ends a message where its value ends, so a token after
        // a complete value cannot arrive.
        return;
    }
    switch (kind) {
      case T_LCURLY:
        this.open.push({ container: {}, isArray: false, inKey: true, key: '' });
        this.expect = EXPECT_KEY_OR_CLOSE;
        return;
      case T_LSQUARE:
        this.open.push({ container: [], isArray: true, inKey: false, key: '' });
        this.expect = EXPECT_VALUE_OR_CLOSE;
        return;
      case T_INTEGER:
      case T_FLOAT:
      case T_STRING:
      case T_KEYWORD:
        if (value instanceof RefusedToken) return this.fail(value.message);
        return this.complete(value);
      default:
        return this.fail(parseErrorMessage('expecting value'));
    }
  }

  /** The message ended: its value, or the error to report. */
  finish(): { value: unknown } | { error: string } {
    if (this.failure !== undefined) return { error: this.failure };
    if (this.expect !== EXPECT_NOTHING) return { error: parseErrorMessage('premature EOI') };
    return { value: this.value };
  }

  private fail(message: string): void {
    this.failure = message;
    this.open.length = 0; // let the partial value go
    this.value = undefined;
  }

  private close(): void {
    this.complete(this.open.pop()!.container);
  }

  private complete(value: unknown): void {
    const top = this.open[this.open.length - 1];
    if (top === undefined) {
      this.value = value;
      this.expect = EXPECT_NOTHING;
    } else if (top.isArray) {
      (top.container as unknown[]).push(value);
      this.expect = EXPECT_ARRAY_NEXT;
    } else if (top.inKey) {
      if (typeof value !== 'string') return this.fail(parseErrorMessage('key is not a string in object'));
      top.inKey = false;
      top.key = value;
      this.expect = EXPECT_COLON;
    } else {
      const obj = top.container as Record<string, unknown>;
      if (hasOwn.call(obj, top.key)) return this.fail(parseErrorMessage('duplicate key'));
      if (top.key === '__proto__') {
        Object.defineProperty(obj, top.key, { value, writable: true, enumerable: true, configurable: true });
      } else {
        obj[top.key] = value;
      }
      this.expect = EXPECT_OBJECT_NEXT;
    }
  }
}

// ---------------------------------------------------------------------------
// Fast path for the common case
// ---------------------------------------------------------------------------

/** Bytes the fast path accepts outside strings (besides brackets, quotes and numbers). */
const FAST_OUTSIDE = (() => {
  const t = new Uint8Array(256);
  for (const ch of [CH_SPACE, CH_TAB, CH_CR, CH_LF, CH_COMMA]) t[ch] = 1;
  t.fill(1, CH_A, CH_Z + 1); // keywords: JSON.parse accepts exactly the reference's three
  return t;
})();

/** Escapes that JSON.parse and the reference read alike (not \u, not \'). */
const FAST_ESCAPE = (() => {
  const t = new Uint8Array(256);
  for (const ch of [CH_DQUOTE, CH_BACKSLASH, CH_SLASH, CH_B, CH_F, CH_N, CH_R, CH_T]) t[ch] = 1;
  return t;
})();

/** Deeper objects go to the state machine, which needs no recursion. */
const FAST_PATH_MAX_DEPTH = 64;

function countMembers(value: unknown): number {
  if (typeof value !== 'object' || value === null) return 0;
  let n = 0;
  if (Array.isArray(value)) {
    for (const item of value) n += countMembers(item);
    return n;
  }
  const keys = Object.keys(value);
  n = keys.length;
  for (const key of keys) n += countMembers((value as Record<string, unknown>)[key]);
  return n;
}

/**
 * Finds a whole object at start made only of bytes on which JSON.parse and
 * the reference agree: printable ASCII strings with simple escapes, short
 * integers, keywords, little nesting. Returns its end and member count, or
 * −1 when unsure (the state machine then does the work).
 */
let fastMembers = 0;
function scanSimpleObject(buf: Buffer, start: number, maxDepth: number): number {
  const n = buf.length;
  let depth = 0;
  let members = 0;
  let i = start;
  while (i < n) {
    const byte = buf[i]!;
    if (byte === CH_LCURLY || byte === CH_LSQUARE) {
      if (++depth > maxDepth) return -1;
      i++;
    } else if (byte === CH_RCURLY || byte === CH_RSQUARE) {
      i++;
      if (--depth === 0) {
        fastMembers = members;
        return i;
      }
    } else if (byte === CH_DQUOTE) {
      for (i++; ; i++) {
        if (i >= n) return -1;
        const ch = buf[i]!;
        if (ch === CH_DQUOTE) break;
        if (ch === CH_BACKSLASH) {
          if (i + 1 >= n || !FAST_ESCAPE[buf[i + 1]!]) return -1;
          i++;
        } else if (ch < 0x20 || ch >= 0x80) {
          return -1;
        }
      }
      i++;
    } else if (byte === CH_COLON) {
      members++;
      i++;
    } else if (byte === CH_MINUS || (byte >= CH_0 && byte <= CH_9)) {
      // Plain integers short enough to be exact, and not -0 (a float to JSON.parse).
      const numberStart = i;
      if (byte === CH_MINUS) i++;
      const digitsStart = i;
      while (i < n && buf[i]! >= CH_0 && buf[i]! <= CH_9) i++;
      const digits = i - digitsStart;
      if (digits === 0 || i - numberStart > SAFE_INTEGER_TEXT_LENGTH) return -1;
      if (buf[digitsStart] === CH_0 && (digits > 1 || numberStart !== digitsStart)) return -1;
      if (i >= n) return -1;
      const after = buf[i]!;
      if (after === CH_DOT || after === CH_E || after === CH_UPPER_E) return -1;
    } else if (FAST_OUTSIDE[byte]) {
      i++;
    } else {
      return -1;
    }
  }
  return -1;
}

// ---------------------------------------------------------------------------
// The reader
// ---------------------------------------------------------------------------

const NO_BYTES = Buffer.alloc(0);
/** A carry buffer up to this size is kept for the next split token. */
const CARRY_KEPT_BYTES = 64 * 1024;

export class JsonStreamReader {
  private readonly onEvent: (ev: JsonReaderEvent) => void;
  private readonly limits: JsonReaderLimits;

  // Lexer.
  private state = S_START;
  /** Bytes of the token in progress that came in earlier chunks. */
  private carry: Buffer = NO_BYTES;
  private carryLength = 0;

  // Streamer: the message in progress.
  private braces = 0;
  private brackets = 0;
  private tokenCount = 0;
  private tokenBytes = 0;
  private readonly parser = new MessageParser();

  /**
   * onEvent is called synchronously from push(), once per message or error,
   * in stream order. It must not call push() or end() itself, and must not
   * throw: an exception leaves the reader in an undefined state.
   */
  constructor(onEvent: (ev: JsonReaderEvent) => void, limits?: Partial<JsonReaderLimits>) {
    this.onEvent = onEvent;
    this.limits = { ...DEFAULT_JSON_READER_LIMITS, ...limits };
  }

  /** Feeds bytes as they arrive; the chunk is not kept after the call. */
  push(chunk: Uint8Array): void {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const n = buf.length;
    const maxTokenBytes = this.limits.maxMessageBytes;
    let state = this.state;
    /** Start of the in-chunk part of the token in progress. */
    let tokenStart = 0;
    let i = 0;
    while (i < n) {
      if (state === S_START) {
        const byte = buf[i]!;
        if (byte === CH_SPACE || byte === CH_LF || byte === CH_CR || byte === CH_TAB) {
          i++;
          continue;
        }
        if (byte === CH_LCURLY && this.tokenCount === 0) {
          const end = this.tryWholeObject(buf, i);
          if (end > 0) {
            i = end;
            continue;
          }
        }
        tokenStart = i;
      } else if (state === S_DQ_STRING || state === S_SQ_STRING) {
        // Skip the plain run of a string in one go, stopping where the
        // token would outgrow the limit so that check stays exact.
        const run = STRING_RUN_BYTE[state]!;
        const stop = Math.min(n, maxTokenBytes - this.carryLength + tokenStart);
        let j = i;
        while (j < stop && run[buf[j]!]) j++;
        if (j > i) {
          i = j;
          continue;
        }
      }

      // One byte through the table; a lookahead action sees it again.
      for (;;) {
        const action = LEX_TABLE[(state << 8) | buf[i]!]!;
        const consumed = (action & LOOKAHEAD) === 0;
        const next = action & ~LOOKAHEAD;
        const tokenEnd = consumed ? i + 1 : i;
        if (next < STATE_COUNT) {
          state = next;
          if (next <= S_RECOVERY) tokenStart = tokenEnd; // no token text kept
        } else {
          const length = this.carryLength + tokenEnd - tokenStart;
          let src = buf;
          let start = tokenStart;
          let end = tokenEnd;
          if (this.carryLength > 0) {
            this.appendCarry(buf, tokenStart, tokenEnd);
            src = this.carry;
            start = 0;
            end = this.carryLength;
          }
          tokenStart = tokenEnd;
          if (next === A_ERROR) {
            state = S_RECOVERY;
            this.fail(`${PARSE_ERROR_PREFIX}stray '${bytesForMessage(src, start, end)}'`);
          } else {
            state = S_START;
            this.onToken(next, length, src, start, end);
          }
          this.releaseCarry();
        }
        if (consumed) break;
      }
      i++;

      // A single token may not outgrow the limit either; the reference then
      // reports the size error and lexes what follows from scratch.
      if (state > S_RECOVERY && this.carryLength + i - tokenStart > maxTokenBytes) {
        state = S_START;
        tokenStart = i;
        this.releaseCarry();
        this.fail(JSON_TOKEN_SIZE_LIMIT_EXCEEDED);
      }
    }

    if (state > S_RECOVERY) this.appendCarry(buf, tokenStart, n);
    this.state = state;
  }

  /** The connection closed: partial input is dropped without an event. */
  end(): void {
    this.state = S_START;
    this.carryLength = 0;
    this.carry = NO_BYTES;
    this.resetMessage();
  }

  private appendCarry(buf: Buffer, start: number, end: number): void {
    const need = this.carryLength + end - start;
    if (need > this.carry.length) {
      const size = Math.max(need, Math.min(2 * this.carry.length, this.limits.maxMessageBytes + 1), 256);
      const grown = Buffer.allocUnsafe(size);
      this.carry.copy(grown, 0, 0, this.carryLength);
      this.carry = grown;
    }
    buf.copy(this.carry, this.carryLength, start, end);
    this.carryLength = need;
  }

  /** Forgets the token text carried over; a large buffer is not kept. */
  private releaseCarry(): void {
    this.carryLength = 0;
    if (this.carry.length > CARRY_KEPT_BYTES) this.carry = NO_BYTES;
  }

  /** The streamer: one token of kind, length bytes, text in src[start, end). */
  private onToken(kind: number, length: number, src: Buffer, start: number, end: number): void {
    switch (kind) {
      case T_LCURLY: this.braces++; break;
      case T_RCURLY: this.braces--; break;
      case T_LSQUARE: this.brackets++; break;
      case T_RSQUARE: this.brackets--; break;
      default: break;
    }
    // The reference's checks, in its order; each drops the whole message.
    if (this.tokenBytes + length + 1 > this.limits.maxMessageBytes) return this.fail(JSON_TOKEN_SIZE_LIMIT_EXCEEDED);
    if (this.tokenCount + 1 > this.limits.maxTokens) return this.fail(JSON_TOKEN_COUNT_LIMIT_EXCEEDED);
    if (this.braces + this.brackets > this.limits.maxDepth) return this.fail(JSON_NESTING_DEPTH_LIMIT_EXCEEDED);
    this.tokenCount++;
    this.tokenBytes += length;

    const parser = this.parser;
    if (parser.failure === undefined) {
      let value: unknown;
      if (kind === T_STRING) value = decodeString(src, start, end);
      else if (kind === T_INTEGER) value = decodeInteger(src, start, end);
      else if (kind === T_FLOAT) value = Number(src.toString('latin1', start, end));
      else if (kind === T_KEYWORD) value = decodeKeyword(src, start, end);
      parser.feed(kind, value);
    }

    // The message ends when braces and brackets are all closed, or when
    // either count goes negative (a stray closer is a message of its own).
    if ((this.braces > 0 || this.brackets > 0) && this.braces >= 0 && this.brackets >= 0) return;
    const outcome = parser.finish();
    this.resetMessage();
    this.onEvent('error' in outcome ? { kind: 'error', message: outcome.error } : { kind: 'value', value: outcome.value });
  }

  /** The one failure path: drop the message in progress and report. */
  private fail(message: string): void {
    this.resetMessage();
    this.onEvent({ kind: 'error', message });
  }

  private resetMessage(): void {
    this.braces = 0;
    this.brackets = 0;
    this.tokenCount = 0;
    this.tokenBytes = 0;
    this.parser.reset();
  }

  /**
   * Fast path: a whole simple object in this chunk goes to JSON.parse.
   * Returns the index after the object, or −1 to let the state machine do
   * the work (on any doubt, including anything JSON.parse refuses).
   */
  private tryWholeObject(buf: Buffer, start: number): number {
    const end = scanSimpleObject(buf, start, Math.min(this.limits.maxDepth, FAST_PATH_MAX_DEPTH));
    if (end < 0) return -1;
    // Fewer tokens than bytes: within both limits, the reference's checks pass.
    const length = end - start;
    if (length >= this.limits.maxMessageBytes || length > this.limits.maxTokens) return -1;
    const members = fastMembers;
    let value: unknown;
    try {
      value = JSON.parse(buf.toString('latin1', start, end));
    } catch {
      return -1;
    }
    // JSON.parse keeps the last of duplicate keys; the reference refuses them.
    if (countMembers(value) !== members) return -1;
    this.onEvent({ kind: 'value', value });
    return end;
  }
}
