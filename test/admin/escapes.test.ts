/**
 * Control characters a client chose never reach the operator's terminal: broker-admin's readable
 * output escapes them in client ids, filters, topics, user names and payloads (as the log does),
 * so an escape sequence cannot clear the screen and a newline cannot forge a row; `--json` keeps
 * the exact strings. The hostile strings are stored by real clients (raw mqtt-packet sockets)
 * through bin/broker.js; the escaping rules themselves are checked as properties.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { keys } from '../../src/store/key-layout.js';
import { encode } from '../../src/store/codec.js';
import { escapeControls, printable, quoted } from '../../src/text-escape.js';
import { BrokerProcess, makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { ofType, runAdmin, withStore, type AdminRun } from './fixture.js';

/** What must never be printed raw (a newline only as the end of a line of ours). */
const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/u;

/** Any UTF-16 text, lone surrogates included, with the dangerous characters frequent. */
const anyText = fc.oneof(
  fc.string({ unit: 'binary' }),
  fc.array(fc.integer({ min: 0, max: 0xffff })).map((units) => String.fromCharCode(...units)),
  fc.array(fc.constantFrom('a', ' ', '\\', '"', '\n', '\t', '\u001b', '\u007f', '\u009b', '\u202e', '\u2028', '\u200b', '\ud800', '\udc00', '😀')).map((chars) => chars.join('')),
);

describe('the escaping rules (properties)', () => {
  it('quoted: valid JSON that parses back to the text, with nothing unsafe in it; what JSON.stringify gives when it escapes enough', () => {
    fc.assert(
      fc.property(anyText, (text) => {
        const shown = quoted(text);
        expect(JSON.parse(shown)).toBe(text);
        expect(shown).not.toMatch(UNSAFE);
        if (!/[\u007f-\u009f\p{Cf}\p{Zl}\p{Zp}]/u.test(text)) expect(shown).toBe(JSON.stringify(text));
      }),
      { numRuns: 2000 },
    );
  });

  it('printable: nothing unsafe, and it reads back to exactly the text (so two texts never look the same)', () => {
    fc.assert(
      fc.property(anyText, (text) => {
        const shown = printable(text);
        expect(shown).not.toMatch(UNSAFE);
        expect(JSON.parse(`"${shown.replaceAll('"', '\\"')}"`)).toBe(text);
      }),
      { numRuns: 2000 },
    );
  });

  it('escapeControls: nothing unsafe; a line without unsafe characters stays as it is', () => {
    fc.assert(
      fc.property(anyText, (text) => {
        const shown = escapeControls(text);
        expect(shown).not.toMatch(UNSAFE);
        if (!UNSAFE.test(text)) expect(shown).toBe(text);
      }),
      { numRuns: 2000 },
    );
  });

  it('examples', () => {
    expect(printable('evil\u001b[2J\nrow\\')).toBe('evil\\u001b[2J\\nrow\\\\');
    expect(quoted('a"\u009b31m\u202e')).toBe('"a\\"\\u009b31m\\u202e"');
    expect(escapeControls('client "x\u007f" said \\ hi\r\n')).toBe('client "x\\u007f" said \\ hi\\r\\n');
    expect(printable('😀 \ud83d')).toBe('😀 \\ud83d');
  });
});

// What a hostile client stores: a client id that clears the screen and forges a row, filters with
// an OSC title sequence, a tab and a C1 CSI, a topic with DEL, a line separator and a right-to-left
// override, a user name with an escape and a newline, and a payload with line breaks, a tab, a C1
// CSI and invisible characters.
const CLIENT_ID = 'evil\u001b[2J\u001b[H\nforged  persistent  no';
const USER = 'u\u001b[7m\nroot';
const FILTERS = ['x/\u001b]0;owned\u0007/#', 'tab\there/+', 'c1\u009b31m/#'];
const RETAINED_TOPIC = 'x/\u001b]0;owned\u0007/r\u007f\u2028\u202egnp.exe';
const QUEUED_TOPIC = 'c1\u009b31m/q\r\n';
// (A payload with ESC or DEL is shown as hex anyway: records.ts takes it for binary.)
const PAYLOAD = 'line1\r\nline2\ttab\u009b31m\u202e\u2028end';

