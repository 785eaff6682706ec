import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readdir, lstat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';

export interface MemStatus {
  /** Resident set size now, bytes. */
  rss: number;
  /** Peak resident set size since the process started (VmHWM), bytes. */
  hwm: number;
}

/** A file under /proc, or undefined when it is gone (the process exited) or unreadable. */
function readProcFile(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** VmRSS and VmHWM of a live process from /proc/<pid>/status; undefined if it is gone. */
export function readMem(pid: number): MemStatus | undefined {
  const text = readProcFile(`/proc/${pid}/status`);
  if (text === undefined) return undefined;
  const kb = (field: string) => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
    return match ? Number(match[1]) * 1024 : NaN;
  };
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

export interface IoStatus {
  /** Bytes this process caused to be sent to the storage layer (/proc/<pid>/io write_bytes). */
  writeBytes: number;
  readBytes: number;
}

export function readIo(pid: number): IoStatus | undefined {
  const text = readProcFile(`/proc/${pid}/io`);
  if (text === undefined) return undefined;
  const field = (name: string) => {
    const match = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text);
    return match ? Number(match[1]) : NaN;
  };
  return { writeBytes: field('write_bytes'), readBytes: field('read_bytes') };
}

/** Sum of the sizes of all regular files under dir (recursively); 0 if it does not exist. */
export async function dirSize(dir: string): Promise<number> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return 0;
  }
  let total = 0;
  for (const name of entries) {
    const path = join(dir, name);
    try {
      const info = await lstat(path);
      if (info.isDirectory()) total += await dirSize(path);
      else if (info.isFile()) total += info.size;
    } catch {
      // a file removed while we walk (compaction): not counted
    }
  }
  return total;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Wall-clock milliseconds with sub-millisecond resolution, comparable between processes. */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

/** CPU time a process has used since it started (all its threads, living and ended). */
export interface CpuTimes {
  userMs: number;
  systemMs: number;
}

let clockTicksPerSecond: number | undefined;

/** utime and stime of a live process from /proc/<pid>/stat; undefined if it is gone. */
export function readCpu(pid: number): CpuTimes | undefined {
  const text = readProcFile(`/proc/${pid}/stat`);
  if (text === undefined) return undefined;
  // The command name (field 2) may contain spaces and parentheses: count fields after its ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  clockTicksPerSecond ??= clockTicks();
  const toMs = (ticks: string | undefined) => (Number(ticks) * 1000) / clockTicksPerSecond!;
  return { userMs: toMs(fields[11]), systemMs: toMs(fields[12]) };
}

/** CPU used between two readings, in ms (user + system). */
export function cpuSpentMs(before: CpuTimes | undefined, after: CpuTimes | undefined): number {
  if (!before || !after) return NaN;
  return after.userMs - before.userMs + after.systemMs - before.systemMs;
}

function clockTicks(): number {
  try {
    const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isFinite(value) && value > 0 ? value : 100;
  } catch {
    return 100;
  }
}

/** The whole machine's CPU time so far, all cores (from /proc/stat), in ms. */
export interface MachineCpu {
  /** user, nice, system, irq, softirq: work done by anyone. */
  busyMs: number;
  /** Time the hypervisor gave to someone else while we wanted it. */
  stealMs: number;
  cores: number;
}

export function readMachineCpu(): MachineCpu | undefined {
  const text = readProcFile('/proc/stat');
  if (text === undefined) return undefined;
  const lines = text.split('\n');
  const total = lines[0]?.split(/\s+/).slice(1).map(Number) ?? [];
  clockTicksPerSecond ??= clockTicks();
  const toMs = (ticks: number) => (ticks * 1000) / clockTicksPerSecond!;
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = total;
  return {
    busyMs: toMs(user + nice + system + irq + softirq),
    stealMs: toMs(steal),
    cores: lines.filter((line) => /^cpu\d+ /.test(line)).length,
  };
}
