import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';

/**
 * Every process the runner starts is tracked here by PID, so that it is killed whatever way the
 * runner ends: normal exit, an exception, SIGINT or SIGTERM. Temporary directories likewise.
 */
const live = new Map<number, ChildProcess>();
const tempDirs = new Set<string>();

export function track(child: ChildProcess): void {
  const pid = child.pid;
  if (pid === undefined) return;
  live.set(pid, child);
  child.once('exit', () => live.delete(pid));
}

export function trackDir(dir: string): void {
  tempDirs.add(dir);
}

export function killAll(): void {
  for (const pid of live.keys()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}

export function removeTempDirs(): void {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

let installed = false;

export function installCleanup(keepTemp: () => boolean): void {
  if (installed) return;
  installed = true;
  process.on('exit', () => {
    killAll();
    if (!keepTemp()) removeTempDirs();
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      console.error(`\n${signal}: stopping every broker and load process`);
      process.exit(130);
    });
  }
}