/** How the readable output shows them. */
const SHOWN_ID = 'evil\\u001b[2J\\u001b[H\\nforged  persistent  no';
const SHOWN_USER = 'u\\u001b[7m\\nroot';
const SHOWN_RETAINED_TOPIC = 'x/\\u001b]0;owned\\u0007/r\\u007f\\u2028\\u202egnp.exe';
const SHOWN_PAYLOAD = '"line1\\r\\nline2\\ttab\\u009b31m\\u202e\\u2028end"';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function session(broker: BrokerProcess, connect: { clientId: string; clean: boolean; username?: string }): Promise<RawClient> {
  const { client, connack } = await RawClient.session(broker.port, connect);
  cleanups.push(() => client.close());
  expect(connack.returnCode).toBe(0);
  return client;
}

async function publish1(client: RawClient, messageId: number, topic: string, payload: string, retain: boolean): Promise<void> {
  client.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, messageId, retain, dup: false });
  expect((await client.next('puback')).messageId).toBe(messageId);
}

/** A broker whose store holds the hostile session (offline, one message queued) and retained message. */
async function hostileStore(): Promise<{ dataDir: string; broker: BrokerProcess }> {
  const dataDir = makeDataDir('broker-escapes-');
  cleanups.push(() => removeDataDir(dataDir));
  const broker = await BrokerProcess.start(dataDir);
  cleanups.push(async () => {
    if (broker.child.exitCode === null && broker.child.signalCode === null) broker.child.kill('SIGKILL');
    await broker.exited;
  });
  const publisher = await session(broker, { clientId: 'publisher', clean: true });
  await publish1(publisher, 1, RETAINED_TOPIC, PAYLOAD, true);

  // No password file: on loopback the user name is taken as given and becomes the session's owner.
  const hostile = await session(broker, { clientId: CLIENT_ID, clean: false, username: USER });
  hostile.send({ cmd: 'subscribe', messageId: 1, subscriptions: FILTERS.map((topic) => ({ topic, qos: 1 as const })) });
  expect((await hostile.next('suback')).granted).toEqual([1, 1, 1]);
  const retained = await hostile.next('publish');
  expect(retained.topic).toBe(RETAINED_TOPIC);
  hostile.send({ cmd: 'puback', messageId: retained.messageId! });
  await hostile.roundTrip();
  await hostile.disconnect();
  await publish1(publisher, 2, QUEUED_TOPIC, PAYLOAD, false);
  await publisher.disconnect();
  return { dataDir, broker };
}

/** The readable output: no unsafe character but the line ends, nothing on stderr either. */
function expectClean(run: AdminRun): string[] {
  expect(run.code, run.stderr).toBe(0);
  expect(run.stdout.replaceAll('\n', '')).not.toMatch(UNSAFE);
  expect(run.stderr.replaceAll('\n', '')).not.toMatch(UNSAFE);
  return run.stdout.split('\n');
}

/** The rows of the table titled `title`: the lines after its header, up to the next line that is not a row. */
function tableRows(lines: string[], title: string, header: RegExp): string[] {
  const start = lines.indexOf(title);
  expect(start, `no table ${title}`).toBeGreaterThanOrEqual(0);
  expect(lines[start + 1]).toMatch(header);
  const rows: string[] = [];
  for (const line of lines.slice(start + 2)) {
    if (line === '' || /^[A-Z][a-z]/.test(line)) break;
    rows.push(line);
  }
  return rows;
}

