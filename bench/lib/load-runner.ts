import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { track } from './children.js';
import type { Job, LoadCommand, LoadEvent } from './jobs.js';

export interface LoadHandle<R> {
  pid: number;
  /** The job's result; rejects with the load process's error, a crash or the hard timeout. */
  result: Promise<R>;
  /** Tells the running load process something (e.g. the pid of a broker started after it). */
  send(command: LoadCommand): void;
  kill(): void;
}

/**
 * Starts `node bench/dist/load.js <job>` in its own process. `onEvent` sees every event line
 * (progress, waiting, connack) as it arrives. The process is killed after hardTimeoutMs.
 */
export function startLoad<R>(distDir: string, job: Job, hardTimeoutMs: number, onEvent: (event: LoadEvent) => void = () => {}): LoadHandle<R> {
  const child = spawn(process.execPath, [join(distDir, 'load.js'), JSON.stringify(job)], { stdio: ['pipe', 'pipe', 'pipe'] });
  track(child);
  // A load process that already exited cannot take a command; that is not the runner's error.
  child.stdin.on('error', () => {});
  const stderr: string[] = [];
  child.stderr.on('data', (chunk: Buffer) => {
    stderr.push(chunk.toString('utf8'));
    if (stderr.length > 20) stderr.shift();
  });
  let outcome: { result?: R; error?: string } = {};
  const lines = createInterface({ input: child.stdout });
  lines.on('line', (line) => {
    let event: LoadEvent;
    try {
      event = JSON.parse(line) as LoadEvent;
    } catch {
      stderr.push(line);
      return;
    }
    if (event.type === 'result') outcome = { result: event.result as R };
    else if (event.type === 'error') outcome = { error: event.message };
    else onEvent(event);
  });
  const timer = setTimeout(() => {
    outcome.error ??= `load process killed after ${Math.round(hardTimeoutMs / 1000)} s`;
    child.kill('SIGKILL');
  }, hardTimeoutMs);
  const result = new Promise<R>((resolve, reject) => {
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (outcome.result !== undefined) resolve(outcome.result);
      else {
        const detail = outcome.error ?? `load process ended (${signal ?? `code ${code}`}) without a result: ${stderr.join('').trim().slice(-500)}`;
        reject(new Error(detail));
      }
    });
  });
  result.catch(() => {});
  return {
    pid: child.pid ?? -1,
    result,
    send: (command) => {
      if (child.stdin.writable) child.stdin.write(`${JSON.stringify(command)}\n`);
    },
    kill: () => child.kill('SIGKILL'),
  };
}
