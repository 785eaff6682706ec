/**
 * The log summarizer on its own, with vitest's fake clock: which lines go out at once, which are
 * counted, and what the summary line of an interval says. (test/e2e/login-flood.test.ts shows it
 * under a real flood of refused CONNECTs.)
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LogSummary } from '../src/log-summary.js';
import type { LogFields, Logger } from '../src/logger.js';

interface Line {
  level: string;
  message: string;
  fields: LogFields | undefined;
}

function recorder(): Logger & { lines: Line[] } {
  const lines: Line[] = [];
  const record = (level: string) => (message: string, fields?: LogFields) => void lines.push({ level, message, fields });
  return { lines, info: record('info'), warn: record('warn'), error: record('error') };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('LogSummary', () => {
  it('logs the first occurrence of a cause at once, then one line per interval with the count, the addresses and the last example', () => {
    const log = recorder();
    const summary = new LogSummary(log, { intervalMs: 60_000 });
    const refused = (n: number, source: string) =>
      summary.warn('CONNECT refused (0x04 bad user name or password)', {
        message: `connection ${source}:${n}: CONNECT refused`,
        fields: { address: `${source}:${n}` },
        source,
      });

    refused(1, '10.0.0.1');
    expect(log.lines).toEqual([{ level: 'warn', message: 'connection 10.0.0.1:1: CONNECT refused', fields: { address: '10.0.0.1:1' } }]);
    for (let n = 2; n <= 1000; n++) refused(n, n % 10 === 0 ? '10.0.0.2' : '10.0.0.1');
    expect(log.lines).toHaveLength(1);

    vi.advanceTimersByTime(60_000);
    expect(log.lines).toHaveLength(2);
    expect(log.lines[1]).toEqual({
      level: 'warn',
      message:
        'CONNECT refused (0x04 bad user name or password): 999 more in the last 60 s, from 2 addresses; the last: connection 10.0.0.2:1000: CONNECT refused',
      fields: { address: '10.0.0.2:1000', repeated: 999, addresses: 2 },
    });

    // Still going in the next interval: counted again, and summarized at its end.
    refused(1001, '10.0.0.1');
    expect(log.lines).toHaveLength(2);
    vi.advanceTimersByTime(60_000);
    expect(log.lines.map((line) => line.message)).toEqual([
      'connection 10.0.0.1:1: CONNECT refused',
      expect.stringContaining(': 999 more in the last 60 s'),
      'CONNECT refused (0x04 bad user name or password): 1 more in the last 60 s, from 1 address; the last: connection 10.0.0.1:1001: CONNECT refused',
    ]);

    // A quiet interval ends the episode: nothing is said for it, and the next occurrence is logged at once.
    vi.advanceTimersByTime(60_000);
    expect(log.lines).toHaveLength(3);
    vi.advanceTimersByTime(600_000);
    refused(2000, '10.0.0.3');
    expect(log.lines).toHaveLength(4);
    expect(log.lines[3]!.message).toBe('connection 10.0.0.3:2000: CONNECT refused');
  });

  it('keeps causes apart, each at its own level; an occurrence without a source leaves the addresses out', () => {
    const log = recorder();
    const summary = new LogSummary(log, { intervalMs: 1000 });
    for (let n = 0; n < 3; n++) {
      summary.error('store failure', { message: `client "c${n}": disk full`, fields: { clientId: `c${n}` } });
      summary.warn('malformed packet', { message: `connection ${n}: malformed`, source: '10.0.0.9' });
    }
    expect(log.lines.map((line) => `${line.level} ${line.message}`)).toEqual(['error client "c0": disk full', 'warn connection 0: malformed']);
    vi.advanceTimersByTime(1000);
    expect(log.lines.slice(2).map((line) => `${line.level} ${line.message}`)).toEqual([
      'error store failure: 2 more in the last 1 s; the last: client "c2": disk full',
      'warn malformed packet: 2 more in the last 1 s, from 1 address; the last: connection 2: malformed',
    ]);
    expect(log.lines[2]!.fields).toEqual({ clientId: 'c2', repeated: 2 });
  });

  it('flush says at once what was counted and not said yet, for the part of the interval that passed', () => {
    const log = recorder();
    const summary = new LogSummary(log, { intervalMs: 60_000 });
    summary.warn('refused', { message: 'first', source: 'a' });
    summary.warn('refused', { message: 'second', source: 'b' });
    summary.warn('quiet', { message: 'only one' });
    vi.advanceTimersByTime(12_000);
    summary.flush();
    expect(log.lines.map((line) => line.message)).toEqual(['first', 'only one', 'refused: 1 more in the last 12 s, from 1 address; the last: second']);
    // Nothing is left to say, and no timer is left behind to say it.
    vi.advanceTimersByTime(120_000);
    expect(log.lines).toHaveLength(3);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('counts at most 1000 distinct addresses an interval, and says "at least" beyond', () => {
    const log = recorder();
    const summary = new LogSummary(log, { intervalMs: 1000 });
    for (let n = 0; n <= 1500; n++) summary.warn('refused', { message: `from ${n}`, source: `10.0.${n >> 8}.${n & 255}` });
    vi.advanceTimersByTime(1000);
    expect(log.lines[1]!.message).toBe('refused: 1500 more in the last 1 s, from at least 1000 addresses; the last: from 1500');
  });
});
