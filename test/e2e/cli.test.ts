/**
 * The command line: bin/broker.js (→ dist/) as a child process. Start-up failures must exit
 * non-zero with a message an operator can act on; SIGTERM and SIGINT must shut down cleanly
 * (exit code 0, store closed).
 *
 * Runs to completion resolve on the child's 'close' event (not 'exit'), so that all of its output
 * has been read before the test looks at it.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { pack } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import type { BrokerProcess } from '../helpers/broker-process.js';
import { useBrokerProcesses } from '../helpers/process-harness.js';
import { RawClient } from '../helpers/raw-client.js';

const BROKER_BIN = fileURLToPath(new URL('../../bin/broker.js', import.meta.url));

const { onTeardown, freshDataDir, startBroker, connectRaw } = useBrokerProcesses('broker-cli-');

/** bin/broker.js as a child process, which teardown SIGKILLs should the test leave it running. */
function spawnBroker(args: string[]) {
  const child = spawn(process.execPath, [BROKER_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  onTeardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  });
  return child;
}

/** Runs bin/broker.js to completion; resolves once the process exited and its output is fully read. */
function run(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  const child = spawnBroker(args);
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal, output })));
}

/** Sends the signal and resolves once the broker exited and all of its output is read. */
async function signal(broker: BrokerProcess, name: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (broker.child.stdout?.closed && broker.child.stderr?.closed && broker.child.exitCode !== null) {
      resolve({ code: broker.child.exitCode, signal: broker.child.signalCode });
    } else {
      broker.child.once('close', (code, sig) => resolve({ code, signal: sig }));
    }
  });
  broker.child.kill(name);
  return closed;
}

async function createForeignStore(dataDir: string, entries: Array<[string, Uint8Array | string]>): Promise<string> {
  const location = join(dataDir, 'store');
  const db = new ClassicLevel<string, Uint8Array>(location, { keyEncoding: 'utf8', valueEncoding: 'view' });
  await db.open();
  for (const [key, value] of entries) await db.put(key, typeof value === 'string' ? Buffer.from(value) : value);
  await db.close();
  return location;
}

