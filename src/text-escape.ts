/**
 * Text a client chose (client ids, topics, filters, user names, payloads) made safe to print on an
 * operator's terminal or in a log line. Escaped, as JSON escapes them: control characters (C0,
 * newline and tab included, which would forge lines and columns; DEL; C1, where U+009B is CSI to a
 * terminal that takes 8-bit controls), invisible format characters (the bidirectional overrides
 * that reorder what is shown, zero-width characters), the line and paragraph separators, and lone
 * surrogates (half a character, shown as U+FFFD, hiding what the text holds).
 */

const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu;
const UNSAFE_OR_BACKSLASH = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\\]/gu;
const UNSAFE_BACKSLASH_OR_QUOTE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\\"]/gu;

/** The short escapes JSON.stringify uses; every other character is written \uXXXX, as it does. */
const SHORT: Readonly<Record<string, string>> = { '\b': '\\b', '\t': '\\t', '\n': '\\n', '\f': '\\f', '\r': '\\r', '\\': '\\\\', '"': '\\"' };

/** One character (one or two UTF-16 units) as JSON escapes. */
function escapeChar(char: string): string {
  const short = SHORT[char];
  if (short !== undefined) return short;
  let escaped = '';
  for (let index = 0; index < char.length; index++) escaped += `\\u${char.charCodeAt(index).toString(16).padStart(4, '0')}`;
  return escaped;
}

/**
 * A string value for human output, in double quotes: what JSON.stringify gives (so it parses back
 * to exactly `text`), with the characters above escaped too.
 */
export function quoted(text: string): string {
  return `"${text.replace(UNSAFE_BACKSLASH_OR_QUOTE, escapeChar)}"`;
}

/**
 * A string value for a table cell, without quotes: the characters above and the backslash escaped,
 * so the cell reads back to exactly one text (`a\\nb` is the four characters a, \, n, b).
 */
export function printable(text: string): string {
  return text.replace(UNSAFE_OR_BACKSLASH, escapeChar);
}

/**
 * A whole line whose values are already quoted (an error message, a log line): only the characters
 * above escaped, which a value quoted by JSON.stringify may still hold (it leaves DEL and C1 as
 * they are).
 */
export function escapeControls(line: string): string {
  return line.replace(UNSAFE, escapeChar);
}
