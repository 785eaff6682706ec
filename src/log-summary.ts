/**
 * Log lines that a client can repeat at will (a refused CONNECT per attempt, a store error per
 * reconnect while the disk is full) summarized per cause: the first occurrence is logged at once,
 * the next ones of the same interval are only counted, and when the interval ends one line says
 * how many more there were, from how many addresses, and shows the last of them. A cause that
 * stays quiet for a whole interval starts over: its next occurrence is logged at once again.
 *
 *     warn connection 10.0.0.7:50210: CONNECT refused: user name or password not accepted for "bob"
 *     warn CONNECT refused (0x04 bad user name or password): 5127 more in the last 60 s, from 1 address; the last: connection 10.0.0.7:…
 */
import type { LogFields, Logger } from './logger.js';

export interface Occurrence {
  message: string;
  fields?: LogFields;
  /** Where it came from (a client's IP address): the summary says from how many it came. */
  source?: string | undefined;
}

export interface LogSummaryOptions {
  /** Length of an interval (default one minute). */
  intervalMs?: number;
}

const DEFAULT_INTERVAL_MS = 60_000;
/** Distinct sources counted per interval: beyond it the summary says "at least". */
const MAX_SOURCES = 1000;

type Level = 'warn' | 'error';

interface Interval {
  level: Level;
  startedAt: number;
  /** Occurrences since the one logged at once, or since the last summary. */
  count: number;
  sources: Set<string>;
  last: Occurrence;
  timer: NodeJS.Timeout;
}

export class LogSummary {
  readonly #log: Logger;
  readonly #intervalMs: number;
  /** By cause; a cause leaves once an interval passes without it. */
  readonly #intervals = new Map<string, Interval>();

  constructor(log: Logger, options: LogSummaryOptions = {}) {
    this.#log = log;
    this.#intervalMs = options.intervalMs ?? DEFAULT_INTERVAL_MS;
  }

  /**
   * `cause` is a fixed text chosen by the code, never client data: it names the line's kind in the
   * summary, and each one is kept until it has been quiet for an interval.
   */
  warn(cause: string, occurrence: Occurrence): void {
    this.#note('warn', cause, occurrence);
  }

  error(cause: string, occurrence: Occurrence): void {
    this.#note('error', cause, occurrence);
  }

  /** Logs the count of every cause's interval so far, now (the broker stops: nothing goes unsaid). */
  flush(): void {
    for (const [cause, interval] of this.#intervals) {
      clearTimeout(interval.timer);
      if (interval.count > 0) this.#summarize(cause, interval);
    }
    this.#intervals.clear();
  }

  #note(level: Level, cause: string, occurrence: Occurrence): void {
    const interval = this.#intervals.get(cause);
    if (interval) {
      interval.count++;
      interval.last = occurrence;
      if (occurrence.source !== undefined && interval.sources.size < MAX_SOURCES) interval.sources.add(occurrence.source);
      return;
    }
    this.#log[level](occurrence.message, occurrence.fields);
    const timer = setTimeout(() => this.#endInterval(cause), this.#intervalMs);
    timer.unref();
    this.#intervals.set(cause, { level, startedAt: Date.now(), count: 0, sources: new Set(), last: occurrence, timer });
  }

  #endInterval(cause: string): void {
    const interval = this.#intervals.get(cause);
    if (!interval) return;
    if (interval.count === 0) {
      this.#intervals.delete(cause);
      return;
    }
    this.#summarize(cause, interval);
    interval.count = 0;
    interval.sources.clear();
    interval.startedAt = Date.now();
    interval.timer.refresh();
  }

  #summarize(cause: string, { level, startedAt, count, sources, last }: Interval): void {
    const seconds = Math.max(1, Math.round((Date.now() - startedAt) / 1000));
    const from = sources.size === 0 ? '' : `, from ${sources.size >= MAX_SOURCES ? 'at least ' : ''}${sources.size} address${sources.size === 1 ? '' : 'es'}`;
    this.#log[level](`${cause}: ${count} more in the last ${seconds} s${from}; the last: ${last.message}`, {
      ...last.fields,
      repeated: count,
      ...(sources.size > 0 ? { addresses: sources.size } : {}),
    });
  }
}

/**
 * One summary per log: every layer that writes to the same log shares its causes (a store error is
 * one cause whether the connection or the session flow saw it), without a second object threaded
 * through every constructor beside the logger.
 */
const summaries = new WeakMap<Logger, LogSummary>();

export function summaryOf(log: Logger): LogSummary {
  let summary = summaries.get(log);
  if (!summary) {
    summary = new LogSummary(log);
    summaries.set(log, summary);
  }
  return summary;
}

/**
 * The causes of the lines any client can repeat at will, in one place: a cause names a kind of
 * line, whichever layer writes it (the connection and the session flow both report store failures).
 */
export const LogCauses = {
  STORE_FAILURE: 'store failure, client disconnected',
  MALFORMED: 'malformed packet, connection closed',
  PROTOCOL_VIOLATION: 'protocol violation, connection closed',
  HANDLER_FAILED: 'error handling a packet, connection closed',
  NOT_READING: 'client not reading',
  WILL_REFUSED: 'will message refused by the ACL',
  UNFINISHED_OVER_BUDGET: 'unfinished packets over max_unfinished_packet_bytes, connection closed',
  PACKET_TIMEOUT: 'packet not complete within packet_timeout_ms, connection closed',
} as const;

/** CONNACK return codes (MQTT 3.1.1 table 3.1): a refused CONNECT is summarized by its code. */
const REFUSAL_CAUSES: Readonly<Record<number, string>> = {
  1: 'CONNECT refused (0x01 unacceptable protocol version)',
  2: 'CONNECT refused (0x02 identifier rejected)',
  3: 'CONNECT refused (0x03 server unavailable)',
  4: 'CONNECT refused (0x04 bad user name or password)',
  5: 'CONNECT refused (0x05 not authorized)',
};

export function refusalCause(returnCode: number): string {
  return REFUSAL_CAUSES[returnCode] ?? `CONNECT refused (return code ${returnCode})`;
}
