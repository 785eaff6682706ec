import { existsSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { Command } from 'commander';
import { ADMIN_SOCKET, connectAdmin, requestRunning } from '../admin/admin-client.js';
import { runOperation, type AdminRequest, type Progress } from '../admin/operations.js';
import type { AdminRecord } from '../admin/records.js';
import { HumanRenderer } from '../admin/render.js';
import { StoppedTarget } from '../admin/stopped-target.js';
import { AdminError, AdminErrorCodes, BrokerError, ErrorCodes, errorMessage } from '../errors.js';
import { DEFAULTS } from '../server/broker.js';
import { escapeControls } from '../text-escape.js';
import { addPasswdCommands } from './passwd-command.js';

/**
 * `broker-admin`: inspects and manages a broker's store. It finds the mode by itself: when the
 * data directory's admin.sock answers, the running broker serves the request; otherwise it opens
 * the stopped store. The mode goes to stderr, so stdout carries only the output (`--json`: NDJSON).
 *
 * Exit codes: 0 done; 1 error (bad input, unknown id, no store, …); 2 `verify` found problems.
 */

interface CommonOptions {
  data: string;
  json?: boolean;
}

const EXIT_ERROR = 1;
const EXIT_PROBLEMS = 2;

export async function main(argv: string[]): Promise<void> {
  // `broker-admin dump --json | head` closes the pipe early: that is the reader's choice, not an
  // error. Stop quietly; read-only commands have nothing to undo and writes are atomic transitions.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
  const program = new Command('broker-admin')
    .description('Inspect and manage the store of a durable MQTT broker, stopped or running.')
    .showHelpAfterError()
    .addHelpText(
      'after',
      `
The running broker is reached through <data>/${ADMIN_SOCKET}; when nothing answers there, the store
in <data>/store is opened directly. Which one was used is said on stderr.
Exit codes: 0 done, 1 error, 2 verify found problems.`,
    );

  const run = (request: (options: CommonOptions & Record<string, unknown>) => AdminRequest) =>
    async (...args: unknown[]) => {
      const command = args[args.length - 1] as Command;
      const options = command.opts<CommonOptions & Record<string, unknown>>();
      await execute(request(options), options);
    };

  common(program.command('dump'))
    .description('every session, the retained messages and the store totals')
    .option('--client <id>', 'only this client id')
    .option('--messages', 'list the queued messages of each session too')
    .option('--full', 'whole payloads (default: the first 64 bytes)')
    .action(run((o) => ({ op: 'dump', client: o.client as string | undefined, messages: o.messages === true, full: o.full === true })));

  common(program.command('sessions'))
    .description('the sessions: subscriptions, queued, in flight, inbound QoS 2')
    .action(run(() => ({ op: 'sessions' })));

  const session = program.command('session').description('one session: show or drop');
  common(session.command('show').argument('<id>', 'client id'))
    .description('a session and its queued messages')
    .option('--full', 'whole payloads (default: the first 64 bytes)')
    .action(async (id: string, _options: unknown, command: Command) => {
      const options = command.opts<CommonOptions & { full?: boolean }>();
      await execute({ op: 'session-show', clientId: id, full: options.full === true }, options);
    });
  common(session.command('drop').argument('<id>', 'client id'))
    .description('discard a session: subscriptions, queue, in flight; closes its connection if online')
    .action(async (id: string, _options: unknown, command: Command) => {
      await execute({ op: 'session-drop', clientId: id }, command.opts<CommonOptions>());
    });

  const retained = program.command('retained').description('retained messages: list or clear');
  common(retained.command('list').argument('[filter]', 'topic filter, + and # allowed'))
    .description('the retained messages (matching FILTER)')
    .option('--full', 'whole payloads (default: the first 64 bytes)')
    .action(async (filter: string | undefined, _options: unknown, command: Command) => {
      const options = command.opts<CommonOptions & { full?: boolean }>();
      const request: AdminRequest = { op: 'retained-list', full: options.full === true };
      if (filter !== undefined) request.filter = filter;
      await execute(request, options);
    });
  common(retained.command('clear').argument('<topic>', 'topic name'))
    .description('remove the retained message of TOPIC')
    .action(async (topic: string, _options: unknown, command: Command) => {
      await execute({ op: 'retained-clear', topic }, command.opts<CommonOptions>());
    });

  common(program.command('stats')).description('store totals').action(run(() => ({ op: 'stats' })));
  common(program.command('verify'))
    .description("check the store's invariants; exit code 2 and a report of each problem if any is broken")
    .action(run(() => ({ op: 'verify' })));
  common(program.command('compact')).description('compact the LevelDB store').action(run(() => ({ op: 'compact' })));
  addPasswdCommands(program);

  await program.parseAsync(argv);
}

function common(command: Command): Command {
  return command
    .option('--data <dir>', 'data directory of the broker', DEFAULTS.dataDir)
    .option('--json', 'NDJSON output: one JSON record per line (schema in the README)');
}

const NO_SESSIONS: [string, string] = ['session', 'No sessions.'];
const NO_RETAINED: [string, string] = ['retained', 'No retained messages.'];
const EXPECTED: Partial<Record<AdminRequest['op'], Array<[string, string]>>> = {
  dump: [NO_SESSIONS, NO_RETAINED],
  sessions: [NO_SESSIONS],
  'retained-list': [NO_RETAINED],
};

async function execute(request: AdminRequest, options: CommonOptions): Promise<void> {
  const progress = new TtyProgress();
  const expected = request.op === 'dump' && request.client !== undefined ? [] : (EXPECTED[request.op] ?? []);
  const renderer = options.json ? undefined : new HumanRenderer(expected);
  let stopped: StoppedTarget | undefined;
  let verifyOk = true;
  try {
    StoppedTarget.checkDataDir(options.data);
    const dataDir = resolve(options.data);
    const socketPath = join(dataDir, ADMIN_SOCKET);
    const socket = existsSync(socketPath) ? await connectAdmin(socketPath) : undefined;
    let records: AsyncIterable<AdminRecord>;
    if (socket) {
      say(`using the running broker via ${display(socketPath)}`);
      records = requestRunning(socket, request, progress.update);
    } else {
      stopped = new StoppedTarget(dataDir, { requireFormat: request.op !== 'verify' });
      try {
        await stopped.inspector();
      } catch (error) {
        if (error instanceof BrokerError && error.code === ErrorCodes.STORE_LOCKED) {
          throw new AdminError(
            AdminErrorCodes.UNREACHABLE,
            `the store ${display(stopped.store)} is in use by another process, and nothing answers on ${display(socketPath)} ` +
              '(a broker started with its admin channel off, or one still starting?)',
          );
        }
        throw error;
      }
      say(`using the stopped store ${display(stopped.store)}`);
      records = runOperation(request, stopped, progress.update);
    }
    for await (const record of records) {
      if (record.type === 'verify') verifyOk = record.ok;
      if (renderer) {
        renderer.record(record);
        const text = renderer.take();
        if (text) await writeOut(text, progress);
      } else {
        await writeOut(`${JSON.stringify(record)}\n`, progress);
      }
    }
    progress.clear();
    if (renderer) {
      renderer.end();
      await writeOut(renderer.take(), progress);
    }
    if (!verifyOk) process.exitCode = EXIT_PROBLEMS;
  } catch (error) {
    progress.clear();
    if (renderer) {
      renderer.flush();
      await writeOut(renderer.take(), progress);
    }
    say(errorMessage(error));
    process.exitCode = EXIT_ERROR;
  } finally {
    await stopped?.close();
  }
}

/** A line on stderr. Errors may quote what a client chose (a client id, a topic): escaped, as in the log. */
function say(message: string): void {
  process.stderr.write(`broker-admin: ${escapeControls(message)}\n`);
}

function display(path: string): string {
  const shown = relative(process.cwd(), path);
  return shown === '' || shown.startsWith('..') ? path : shown;
}

/** Writes to stdout, waiting when the pipe is full: a big dump never piles up in memory. */
function writeOut(text: string, progress: TtyProgress): Promise<void> {
  progress.clear();
  if (process.stdout.write(text)) return Promise.resolve();
  return new Promise((resolveDrain) => process.stdout.once('drain', () => resolveDrain()));
}

/** A counter on stderr that updates in place, only when stderr is a terminal. */
class TtyProgress {
  readonly #enabled = process.stderr.isTTY === true;
  #shown = false;
  #last = 0;

  readonly update: Progress = (label, count) => {
    if (!this.#enabled) return;
    const now = Date.now();
    if (now - this.#last < 100) return;
    this.#last = now;
    this.#shown = true;
    process.stderr.write(`\r\u001b[K${label}: ${count}`);
  };

  clear(): void {
    if (!this.#shown) return;
    this.#shown = false;
    process.stderr.write('\r\u001b[K');
  }
}
