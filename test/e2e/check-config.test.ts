/**
 * `broker --check-config FILE` over the real command line (bin/broker.js as a child process): the
 * checks of a start, the same words for every problem, exit 0 or 1, and nothing started — no
 * store opened, no directory created, no port bound.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { setPassword } from '../../src/auth/password-file.js';
import { BrokerProcess, runBroker } from '../helpers/broker-process.js';
import { useBrokerProcesses } from '../helpers/process-harness.js';

const EXAMPLE_CONFIG = fileURLToPath(new URL('../../contrib/systemd/broker.yaml', import.meta.url));

const { onTeardown, freshDataDir } = useBrokerProcesses('broker-check-');

function write(dir: string, name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** A TCP port some other process holds for the rest of the test. */
async function takenPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onTeardown(() => new Promise((resolve) => server.close(resolve)));
  return (server.address() as AddressInfo).port;
}

describe('broker --check-config', () => {
  it('a valid file: exit 0 and "<file>: valid"; no data directory created, its listener port never bound', async () => {
    const dir = freshDataDir();
    const data = join(dir, 'not-yet');
    const port = await takenPort(); // a start would fail on it: the check does not try
    const file = write(dir, 'broker.yaml', `data_dir: ./not-yet\nlisteners:\n  - {host: 127.0.0.1, port: ${port}}\n`);

    const { code, output } = await runBroker(['--check-config', file]);
    expect(code, output).toBe(0);
    expect(output.trim()).toBe(`${file}: valid`);
    expect(existsSync(data), 'the data directory was not created').toBe(false);
  });

  it('opens no store: a data directory in use by a running broker checks as valid, and that broker keeps it', async () => {
    const dir = freshDataDir();
    const running = await BrokerProcess.start(dir);
    onTeardown(async () => {
      if (running.child.exitCode === null) await running.stop();
    });
    const file = write(freshDataDir(), 'broker.json', JSON.stringify({ data_dir: dir, listeners: [{ port: 0 }] }));

    const { code, output } = await runBroker(['--check-config', file]);
    expect(code, output).toBe(0);
    expect(output).not.toMatch(/in use/);
    expect(await running.stop()).toEqual({ code: 0, signal: null });
  });

  it('a file with several problems: exit 1, every problem printed, in the words a start prints them', async () => {
    const dir = freshDataDir();
    const file = write(dir, 'broker.yaml', 'log_level: loud\nsync: 1\nlimits:\n  max_inflight: 0\n  max_inflght: 3\n');

    const check = await runBroker(['--check-config', file]);
    expect(check.code, check.output).toBe(1);
    expect(check.output.trim().split('\n')).toEqual([
      `broker: ${file}: sync: expected true or false, got 1`,
      `${file}: log_level: expected one of debug, info, warn, error, got "loud"`,
      `${file}: limits.max_inflght: unknown key (did you mean max_inflight?)`,
      `${file}: limits.max_inflight: expected an integer from 1 to 65535, got 0`,
    ]);
    const start = await runBroker(['--config', file, '--data', freshDataDir()]);
    expect(start.code).toBe(1);
    expect(start.output).toBe(check.output);
  });

  it.each([
    { kind: 'password file', key: 'password_file', name: 'passwd', contents: 'alice:not-a-hash\n', problem: 'user "alice": expected $scrypt$' },
    { kind: 'ACL file', key: 'acl_file', name: 'acl', contents: 'topic sideways a/b\n', problem: 'unknown access "sideways"' },
  ])('a $kind that does not parse: exit 1 naming the file and line, as a start does', async ({ key, name, contents, problem }) => {
    const dir = freshDataDir();
    const referenced = write(dir, name, contents);
    const file = write(dir, 'broker.yaml', `${key}: ${referenced}\n`);

    const check = await runBroker(['--check-config', file]);
    expect(check.code, check.output).toBe(1);
    expect(check.output).toContain(`broker: ${referenced}:1: ${problem}`);
    expect(check.output).not.toMatch(/valid$/m);
    const start = await runBroker(['--config', file, '--port', '0', '--data', freshDataDir()]);
    expect(start.code).toBe(1);
    expect(start.output).toBe(check.output);
  });

  it('a password file and ACL that parse: valid, and the check says what it read', async () => {
    const dir = freshDataDir();
    const passwd = join(dir, 'passwd');
    await setPassword(passwd, 'alice', 'wonderland');
    const acl = write(dir, 'acl', 'user alice\ntopic readwrite sensors/#\n');
    const file = write(dir, 'broker.yaml', `password_file: ${passwd}\nacl_file: ${acl}\n`);

    const { code, output } = await runBroker(['--check-config', file]);
    expect(code, output).toBe(0);
    expect(output).toContain(`password file ${passwd}: 1 users`);
    expect(output).toContain(`ACL file ${acl}: 1 rules`);
    expect(output).toMatch(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: valid\n$`));
  });

  it('the flags beside the file are checked too, as for a start', async () => {
    const file = write(freshDataDir(), 'broker.yaml', 'sync: true\n');
    const badFlag = await runBroker(['--check-config', file, '--max-inflight', '0']);
    expect(badFlag.code, badFlag.output).toBe(1);
    expect(badFlag.output).toMatch(/max-inflight/);

    const missing = join(freshDataDir(), 'no-such-acl');
    const missingFile = await runBroker(['--check-config', file, '--acl-file', missing]);
    expect(missingFile.code, missingFile.output).toBe(1);
    expect(missingFile.output).toContain(`--acl-file: file not found: ${missing}`);

    const both = await runBroker(['--check-config', file, '--config', file]);
    expect(both.code, both.output).not.toBe(0);
    expect(both.output).toMatch(/cannot be used with/);
  });

  it('a missing file: exit 1 naming it', async () => {
    const missing = join(freshDataDir(), 'nope.yaml');
    const { code, output } = await runBroker(['--check-config', missing]);
    expect(code, output).toBe(1);
    expect(output).toContain(`${missing}: cannot read the config file: file not found`);
  });

  it('the example config shipped beside the systemd unit is valid', async () => {
    const { code, output } = await runBroker(['--check-config', EXAMPLE_CONFIG]);
    expect(code, output).toBe(0);
    expect(output.trim()).toBe(`${EXAMPLE_CONFIG}: valid`);
  });
});
