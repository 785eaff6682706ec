/**
 * The store is private to the broker's user whatever the umask it is started with: the data
 * directory it creates is 0700, the store's files 0600 (LevelDB creates them itself, at open and
 * later); a data directory or store that other users can reach is reported at start.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { RawClient } from '../helpers/raw-client.js';
import { publishQos1, subscribe } from '../helpers/wait.js';

const BROKER_BIN = fileURLToPath(new URL('../../bin/broker.js', import.meta.url));
const ADMIN_BIN = fileURLToPath(new URL('../../bin/broker-admin.js', import.meta.url));

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

function tempParent(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'broker-modes-'));
  cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** `node <bin> <args>` under `umask <mask>`, through sh (Node.js cannot set a child's umask itself). */
function spawnWithUmask(mask: string, bin: string, args: string[]): ChildProcess {
  return spawn('/bin/sh', ['-c', `umask ${mask} && exec "$@"`, 'sh', process.execPath, bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

interface Running {
  child: ChildProcess;
  port: number;
  output: () => string;
  stop: () => Promise<number | null>;
}

async function startBroker(mask: string, dataDir: string): Promise<Running> {
  const child = spawnWithUmask(mask, BROKER_BIN, ['--host', '127.0.0.1', '--port', '0', '--data', dataDir]);
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  const port = await new Promise<number>((resolve, reject) => {
    const look = () => {
      const match = /listening on [^\s:]+:(\d+)/.exec(output);
      if (match) resolve(Number(match[1]));
    };
    child.stdout!.on('data', look);
    child.once('close', () => reject(new Error(`broker exited before listening:\n${output}`)));
  });
  return {
    child,
    port,
    output: () => output,
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

function runAdminWithUmask(mask: string, args: string[]): Promise<{ code: number | null; output: string }> {
  const child = spawnWithUmask(mask, ADMIN_BIN, args);
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, output })));
}

const modeOf = (file: string) => (fs.statSync(file).mode & 0o777).toString(8);

/** Mode of every file in the store, by name. */
function storeFileModes(store: string): Record<string, string> {
  return Object.fromEntries(fs.readdirSync(store).map((name) => [name, modeOf(path.join(store, name))]));
}

describe('file modes of the data directory and the store', { timeout: 60_000 }, () => {
  it('with umask 000: the data directory and store the broker creates are 0700, every file LevelDB creates is 0600, at open and later', async () => {
    const dataDir = path.join(tempParent(), 'new', 'data');
    const broker = await startBroker('000', dataDir);
    expect(modeOf(path.dirname(dataDir))).toBe('700');
    expect(modeOf(dataDir)).toBe('700');
    expect(modeOf(path.join(dataDir, 'store'))).toBe('700');
    expect(modeOf(path.join(dataDir, 'admin.sock'))).toBe('600');

    // Files made while the broker runs: a compaction writes new tables.
    const { client } = await RawClient.session(broker.port, { clientId: 'writer', clean: false });
    cleanup.push(() => client.close());
    await subscribe(client, 1, [{ topic: 'm/#', qos: 1 }]);
    for (let id = 1; id <= 50; id++) await publishQos1(client, id, `m/${id}`, 'payload', true);
    await client.disconnect();
    const compacted = await runAdminWithUmask('000', ['compact', '--data', dataDir]);
    expect(compacted.code, compacted.output).toBe(0);
    expect(await broker.stop()).toBe(0);
    expect(broker.output()).not.toMatch(/other local users/);

    const store = path.join(dataDir, 'store');
    const modes = storeFileModes(store);
    expect(Object.keys(modes).some((name) => name.endsWith('.ldb'))).toBe(true);
    expect(Object.keys(modes)).toEqual(expect.arrayContaining(['CURRENT', 'LOCK', 'LOG']));
    for (const [name, mode] of Object.entries(modes)) expect(`${name} ${mode}`).toBe(`${name} 600`);

    // broker-admin opens the same store the same way: what it makes is private too.
    const stopped = await runAdminWithUmask('000', ['compact', '--data', dataDir]);
    expect(stopped.code, stopped.output).toBe(0);
    for (const [name, mode] of Object.entries(storeFileModes(store))) expect(`${name} ${mode}`).toBe(`${name} 600`);
  });

  it('an existing data directory, store or store file that other users can reach gets one warning line each at start, naming the path and the mode', async () => {
    const dataDir = tempParent();
    const first = await startBroker('077', dataDir);
    expect(await first.stop()).toBe(0);
    const store = path.join(dataDir, 'store');
    fs.chmodSync(dataDir, 0o755);
    fs.chmodSync(store, 0o750);
    fs.chmodSync(path.join(store, 'CURRENT'), 0o644);

    const broker = await startBroker('077', dataDir);
    const warnings = broker
      .output()
      .split('\n')
      .filter((line) => line.includes('other local users'));
    expect(warnings).toHaveLength(3);
    expect(warnings[0]).toContain(`the data directory ${dataDir} has mode 0755: other local users can reach it (chmod 700 ${dataDir} makes it private)`);
    expect(warnings[1]).toContain(`the store ${store} has mode 0750`);
    expect(warnings[2]).toContain(`files of the store ${store} are open to other local users (CURRENT 0644)`);
    // Warned, not changed: the modes are the operator's.
    expect(modeOf(dataDir)).toBe('755');
    expect(await broker.stop()).toBe(0);
  });
});
