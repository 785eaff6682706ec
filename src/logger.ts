/**
 * The broker's one logging seam: the CLI prints lines, tests and embedders pass their own or none.
 *
 * A call gives a message and, when it is about someone, structured fields:
 *
 *     log.info(`client ${JSON.stringify(clientId)} connected`, { clientId, address, protocolVersion: 4 });
 *
 * The text format prints the fields after the message as `key=value`, the JSON format as keys of
 * the line's object. Use the same field names everywhere, so that a log shipper can filter on
 * them: `clientId`, `address`, `protocolVersion`, `user`, `listener`, `reason`.
 *
 * `debug` is there only when debug lines are wanted. Call it as `log.debug?.(…)`: with debug off the
 * call, its template string and its field object are never evaluated, so debug lines cost nothing.
 */

import { escapeControls, quoted } from './text-escape.js';
export interface Logger {
  debug?(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

/** Context of one line. A field that is undefined is left out (an anonymous client has no `user`). */
export type LogFields = Readonly<Record<string, string | number | boolean | undefined>>;

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const LOG_FORMATS = ['text', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface ConsoleLoggerOptions {
  /** The least severe level printed (default `info`). */
  level?: LogLevel;
  /** `text`: `<time> <level> <message> key=value…`; `json`: one object per line (default `text`). */
  format?: LogFormat;
  /**
   * The streams that go to journald (see `JOURNAL_STREAM` in systemd.exec(5)): their lines start
   * with the level's syslog priority (`<4>` for warn), which journald takes off and files the line
   * under, so that `journalctl -p warning` finds warnings and errors.
   */
  journal?: { stdout: boolean; stderr: boolean };
}

/** syslog priorities (RFC 5424): what journald reads from a `<N>` at the start of a line. */
const PRIORITY: Record<LogLevel, number> = { debug: 7, info: 6, warn: 4, error: 3 };

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

/**
 * Lines on stdout (debug, info) and stderr (warn, error). Written through `console`, which ignores
 * a closed pipe (`broker | head`) instead of failing the broker over its log.
 */
export function consoleLogger(options: ConsoleLoggerOptions = {}): Logger {
  const threshold = LOG_LEVELS.indexOf(options.level ?? 'info');
  const render = options.format === 'json' ? jsonLine : textLine;
  const printer = (level: LogLevel): ((message: string, fields?: LogFields) => void) => {
    if (LOG_LEVELS.indexOf(level) < threshold) return () => {};
    const toStderr = level === 'warn' || level === 'error';
    const prefix = options.journal?.[toStderr ? 'stderr' : 'stdout'] ? `<${PRIORITY[level]}>` : '';
    if (toStderr) return (message, fields) => console.error(prefix + render(new Date(), level, message, fields));
    return (message, fields) => console.log(prefix + render(new Date(), level, message, fields));
  };
  const log: Logger = { info: printer('info'), warn: printer('warn'), error: printer('error') };
  if (threshold === 0) log.debug = printer('debug');
  return log;
}

/** `2026-12-03T10:00:00.000Z info client "s-1" connected clientId=s-1 address=10.0.0.5:50210` */
export function textLine(time: Date, level: LogLevel, message: string, fields?: LogFields): string {
  // Messages quote client-chosen strings with JSON.stringify, which leaves DEL, C1 and format
  // characters raw: escaped here, so nothing a client sends can drive the operator's terminal.
  let line = `${time.toISOString()} ${level} ${escapeControls(message)}`;
  if (fields) {
    for (const [key, value] of Object.entries(fields)) {
      if (value !== undefined) line += ` ${key}=${textValue(value)}`;
    }
  }
  return line;
}

/**
 * `{"time":"…","level":"info","message":"…","clientId":"s-1",…}`: time, level and message come
 * first and are kept; a field of the same name cannot replace them.
 */
export function jsonLine(time: Date, level: LogLevel, message: string, fields?: LogFields): string {
  const entry: Record<string, string | number | boolean> = { time: time.toISOString(), level, message };
  if (fields) {
    for (const [key, value] of Object.entries(fields)) {
      if (value !== undefined && !(key in entry)) entry[key] = value;
    }
  }
  return JSON.stringify(entry);
}

/**
 * Bare when it cannot be misread (`s-1`, `10.0.0.5:50210`, `[::1]:1883`, `4`, `true`), else quoted
 * and escaped as a JSON string: a client id or user name with a space, a quote, `=` or a newline
 * in it stays one readable field on one line.
 */
function textValue(value: string | number | boolean): string {
  if (typeof value !== 'string') return String(value);
  return /^[\w.:/@+\-[\]]+$/.test(value) ? value : quoted(value);
}