async function readableCommands(dataDir: string): Promise<void> {
  const data = ['--data', dataDir];
  // sessions: one row for the one session, its id, filters and owner escaped.
  const sessions = expectClean(await runAdmin(['sessions', ...data]));
  const [row] = tableRows(sessions, 'Sessions', /^CLIENT\s+SESSION/);
  expect(tableRows(sessions, 'Sessions', /^CLIENT/)).toHaveLength(1);
  expect(row!.startsWith(`${SHOWN_ID}  persistent  no  `)).toBe(true);
  expect(row).toContain('tab\\there/+ (1)');
  expect(row).toContain('c1\\u009b31m/# (1)');
  expect(row).toContain(', … (+1)'); // the third filter: the cell is cut at its width, as for any session
  expect(row!.endsWith(`  ${SHOWN_USER}`)).toBe(true);

  // dump --messages: the sessions, the queue (its title holds the client id), the retained message.
  const dump = expectClean(await runAdmin(['dump', '--messages', ...data]));
  expect(tableRows(dump, 'Sessions', /^CLIENT/)).toEqual([row]);
  const queue = tableRows(dump, `Queue of ${SHOWN_ID}`, /^SEQ\s+STATE/);
  expect(queue).toHaveLength(1);
  expect(queue[0]).toMatch(/^\d+\s+queued\s+-\s+1\s+no\s+c1\\u009b31m\/q\\r\\n\s+\d+\s+"line1\\r\\nline2/);
  expect(queue[0]!.endsWith(SHOWN_PAYLOAD)).toBe(true);
  const retained = tableRows(dump, 'Retained messages', /^TOPIC\s+QOS/);
  expect(retained).toHaveLength(1);
  expect(retained[0]!.startsWith(`${SHOWN_RETAINED_TOPIC}  1`)).toBe(true);
  expect(retained[0]!.endsWith(SHOWN_PAYLOAD)).toBe(true);

  // session show: the client id comes from the command line, its session as above.
  const show = expectClean(await runAdmin(['session', 'show', CLIENT_ID, ...data]));
  expect(tableRows(show, 'Sessions', /^CLIENT/)).toEqual([row]);
  expect(tableRows(show, `Queue of ${SHOWN_ID}`, /^SEQ/)).toEqual(queue);

  // retained list, with a filter that holds an escape sequence itself.
  for (const filter of [[], ['x/\u001b]0;owned\u0007/#']]) {
    const list = expectClean(await runAdmin(['retained', 'list', ...filter, ...data]));
    expect(tableRows(list, 'Retained messages', /^TOPIC/)).toEqual(retained);
  }
  // An error that quotes what the operator typed: one line on stderr, escaped.
  const unknown = await runAdmin(['session', 'show', `${CLIENT_ID}?`, ...data]);
  expect(unknown.code).toBe(1);
  expect(unknown.stderr).toMatch(/^broker-admin: there is no session for client id "evil\\u001b\[2J\\u001b\[H\\nforged {2}persistent {2}no\?"\n$/m);
}

async function jsonIsExact(dataDir: string): Promise<void> {
  const data = ['--data', dataDir, '--json'];
  const [stored] = ofType<{ clientId: string; owner: string; subscriptions: Array<{ filter: string }> }>(await runAdmin(['sessions', ...data]), 'session');
  expect(stored).toMatchObject({ clientId: CLIENT_ID, owner: USER });
  expect(stored!.subscriptions.map(({ filter }) => filter).sort()).toEqual([...FILTERS].sort());
  const dump = await runAdmin(['dump', '--messages', ...data]);
  expect(ofType(dump, 'message')).toMatchObject([{ clientId: CLIENT_ID, topic: QUEUED_TOPIC, payload: { encoding: 'utf8', data: PAYLOAD } }]);
  expect(ofType(dump, 'retained')).toMatchObject([{ topic: RETAINED_TOPIC, payload: { encoding: 'utf8', data: PAYLOAD } }]);
}

describe('broker-admin readable output', { timeout: 120_000 }, () => {
  it('escapes what clients chose, running and stopped: no control character on the terminal, one row per record; --json stays exact', async () => {
    const { dataDir, broker } = await hostileStore();
    await readableCommands(dataDir);
    await jsonIsExact(dataDir);
    const { code } = await broker.stop();
    expect(code, broker.output).toBe(0);
    await readableCommands(dataDir);
    await jsonIsExact(dataDir);
  });

  it('verify: a damaged key holding a hostile client id and filter is one escaped row', async () => {
    const { dataDir, broker } = await hostileStore();
    await broker.stop();
    await withStore(`${dataDir}/store`, (db) => db.put(keys.subscription(`ghost\n${CLIENT_ID}`, FILTERS[0]!), encode({ q: 1 })));
    const run = await runAdmin(['verify', '--data', dataDir]);
    expect(run.code).toBe(2);
    expect(run.stdout.replaceAll('\n', '')).not.toMatch(UNSAFE);
    const lines = run.stdout.split('\n');
    expect(lines).toHaveLength(5);
    expect(lines[0]).toBe('Problems');
    expect(lines[1]).toMatch(/^KEY\s+PROBLEM\s+DETAIL$/);
    expect(lines[2]).toMatch(/^b␀ghost\\nevil\\u001b\[2J\\u001b\[H\\nforged {2}persistent {2}no␀x\/\\u001b]0;owned\\u0007\/# +no-session +/);
    expect(lines.slice(3)).toEqual([expect.stringMatching(/^verify: 1 problem in \d+ keys$/), '']);
  });

  it('dropping the session and clearing the retained message: one escaped line each', async () => {
    const { dataDir } = await hostileStore();
    const drop = await runAdmin(['session', 'drop', CLIENT_ID, '--data', dataDir]);
    expect(expectClean(drop)).toEqual([`dropped the session of "${SHOWN_ID}"`, '']);
    const clear = await runAdmin(['retained', 'clear', RETAINED_TOPIC, '--data', dataDir]);
    expect(expectClean(clear)).toEqual([`cleared the retained message of "${SHOWN_RETAINED_TOPIC}"`, '']);
  });
});
