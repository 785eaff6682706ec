/**
 * What the hardening suites (unread-output, unfinished-packets, login-flood) share: a logger whose
 * lines a test can wait for, and the bytes a broker in this process holds, counted after a full GC.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { LogFields, Logger } from '../../src/logger.js';

/** A logger that keeps its lines (`warn message`), and tells a test when one matching a pattern arrives. */
export class LogLines implements Logger {
  readonly lines: string[] = [];
  readonly fields: Array<LogFields | undefined> = [];
  #waiters: Array<{ pattern: RegExp; resolve: (line: string) => void }> = [];

  info = (message: string, fields?: LogFields) => this.#add(`info ${message}`, fields);
  warn = (message: string, fields?: LogFields) => this.#add(`warn ${message}`, fields);
  error = (message: string, fields?: LogFields) => this.#add(`error ${message}`, fields);

  matching(pattern: RegExp): string[] {
    return this.lines.filter((line) => pattern.test(line));
  }

  /** The first line matching `pattern`, logged already or from now on. */
  waitFor(pattern: RegExp): Promise<string> {
    const line = this.lines.find((candidate) => pattern.test(candidate));
    if (line !== undefined) return Promise.resolve(line);
    return new Promise((resolve) => this.#waiters.push({ pattern, resolve }));
  }

  #add(line: string, fields: LogFields | undefined): void {
    this.lines.push(line);
    this.fields.push(fields);
    this.#waiters = this.#waiters.filter(({ pattern, resolve }) => {
      if (!pattern.test(line)) return true;
      resolve(line);
      return false;
    });
  }
}

setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

/**
 * Bytes of Buffers alive in this process after a full garbage collection: what the broker running
 * in it holds in packets and socket buffers (the test's own Buffers are part of it too).
 */
export function liveBufferBytes(): number {
  collectGarbage();
  collectGarbage();
  return process.memoryUsage().arrayBuffers;
}

export const MiB = 1024 * 1024;
