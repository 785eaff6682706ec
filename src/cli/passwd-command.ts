import { mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { readPasswordFile, removeUser, setPassword } from '../auth/password-file.js';
import { errorMessage } from '../errors.js';
import { DEFAULTS } from '../server/broker.js';
import { escapeControls, printable } from '../text-escape.js';

/**
 * `broker-admin passwd add|remove|list`: edits the password file, whether or not the broker runs.
 * The file is replaced atomically (temp file + rename, mode 0600); a running broker notices the
 * change and reloads it, so new users can connect at once.
 */

interface PasswdOptions {
  data: string;
  file?: string;
  passwordStdin?: boolean;
}

export function addPasswdCommands(program: Command): void {
  const passwd = program
    .command('passwd')
    .description('manage the password file: add, remove or list users (a running broker reloads it by itself)');

  options(passwd.command('add').argument('<user>', 'user name'))
    .description('add a user, or set a new password for one; the password is asked twice on a terminal')
    .option('--password-stdin', 'read the password from standard input (its first line) instead of asking')
    .action((user: string, _options: unknown, command: Command) =>
      run(async () => {
        const opts = command.opts<PasswdOptions>();
        const file = fileOf(opts);
        const password = opts.passwordStdin ? await passwordFromStdin() : await passwordFromTerminal();
        await mkdir(dirname(file), { recursive: true, mode: 0o700 });
        const existed = await setPassword(file, user, password);
        say(`${existed ? 'changed the password of' : 'added'} user ${JSON.stringify(user)} in ${file}`);
      }),
    );

  options(passwd.command('remove').argument('<user>', 'user name'))
    .description('remove a user (connections already open stay open)')
    .action((user: string, _options: unknown, command: Command) =>
      run(async () => {
        const file = fileOf(command.opts<PasswdOptions>());
        if (!(await removeUser(file, user))) throw new Error(`there is no user ${JSON.stringify(user)} in ${file}`);
        say(`removed user ${JSON.stringify(user)} from ${file}`);
      }),
    );

  options(passwd.command('list'))
    .description('the user names in the password file, one per line (control characters and backslashes escaped as in JSON)')
    .action((_options: unknown, command: Command) =>
      run(async () => {
        const table = await readPasswordFile(fileOf(command.opts<PasswdOptions>()));
        // A name may hold escape sequences (the file refuses only line breaks, NUL and colons): shown, not obeyed.
        process.stdout.write(table.entries().map(({ user }) => `${printable(user)}\n`).join(''));
      }),
    );
}

function options(command: Command): Command {
  return command
    .option('--data <dir>', 'data directory of the broker', DEFAULTS.dataDir)
    .option('--file <path>', 'the password file (default: <data>/passwd)');
}

function fileOf(options: PasswdOptions): string {
  return resolve(options.file ?? join(options.data, 'passwd'));
}

async function run(body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (error) {
    say(errorMessage(error));
    process.exitCode = 1;
  }
}

/** Names in messages are JSON-quoted, which leaves DEL and C1 controls raw: escaped here, once for all. */
function say(message: string): void {
  process.stderr.write(`broker-admin: ${escapeControls(message)}\n`);
}

async function passwordFromStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const password = Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
  if (password === '') throw new Error('no password on standard input');
  return password;
}

async function passwordFromTerminal(): Promise<string> {
  if (!process.stdin.isTTY) throw new Error('standard input is not a terminal to ask the password on: use --password-stdin');
  const password = await ask('Password: ');
  if (password === '') throw new Error('the password cannot be empty');
  if ((await ask('Password again: ')) !== password) throw new Error('the passwords do not match');
  return password;
}

/** Reads one line from the terminal without echoing it. */
function ask(prompt: string): Promise<string> {
  const stdin = process.stdin;
  // Echo off before the prompt shows: whatever is typed after it is never displayed.
  stdin.setRawMode(true);
  process.stderr.write(prompt);
  return new Promise((resolveLine, rejectLine) => {
    let line = '';
    const finish = (error?: Error) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (error) rejectLine(error);
      else resolveLine(line);
    };
    const onData = (chunk: Buffer) => {
      for (const char of chunk.toString('utf8')) {
        if (char === '\r' || char === '\n' || char === '\u0004') return finish();
        if (char === '\u0003') return finish(new Error('interrupted'));
        if (char === '\u007f' || char === '\b') line = [...line].slice(0, -1).join('');
        else if (char >= ' ') line += char;
      }
    };
    stdin.resume();
    stdin.on('data', onData);
  });
}
