/**
 * Readiness for systemd's `Type=notify`: with NOTIFY_SOCKET set, bin/broker.js has the real
 * `systemd-notify` send READY=1 once every listener accepts connections. systemd's end is a
 * real Unix datagram socket, bound by a small Python program (Node cannot bind one) that
 * prints each datagram and closes the descriptors sent with it, as systemd does (systemd-notify
 * waits for that before it exits).
 *
 * Needs systemd-notify (Debian package systemd) and python3; .ci/run installs systemd when it is
 * missing, and without either the suite fails saying so rather than skipping.
 */
import { spawn, spawnSync, type ChildProcessByStdio } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { useBrokerProcesses } from '../helpers/process-harness.js';
import { RawClient } from '../helpers/raw-client.js';

const BROKER_BIN = fileURLToPath(new URL('../../bin/broker.js', import.meta.url));

type Child = ChildProcessByStdio<null, Readable, Readable>;

const available = (command: string, args: string[]) => spawnSync(command, args, { stdio: 'ignore' }).status === 0;
const canNotify = available('systemd-notify', ['--version']) && available('python3', ['--version']);

const { onTeardown, freshDataDir } = useBrokerProcesses('broker-notify-');

const RECEIVER = `
import array, json, os, socket, sys
receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
receiver.bind(sys.argv[1])
print(json.dumps({"bound": True}), flush=True)
while True:
    data, ancillary, _, _ = receiver.recvmsg(4096, socket.CMSG_SPACE(16 * 4))
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    for fd in fds:
        os.close(fd)
    print(json.dumps({"datagram": data.decode()}), flush=True)
`;

/** Lines of a child's stdout (and its stderr, for failure messages), with a wait for the next matching one. */
class Output {
  text = '';
  #waiters: Array<() => void> = [];

  constructor(child: Child) {
    const add = (chunk: Buffer) => {
      this.text += chunk.toString();
      for (const wake of this.#waiters.splice(0)) wake();
    };
    child.stdout.on('data', add);
    child.stderr.on('data', add);
    child.once('close', () => {
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  async waitFor(pattern: RegExp, child: Child): Promise<RegExpExecArray> {
    for (;;) {
      const match = pattern.exec(this.text);
      if (match) return match;
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`exited before ${String(pattern)}:\n${this.text}`);
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }
}

function start(command: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const output = new Output(child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })),
  );
  onTeardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  return { child, output, exited };
}

/** systemd's end of the notification socket, in a fresh directory. */
async function notificationSocket(): Promise<{ path: string; receiver: ReturnType<typeof start> }> {
  const path = join(freshDataDir(), 'notify.sock');
  const receiver = start('python3', ['-c', RECEIVER, path]);
  await receiver.output.waitFor(/"bound": true/, receiver.child);
  return { path, receiver };
}

/** A broker with two listeners (free ports unless told); its notifications go to `notifySocket`. */
function startBroker(notifySocket: string, secondPort = 0) {
  const dir = freshDataDir();
  const config = join(dir, 'broker.yaml');
  writeFileSync(config, `data_dir: ./data\nlisteners:\n  - {host: 127.0.0.1, port: 0}\n  - {host: 127.0.0.1, port: ${secondPort}}\n`);
  return start(process.execPath, [BROKER_BIN, '--config', config], { ...process.env, NOTIFY_SOCKET: notifySocket });
}

async function connects(port: number, clientId: string): Promise<boolean> {
  const { client, connack } = await RawClient.session(port, { clientId });
  onTeardown(() => client.socket.destroy());
  await client.disconnect();
  return connack.returnCode === 0;
}

describe('systemd readiness (Type=notify)', () => {
  it('has systemd-notify and python3 to test with (apt-get install systemd python3)', () => {
    expect(canNotify, 'systemd-notify or python3 is missing: apt-get install systemd python3').toBe(true);
  });

  it('READY=1 arrives once every listener accepts; its STATUS names them; SIGTERM still ends with exit code 0', async () => {
    const { path, receiver } = await notificationSocket();
    const broker = startBroker(path);

    const [, status] = await receiver.output.waitFor(/"datagram": "READY=1\\nSTATUS=([^"]*)"/, receiver.child);
    // The ports were picked by the system when each listener bound: a STATUS that names both was
    // written after both were listening.
    await broker.output.waitFor(/listening on [^]*listening on .*\n/, broker.child);
    const listening = [...broker.output.text.matchAll(/listening on 127\.0\.0\.1:(\d+)/g)].map((match) => Number(match[1]));
    expect(status).toBe(`listening on ${listening.map((port) => `127.0.0.1:${port}`).join(', ')}`);
    expect(await connects(listening[0]!, 'first-listener')).toBe(true);
    expect(await connects(listening[1]!, 'second-listener')).toBe(true);

    broker.child.kill('SIGTERM');
    expect(await broker.exited).toEqual({ code: 0, signal: null });
    expect(receiver.output.text.match(/READY=1/g), 'readiness is sent once').toHaveLength(1);
  });

  it('a start that fails (its second listener’s port is taken) sends no READY=1', async () => {
    const { path, receiver } = await notificationSocket();
    const first = startBroker(path);
    await receiver.output.waitFor(/READY=1/, receiver.child);
    const [, taken] = await first.output.waitFor(/listening on [^]*listening on 127\.0\.0\.1:(\d+)/, first.child);
    const failing = startBroker(path, Number(taken));
    expect((await failing.exited).code, failing.output.text).toBe(1);

    // What reached the socket by now is before this marker: only the first broker's readiness.
    const marker = start('systemd-notify', ['STATUS=marker'], { ...process.env, NOTIFY_SOCKET: path });
    expect((await marker.exited).code).toBe(0);
    await receiver.output.waitFor(/STATUS=marker/, receiver.child);
    expect(receiver.output.text.match(/READY=1/g)).toHaveLength(1);
  });

  it('a notification socket nobody listens on: the broker says so and serves anyway', async () => {
    const broker = startBroker(join(freshDataDir(), 'nobody-here.sock'));
    const [problem] = await broker.output.waitFor(/NOTIFY_SOCKET is set but systemd-notify --ready failed \(.*\)/, broker.child);
    expect(problem).toMatch(/exit code 1/);
    const [, port] = await broker.output.waitFor(/listening on 127\.0\.0\.1:(\d+)/, broker.child);
    expect(await connects(Number(port), 'served-anyway')).toBe(true);

    broker.child.kill('SIGTERM');
    expect(await broker.exited).toEqual({ code: 0, signal: null });
  });
});
