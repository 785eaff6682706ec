import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BROKER_BIN = fileURLToPath(new URL('../../bin/broker.js', import.meta.url));

/** A fresh, empty data directory; remove it with `removeDataDir`. */
export function makeDataDir(prefix = 'broker-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDataDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * The broker as a child process from bin/broker.js, on a free port, for restart and crash tests.
 * It resolves once the broker printed its `listening on` line.
 */
export class BrokerProcess {
  readonly child: ChildProcess;
  readonly port: number;
  output = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(child: ChildProcess, port: number, output: string) {
    this.child = child;
    this.port = port;
    this.output = output;
    child.stdout!.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, signal: child.signalCode });
      // 'close', not 'exit': the output streams are complete only then.
      else child.once('close', (code, signal) => resolve({ code, signal }));
    });
  }

  static async start(dataDir: string, extraArgs: string[] = [], port = 0): Promise<BrokerProcess> {
    const child = spawn(process.execPath, [BROKER_BIN, '--host', '127.0.0.1', '--port', String(port), '--data', dataDir, ...extraArgs], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const listeningPort = await new Promise<number>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        const match = /listening on [^\s:]+:(\d+)/.exec(output);
        if (match) {
          child.stdout!.off('data', onData);
          child.stderr!.off('data', onData);
          resolve(Number(match[1]));
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code, signal) => reject(new Error(`broker exited (${code ?? signal}) before listening:\n${output}`)));
    });
    return new BrokerProcess(child, listeningPort, output);
  }

  /** SIGTERM: graceful stop; resolves with the exit status. */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.child.kill('SIGTERM');
    return this.exited;
  }

  /** SIGKILL: a crash; nothing gets to run. */
  async kill(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
  }
}

/** Runs bin/broker.js to completion (for start-up failures); resolves with exit code and output. */
export function runBroker(args: string[]): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [BROKER_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, output })));
}
