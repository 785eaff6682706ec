/**
 * The broker's log over the real command line: `--log-format json` (or `log_format: json`) prints
 * one JSON object per line, every line of a run, a failed start's included; `--log-level` and
 * `log_level` leave out the less severe lines.
 */
import { spawn } from 'node:child_process';
import { closeSync, fstatSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { BrokerProcess, runBroker } from '../helpers/broker-process.js';
import { useBrokerProcesses } from '../helpers/process-harness.js';
import { RawClient } from '../helpers/raw-client.js';

const BROKER_BIN = fileURLToPath(new URL('../../bin/broker.js', import.meta.url));

const { onTeardown, freshDataDir } = useBrokerProcesses('broker-logs-');

interface JsonLine {
  time: string;
  level: string;
  message: string;
  [field: string]: unknown;
}

/** Every line of the output as JSON; fails the test on the first line that is not one object. */
function jsonLines(output: string): JsonLine[] {
  return output
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const parsed = JSON.parse(line) as JsonLine;
      expect(Object.keys(parsed).slice(0, 3), line).toEqual(['time', 'level', 'message']);
      expect(new Date(parsed.time).toISOString(), line).toBe(parsed.time);
      expect(['debug', 'info', 'warn', 'error'], line).toContain(parsed.level);
      return parsed;
    });
}

/**
 * A config whose check logs an info line (the ACL's rule count) and a warning (user rules without
 * a password file), and starts nothing: lines of two levels without a broker to stop.
 */
function aclConfig(): string {
  const dir = freshDataDir();
  writeFileSync(join(dir, 'acl'), 'user alice\ntopic readwrite sensors/#\n');
  const file = join(dir, 'broker.yaml');
  writeFileSync(file, 'acl_file: acl\n');
  return file;
}

async function startBroker(dataDir: string, args: string[]): Promise<BrokerProcess> {
  const broker = await BrokerProcess.start(dataDir, args);
  onTeardown(async () => {
    if (broker.child.exitCode === null && broker.child.signalCode === null) await broker.kill();
  });
  return broker;
}

describe('--log-format json', () => {
  it('a whole run is one JSON object per line: start, a client with a newline and a quote in its id, shutdown', async () => {
    const broker = await startBroker(freshDataDir(), ['--log-format', 'json']);
    const clientId = 'odd "one"\nsecond line';
    const { client, connack } = await RawClient.session(broker.port, { clientId, clean: false });
    onTeardown(() => client.socket.destroy());
    expect(connack.returnCode).toBe(0);
    await client.disconnect();
    expect(await broker.stop()).toEqual({ code: 0, signal: null });

    const messages = jsonLines(broker.output).map(({ level, message }) => `${level} ${message}`);
    expect(messages).toContain(`info listening on 127.0.0.1:${broker.port}`);
    expect(messages.some((message) => message.startsWith(`info client ${JSON.stringify(clientId)} connected`)), messages.join('\n')).toBe(true);
    expect(messages.at(-2)).toBe('info SIGTERM received, shutting down');
    expect(messages.at(-1)).toBe('info store closed, bye');
  });

  it('log_format: json in the config file does the same; a start that fails says why in a JSON line', async () => {
    const dataDir = freshDataDir();
    const config = join(freshDataDir(), 'broker.yaml');
    writeFileSync(config, `data_dir: ${dataDir}\nlog_format: json\nlisteners:\n  - {host: 127.0.0.1, port: 0}\n`);
    const first = await startBroker(dataDir, ['--config', config]);
    expect(jsonLines(first.output).map(({ message }) => message)).toContain(`listening on 127.0.0.1:${first.port}`);

    // A second broker on the same data directory cannot start.
    const second = await runBroker(['--config', config]);
    expect(second.code, second.output).toBe(1);
    const failure = jsonLines(second.output).at(-1)!;
    expect(failure.level).toBe('error');
    expect(failure.message).toMatch(/in use/);
    expect(failure.message).toContain(dataDir);
  });
});

describe('--log-level', () => {
  it.each([
    { args: [], info: true, warn: true },
    { args: ['--log-level', 'debug'], info: true, warn: true },
    { args: ['--log-level', 'warn'], info: false, warn: true },
    { args: ['--log-level', 'error'], info: false, warn: false },
  ])('$args: info lines printed: $info, warnings: $warn', async ({ args, info, warn }) => {
    const file = aclConfig();
    const { code, output } = await runBroker(['--check-config', file, ...args]);
    expect(code, output).toBe(0);
    expect(/ info ACL file .*: 1 rules$/m.test(output), output).toBe(info);
    expect(/ warn ACL file .* has rules for user names, but without a password file/m.test(output), output).toBe(warn);
    expect(output).toMatch(/: valid$/m);
  });

  it('log_level in the file applies, and --log-level overrides it', async () => {
    const file = aclConfig();
    writeFileSync(file, 'acl_file: acl\nlog_level: error\n');
    const quiet = await runBroker(['--check-config', file]);
    expect(quiet.output).not.toMatch(/ACL file/);
    const loud = await runBroker(['--check-config', file, '--log-level', 'info']);
    expect(loud.output).toMatch(/ info ACL file .*: 1 rules$/m);
  });

  it('an unknown level or format: non-zero exit naming the choices', async () => {
    // Beside --check-config of a valid file: were the value taken, the run would exit 0.
    const file = aclConfig();
    const level = await runBroker(['--check-config', file, '--log-level', 'loud']);
    expect(level.code).not.toBe(0);
    expect(level.output).toMatch(/--log-level.*loud.*debug, info, warn, error/s);
    const format = await runBroker(['--check-config', file, '--log-format', 'xml']);
    expect(format.code).not.toBe(0);
    expect(format.output).toMatch(/--log-format.*xml.*text, json/s);
  });
});

describe('under systemd (JOURNAL_STREAM)', () => {
  /**
   * Runs a check with stdout and stderr in one file, as systemd connects both to one journal
   * stream, and JOURNAL_STREAM naming that file (or another one); resolves with what was written.
   */
  async function runToFile(args: string[], journalStream: 'this file' | 'another file'): Promise<string> {
    const dir = freshDataDir();
    const out = openSync(join(dir, 'output'), 'w');
    const other = openSync(join(dir, 'other'), 'w');
    const { dev, ino } = fstatSync(journalStream === 'this file' ? out : other, { bigint: true });
    const child = spawn(process.execPath, [BROKER_BIN, ...args], { stdio: ['ignore', out, out], env: { ...process.env, JOURNAL_STREAM: `${dev}:${ino}` } });
    const code = await new Promise((resolve) => child.once('close', resolve));
    closeSync(out);
    closeSync(other);
    expect(code).toBe(0);
    return readFileSync(join(dir, 'output'), 'utf8');
  }

  it.each(['text', 'json'])('log lines to journald start with their syslog priority (%s), for journald to file them by level', async (format) => {
    const output = await runToFile(['--check-config', aclConfig(), '--log-format', format], 'this file');
    const logLines = output.split('\n').filter((line) => /ACL file/.test(line));
    expect(logLines.map((line) => line.slice(0, 3))).toEqual(['<6>', '<4>']);
    if (format === 'json') expect(logLines.map((line) => (JSON.parse(line.slice(3)) as JsonLine).level)).toEqual(['info', 'warn']);
  });

  it('a JOURNAL_STREAM that names another file (inherited from a parent) adds nothing', async () => {
    const output = await runToFile(['--check-config', aclConfig()], 'another file');
    expect(output).toMatch(/ info ACL file/);
    expect(output).not.toMatch(/^</m);
  });
});
