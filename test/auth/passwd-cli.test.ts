/**
 * `broker-admin passwd add|remove|list` (bin/broker-admin.js as a child process): it only edits
 * the password file, so it works the same whether a broker runs or not (the e2e auth suite shows
 * a running broker picking the change up).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { readPasswordFile } from '../../src/auth/password-file.js';

const ADMIN_BIN = fileURLToPath(new URL('../../bin/broker-admin.js', import.meta.url));

const directories: string[] = [];
afterEach(() => {
  for (const dir of directories.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'broker-passwd-cli-'));
  directories.push(dir);
  return dir;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs bin/broker-admin.js to completion with `input` on stdin (a pipe: not a terminal). */
function admin(args: string[], input = ''): Promise<Run> {
  const child = spawn(process.execPath, [ADMIN_BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdin.end(input);
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

async function verifies(file: string, user: string, password: string): Promise<boolean> {
  return (await readPasswordFile(file)).verify(user, Buffer.from(password));
}

describe('broker-admin passwd', { timeout: 30_000 }, () => {
  it('add (--password-stdin) creates <data>/passwd with mode 0600; add again changes the password; list; remove', async () => {
    const data = tempDir();
    const file = join(data, 'passwd');
    const first = await admin(['passwd', 'add', 'alice', '--password-stdin', '--data', data], 'wonder land\nignored second line\n');
    expect(first).toEqual({ code: 0, stdout: '', stderr: `broker-admin: added user "alice" in ${file}\n` });
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(await verifies(file, 'alice', 'wonder land')).toBe(true);

    expect((await admin(['passwd', 'add', 'bob', '--password-stdin', '--data', data], 'builder')).code).toBe(0);
    const changed = await admin(['passwd', 'add', 'alice', '--password-stdin', '--file', file], 'looking glass\r\n');
    expect(changed.stderr).toBe(`broker-admin: changed the password of user "alice" in ${file}\n`);
    expect(await verifies(file, 'alice', 'looking glass')).toBe(true);
    expect(await verifies(file, 'alice', 'wonder land')).toBe(false);

    expect(await admin(['passwd', 'list', '--data', data])).toEqual({ code: 0, stdout: 'alice\nbob\n', stderr: '' });
    expect(await admin(['passwd', 'remove', 'alice', '--data', data])).toEqual({
      code: 0,
      stdout: '',
      stderr: `broker-admin: removed user "alice" from ${file}\n`,
    });
    expect((await admin(['passwd', 'list', '--file', file])).stdout).toBe('bob\n');
    expect(readdirSync(data)).toEqual(['passwd']);
  });

  it('errors exit 1 with a message and leave the file as it was', async () => {
    const data = tempDir();
    const file = join(data, 'passwd');
    expect((await admin(['passwd', 'add', 'alice', '--password-stdin', '--data', data], 'a')).code).toBe(0);
    const before = readFileSync(file, 'utf8');
    const cases: Array<[string[], string, string]> = [
      [['passwd', 'remove', 'carol', '--data', data], '', `broker-admin: there is no user "carol" in ${file}\n`],
      [['passwd', 'add', 'bob', '--data', data], 'b\n', 'broker-admin: standard input is not a terminal to ask the password on: use --password-stdin\n'],
      [['passwd', 'add', 'bob', '--password-stdin', '--data', data], '', 'broker-admin: no password on standard input\n'],
      [['passwd', 'add', 'a:b', '--password-stdin', '--data', data], 'x', `broker-admin: user name "a:b" contains ':', which the password file uses as separator\n`],
    ];
    for (const [args, input, stderr] of cases) {
      expect(await admin(args, input), args.join(' ')).toEqual({ code: 1, stdout: '', stderr });
    }
    expect(readFileSync(file, 'utf8')).toBe(before);

    writeFileSync(file, `${before}carol\n`);
    const broken = await admin(['passwd', 'list', '--file', file]);
    expect(broken).toEqual({ code: 1, stdout: '', stderr: `broker-admin: ${file}:2: expected user:$scrypt$…, found no colon\n` });
    expect((await admin(['passwd', 'add', 'dave', '--password-stdin', '--file', file], 'd')).code).toBe(1);
    expect(readFileSync(file, 'utf8')).toBe(`${before}carol\n`);
  });

  it('list and the messages escape what a user name holds that would drive a terminal: ESC, BEL, DEL, C1, bidi overrides, backslash', async () => {
    const data = tempDir();
    const file = join(data, 'passwd');
    // Clear the screen, ring, DEL, CSI (C1), right-to-left override, a backslash: the file refuses none of them.
    const user = 'eve\u001b[2J\u0007\u007f\u009b31m\u202eb\\c';
    const added = await admin(['passwd', 'add', user, '--password-stdin', '--data', data], 'x');
    expect(added).toEqual({ code: 0, stdout: '', stderr: `broker-admin: added user "eve\\u001b[2J\\u0007\\u007f\\u009b31m\\u202eb\\\\c" in ${file}\n` });
    expect(await verifies(file, user, 'x')).toBe(true);
    // One line per user, as the text-escape rules print a table cell (JSON's escapes, no quotes).
    const listed = await admin(['passwd', 'list', '--data', data]);
    expect(listed).toEqual({ code: 0, stdout: 'eve\\u001b[2J\\u0007\\u007f\\u009b31m\\u202eb\\\\c\n', stderr: '' });
    // Nothing but the line's own end is a control or format character.
    expect(listed.stdout.slice(0, -1)).not.toMatch(/[\p{Cc}\p{Cf}]/u);
    const missing = await admin(['passwd', 'remove', `${user}!`, '--data', data]);
    expect(missing.stderr).toBe(`broker-admin: there is no user "eve\\u001b[2J\\u0007\\u007f\\u009b31m\\u202eb\\\\c!" in ${file}\n`);
  });

  const hasScript = spawnSync('script', ['--version']).status === 0;
  it.skipIf(!hasScript)('on a terminal the password is asked twice and never echoed; a mismatch changes nothing', async () => {
    const data = tempDir();
    const file = join(data, 'passwd');
    /** Runs the command on a pseudo-terminal (util-linux `script`), typing each answer once its prompt shows. */
    const onTerminal = (user: string, answers: string[]): Promise<{ code: number | null; output: string }> => {
      const command = `${JSON.stringify(process.execPath)} ${JSON.stringify(ADMIN_BIN)} passwd add ${user} --file ${JSON.stringify(file)}`;
      const child = spawn('script', ['-qec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let output = '';
      let prompts = 0;
      child.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        const seen = output.match(/Password( again)?: /g)?.length ?? 0;
        while (prompts < seen && prompts < answers.length) child.stdin.write(`${answers[prompts++]!}\r`);
      });
      return new Promise((resolve) => child.on('close', (code) => resolve({ code, output })));
    };
    const added = await onTerminal('alice', ['s3cr3t-word', 's3cr3t-word']);
    expect(added.code, added.output).toBe(0);
    expect(added.output).toContain('Password: ');
    expect(added.output).toContain('Password again: ');
    expect(added.output).not.toContain('s3cr3t');
    expect(await verifies(file, 'alice', 's3cr3t-word')).toBe(true);

    const mismatch = await onTerminal('alice', ['one-thing', 'another']);
    expect(mismatch.code).toBe(1);
    expect(mismatch.output).toContain('the passwords do not match');
    expect(await verifies(file, 'alice', 's3cr3t-word')).toBe(true);
  });
});