async function readStore(location: string): Promise<Array<[string, string]>> {
  const db = new ClassicLevel<string, string>(location, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
  await db.open();
  try {
    return await db.iterator().all();
  } finally {
    await db.close();
  }
}

describe('broker command line', () => {
  it('--help exits 0 and lists --host, --port and --data', async () => {
    const { code, output } = await run(['--help']);
    expect(code, output).toBe(0);
    for (const option of ['--host', '--port', '--data']) expect(output).toContain(option);
    expect(output).not.toMatch(/listening on/);
  });

  it.each(['--version', '-V'])('%s prints the package version, alone, and exits 0', async (flag) => {
    const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(version).toMatch(/^\d+\.\d+\.\d+/);
    const { code, output } = await run([flag]);
    expect(code, output).toBe(0);
    expect(output).toBe(`${version}\n`);
  });

  it('a second broker on a data directory in use exits non-zero saying the directory is in use; the first keeps serving', async () => {
    const dataDir = freshDataDir();
    const first = await startBroker(dataDir);

    const second = await run(['--host', '127.0.0.1', '--port', '0', '--data', dataDir]);
    expect(second.code, second.output).not.toBe(0);
    expect(second.code, second.output).not.toBeNull();
    expect(second.output).toMatch(/in use/i);
    expect(second.output).toContain(dataDir);
    expect(second.output).not.toMatch(/listening on/);

    const { client } = await connectRaw(first, 'still-served', false);
    await client.disconnect();
    expect(await signal(first, 'SIGTERM')).toEqual({ code: 0, signal: null });
  });

  it.each(['SIGTERM', 'SIGINT'] as const)('%s shuts down cleanly: exit code 0 and the output says the store was closed', async (name) => {
    const dataDir = freshDataDir();
    const broker = await startBroker(dataDir);
    // A connected persistent session and a subscription: shutdown has something to close.
    const { client } = await RawClient.session(broker.port, { clientId: `shutdown-${name}`, clean: false });
    onTeardown(() => client.socket.destroy());
    client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a/#', qos: 1 }] });
    await client.next('suback');

    const result = await signal(broker, name);
    expect(result, broker.output).toEqual({ code: 0, signal: null });
    expect(broker.output).toContain(name);
    expect(broker.output).toMatch(/store closed/i);
    await client.closed;

    // Closed means released: the next broker opens the same directory and serves it.
    const next = await startBroker(dataDir);
    const { client: again, connack } = await RawClient.session(next.port, { clientId: `shutdown-${name}`, clean: false });
    onTeardown(() => again.socket.destroy());
    expect(connack.sessionPresent).toBe(true);
    expect(await signal(next, 'SIGTERM')).toEqual({ code: 0, signal: null });
  });

  it('SIGTERM sent the moment the broker reports "listening on" still shuts down cleanly with exit code 0 (15 attempts)', async () => {
    // The readiness line is what supervisors (and BrokerProcess) wait for; from then on a SIGTERM
    // must get the clean shutdown, not the default signal action. Repeated: the window is short.
    const dataDir = freshDataDir();
    const failures: Array<{ attempt: number; code: number | null; signal: NodeJS.Signals | null }> = [];
    for (let attempt = 1; attempt <= 15; attempt++) {
      const child = spawnBroker(['--host', '127.0.0.1', '--port', '0', '--data', dataDir]);
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (/listening on/.test(output) && child.signalCode === null && !child.killed) child.kill('SIGTERM');
      });
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.once('close', (code, signal) => resolve({ code, signal })),
      );
      expect(output, 'the broker got as far as listening').toMatch(/listening on/);
      if (code !== 0 || signal !== null) failures.push({ attempt, code, signal });
    }
    expect(failures, 'attempts that did not exit with code 0').toEqual([]);
  });

  it.each([
    { args: ['--port', 'abc'], option: /port/i, value: 'abc' },
    { args: ['--port', '70000'], option: /port/i, value: '70000' },
    { args: ['--port', '-1'], option: /port/i, value: '-1' },
    { args: ['--max-inflight', '0'], option: /max.?inflight/i, value: '0' },
    { args: ['--connect-timeout', 'soon'], option: /connect.?timeout/i, value: 'soon' },
  ])('a bad option value ($args) exits non-zero with a message naming the option and the value', async ({ args, option, value }) => {
    const dataDir = freshDataDir();
    const { code, output } = await run(['--host', '127.0.0.1', '--data', dataDir, ...args]);
    expect(code, output).not.toBe(0);
    expect(code, output).not.toBeNull();
    expect(output).toMatch(option);
    expect(output).toContain(value);
    expect(output).not.toMatch(/listening on/);
  });

  it('a port already taken exits non-zero with a message saying it cannot listen', async () => {
    const first = await startBroker(freshDataDir());
    const { code, output } = await run(['--host', '127.0.0.1', '--port', String(first.port), '--data', freshDataDir()]);
    expect(code, output).not.toBe(0);
    expect(code, output).not.toBeNull();
    expect(output).toContain(String(first.port));
    expect(output).toMatch(/listen|in use/i);
  });

  it('a data directory holding a LevelDB that is not a broker store: non-zero exit, clear message, store left untouched', async () => {
    const dataDir = freshDataDir();
    const location = await createForeignStore(dataDir, [['some-app-key', 'some-app-value']]);

    const { code, output } = await run(['--host', '127.0.0.1', '--port', '0', '--data', dataDir]);
    expect(code, output).not.toBe(0);
    expect(code, output).not.toBeNull();
    expect(output).toMatch(/not a broker store/i);
    expect(output).toContain(location);
    expect(output).not.toMatch(/listening on/);
    expect(await readStore(location)).toEqual([['some-app-key', 'some-app-value']]);
  });

  it('a broker store of an unsupported format version: non-zero exit naming the format', async () => {
    const dataDir = freshDataDir();
    await createForeignStore(dataDir, [['!format', pack(99)]]);

    const { code, output } = await run(['--host', '127.0.0.1', '--port', '0', '--data', dataDir]);
    expect(code, output).not.toBe(0);
    expect(code, output).not.toBeNull();
    expect(output).toMatch(/format/i);
    expect(output).toContain('99');
    expect(output).not.toMatch(/listening on/);
  });
});
