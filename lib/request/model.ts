/**
 * The `model` of a JSON request body, read without parsing the body: a scan
 * of the top-level object that skips every other value (messages, tools,
 * images) byte by byte, allocating nothing but the model string. It runs
 * only when the pool needs the model (some key cools for one model, or a
 * 429 is being marked), and at most once per request. The whole top-level
 * object is scanned, as a parser would read it: the last `"model"` counts.
 * The same scan reads the other top-level fields the walk needs (the
 * objects a request names).
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const MODEL = Buffer.from('model');
const ID = Buffer.from('id');

/**
 * The top-level `"model"` string of a JSON object body; undefined when there is none, when it is not a
 * string, or when the body is not such JSON. Read as the provider's JSON parser reads it: the last of
 * duplicated keys wins, and an escaped key name (`"mod\u0065l"`) is the name it decodes to.
 */
export function readModel(body: Buffer | null | undefined): string | undefined {
  if (!body || body.length === 0) return undefined;
  const at = fieldValue(body, 0, MODEL);
  return at >= 0 && body[at] === QUOTE ? readString(body, at) : undefined;
}

/**
 * A top-level field of a JSON object body (`name` as bytes): its string value, the `"id"` string of an
 * object value (OpenAI's `conversation: { id }`), or for a literal (`true`, `false`, `null`, a number)
 * its text. Undefined when there is none or the body is not such JSON. Read as readModel reads, the last one counting.
 */
export function readField(body: Buffer | null | undefined, name: Buffer): string | undefined {
  if (!body || body.length === 0) return undefined;
  const at = fieldValue(body, 0, name);
  if (at < 0) return undefined;
  if (body[at] === QUOTE) return readString(body, at);
  if (body[at] === OPEN_BRACE) {
    const id = fieldValue(body, at, ID);
    return id >= 0 && body[id] === QUOTE ? readString(body, id) : undefined;
  }
  if (body[at] === OPEN_BRACKET) return undefined;
  const end = skipValue(body, at);
  return end > at ? body.toString('latin1', at, end) : undefined;
}

/**
 * Index of the value of field `name` in the object that opens at `start` (the last one, when the name is
 * there more than once), or -1 when it is not there or the object is not JSON up to its closing brace.
 */
function fieldValue(body: Buffer, start: number, name: Buffer): number {
  let i = skipSpace(body, start);
  if (body[i] !== OPEN_BRACE) return -1;
  i = skipSpace(body, i + 1);
  if (body[i] === CLOSE_BRACE) return -1;
  let found = -1;
  while (i < body.length && body[i] === QUOTE) {
    const keyEnd = stringEnd(body, i);
    if (keyEnd < 0) return -1;
    const named = isName(body, i, keyEnd, name);
    i = skipSpace(body, keyEnd + 1);
    if (body[i] !== COLON) return -1;
    i = skipSpace(body, i + 1);
    if (named) found = i;
    i = skipValue(body, i);
    if (i < 0) return -1;
    i = skipSpace(body, i);
    if (body[i] === CLOSE_BRACE) return found;
    if (body[i] !== COMMA) return -1; // not JSON
    i = skipSpace(body, i + 1);
  }
  return -1;
}

/** Whether the key string between the quotes at `start` and `end` is `name`, escapes decoded. */
function isName(body: Buffer, start: number, end: number, name: Buffer): boolean {
  const length = end - start - 1;
  if (length === name.length && body.compare(name, 0, name.length, start + 1, end) === 0) return true;
  // An escaped name is longer than the name it stands for (at most 6 bytes a character); a plain one of another length is another name.
  if (length <= name.length || length > name.length * 6) return false;
  const backslash = body.indexOf(BACKSLASH, start + 1);
  if (backslash < 0 || backslash >= end) return false;
  return readString(body, start) === name.toString('latin1');
}

function skipSpace(body: Buffer, i: number): number {
  while (i < body.length) {
    const c = body[i]!;
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
    i++;
  }
  return i;
}

/** Index of the closing quote of the string that opens at `start`, or -1. Native indexOf jumps over long text. */
function stringEnd(body: Buffer, start: number): number {
  for (let quote = body.indexOf(QUOTE, start + 1); quote !== -1; quote = body.indexOf(QUOTE, quote + 1)) {
    let backslashes = 0;
    while (body[quote - 1 - backslashes] === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return quote; // an escaped quote has an odd run of backslashes before it
  }
  return -1;
}

function readString(body: Buffer, start: number): string | undefined {
  const end = stringEnd(body, start);
  if (end < 0) return undefined;
  let escaped = false;
  for (let i = start + 1; i < end && !escaped; i++) escaped = body[i] === BACKSLASH;
  if (!escaped) return body.toString('utf8', start + 1, end);
  try {
    return JSON.parse(body.toString('utf8', start, end + 1)) as string; // escapes: let JSON decode them
  } catch {
    return undefined;
  }
}

/** Index just past the value that starts at `i` (a string, object, array, number or literal), or -1. */
function skipValue(body: Buffer, i: number): number {
  const first = body[i];
  if (first === QUOTE) {
    const end = stringEnd(body, i);
    return end < 0 ? -1 : end + 1;
  }
  if (first === OPEN_BRACE || first === OPEN_BRACKET) {
    let depth = 0;
    for (; i < body.length; i++) {
      const c = body[i]!;
      if (c === QUOTE) {
        i = stringEnd(body, i);
        if (i < 0) return -1;
      } else if (c === OPEN_BRACE || c === OPEN_BRACKET) depth++;
      else if ((c === CLOSE_BRACE || c === CLOSE_BRACKET) && --depth === 0) return i + 1;
    }
    return -1;
  }
  // A number, true, false or null: up to the next delimiter.
  while (i < body.length) {
    const c = body[i]!;
    if (c === COMMA || c === CLOSE_BRACE || c === CLOSE_BRACKET || c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) break;
    i++;
  }
  return i;
}
