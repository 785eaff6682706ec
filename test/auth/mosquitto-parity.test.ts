/**
 * The same ACL file and the same users, given to the real Mosquitto 2.0 (/usr/sbin/mosquitto, as
 * a child process) and to this broker: every client of a table subscribes or publishes on both,
 * and what each subscriber receives must be the same. MQTT 3.1.1 cannot refuse a PUBLISH
 * [MQTT-3.3.5-2] and Mosquitto grants every SUBSCRIBE (its ACL filters what is delivered), so the
 * comparison is of deliveries: retained and live messages per subscriber, and which PUBLISHes of
 * each client reach a reader allowed everything.
 *
 * The file holds only what Mosquitto accepts (no `client` sections, no `subscribe`), and client
 * ids and user names where the two brokers differ on purpose (a `/` or a leading `$` in a value
 * substituted into a pattern; README, "The ACL file") are left to acl.test.ts.
 *
 * No sleeps: a subscriber has everything once the marker published after all the rest reaches it.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { setPassword } from '../../src/auth/password-file.js';
import { startBroker } from '../helpers/in-process.js';
import { RawClient } from '../helpers/raw-client.js';

const MOSQUITTO = '/usr/sbin/mosquitto';
const MOSQUITTO_PASSWD = '/usr/bin/mosquitto_passwd';

const PASSWORDS: Record<string, string> = { alice: 'a-secret', bob: 'b-secret', carol: 'c-secret', 'x+y': 'x-secret', root: 'r-secret' };

const ACL = `# Anonymous clients (no user name): the lines before the first user line.
topic read public/#
topic deny public/private/#
topic readwrite anon/#
topic shared/room
topic read $app/status
topic read done/#
user alice
topic readwrite sensors/#
topic deny sensors/secret/#
topic read $app/#
topic write inbox/+
topic read with space/x
user bob
topic read #
topic deny own/#
user x+y
topic read public/#
topic read done/#
user root
topic readwrite #
topic readwrite $app/#
# Patterns: every client, after its own rules; carol has no section, so only these.
pattern readwrite devices/%c/#
pattern read users/%u/#
pattern deny public/%c/#
pattern read sensors/%u/#
pattern deny sensors/+/secret
pattern read own/%u
pattern read d/%c-x/#
pattern read done/%c
pattern read +/%c
pattern write inbox/%u
`;

interface Identity {
  /** Client id prefix; rows add a number. */
  name: string;
  user?: string;
}

/** Anonymous clients, one whose client id holds `+` (no pattern applies to it), and users. */
const READERS: Identity[] = [{ name: 'anon' }, { name: 'dev+' }, { name: 'alice', user: 'alice' }, { name: 'bob', user: 'bob' }, { name: 'carol', user: 'carol' }, { name: 'xy', user: 'x+y' }];
const FILTERS = ['#', '+/+', 'public/#', 'sensors/#', 'devices/+/cmd', '$app/#', 'users/#', 'own/#', 'd/#', 'with space/x', 'shared/room', '+/+/secret'];

interface Row {
  clientId: string;
  user: string | undefined;
}

const readRows: Array<Row & { filter: string }> = READERS.flatMap(({ name, user }) =>
  FILTERS.map((filter, index) => ({ clientId: `${name}-${index}`, user, filter })),
);

/** Topics the root client publishes (retained first, then live): fixed ones and each reader's own. */
const RETAINED = ['public/a', 'public/private/x', 'sensors/t1', 'sensors/secret/k', '$app/status', 'users/carol/x', 'own/bob'];
const LIVE = [
  ...RETAINED,
  'anon/x',
  'shared/room',
  'sensors/alice/secret',
  'sensors/bob/secret',
  'sensors/carol/x',
  'sensors/carol/secret',
  'users/alice/x',
  'own/carol',
  '$app/other',
  'with space/x',
  'other/x',
  ...readRows
    .filter(({ clientId }) => !clientId.includes('+'))
    .flatMap(({ clientId }) => [`devices/${clientId}/cmd`, `public/${clientId}/x`, `d/${clientId}-x/1`, `any/${clientId}`, `$app/${clientId}`]),
];

/** Each client publishes one topic; the root observer, who may read everything, sees what got through. */
const WRITERS: Identity[] = [{ name: 'anon' }, { name: 'dev+' }, { name: 'alice', user: 'alice' }, { name: 'bob', user: 'bob' }, { name: 'carol', user: 'carol' }, { name: 'xy', user: 'x+y' }];
const WRITE_TOPICS = (clientId: string) => ['anon/x', 'public/x', 'shared/room', '$app/status', 'sensors/t', 'sensors/secret/k', `devices/${clientId}/s`, 'inbox/alice', 'inbox/carol', 'users/alice/x', 'other/x'];
const writeRows: Array<Row & { topic: string }> = WRITERS.flatMap(({ name, user }) =>
  WRITE_TOPICS(name).map((topic, index) => ({ clientId: `w-${name}-${index}`, user, topic: topic.replace(`devices/${name}/`, `devices/w-${name}-${index}/`) })),
).filter(({ topic }) => !/[+#]/.test(topic));

interface Observed {
  /** Per read row: what it received, `retained <topic>` or `<topic>`, sorted. */
  reads: Record<string, string[]>;
  /** The write rows whose PUBLISH reached the observer. */
  writes: string[];
}

const label = (row: Row & { filter?: string; topic?: string }) => `${row.user ?? 'anonymous'} ${row.clientId} ${row.filter ?? row.topic}`;

async function connect(port: number, row: Row): Promise<RawClient> {
  const { client, connack } = await RawClient.session(port, {
    clientId: row.clientId,
    ...(row.user === undefined ? {} : { username: row.user, password: Buffer.from(PASSWORDS[row.user]!) }),
  });
  if (connack.returnCode !== 0) throw new Error(`${label(row)}: CONNACK ${connack.returnCode}`);
  cleanups.push(() => client.close());
  return client;
}

/** Publishes at QoS 1 without waiting between messages; resolves once every PUBACK is in. */
async function publishAll(client: RawClient, messages: Array<{ topic: string; payload: string; retain?: boolean }>): Promise<void> {
  messages.forEach(({ topic, payload, retain = false }, index) => client.send({ cmd: 'publish', topic, payload, qos: 1, messageId: index + 1, retain, dup: false }));
  await client.take('puback', messages.length);
}

/** The topic that tells a subscriber it has everything: readable through `pattern read done/%c`, or `done/#` for ids with `+`. */
const marker = (clientId: string) => `done/${clientId.replaceAll('+', 'plus')}`;

/** Everything a subscriber receives up to its marker, markers left out. */
async function receivedUntilMarker(client: RawClient, clientId: string): Promise<string[]> {
  const seen = new Set<string>();
  for (;;) {
    const publish = await client.next('publish');
    if (publish.topic === marker(clientId)) return [...seen].sort();
    if (!publish.topic.startsWith('done/')) seen.add(`${publish.retain ? 'retained ' : ''}${publish.topic}`);
  }
}

/** Runs the whole table against a broker on `port`. */
async function observe(port: number): Promise<Observed> {
  const root = await connect(port, { clientId: 'root', user: 'root' });
  await publishAll(root, RETAINED.map((topic) => ({ topic, payload: 'retained', retain: true })));

  const readers = await Promise.all(
    readRows.map(async (row) => {
      const client = await connect(port, row);
      client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: row.filter, qos: 0 }, { topic: marker(row.clientId), qos: 0 }] });
      await client.next('suback');
      return { row, client };
    }),
  );
  const received = Promise.all(readers.map(async ({ row, client }) => [label(row), await receivedUntilMarker(client, row.clientId)] as const));
  await publishAll(root, [...LIVE.map((topic) => ({ topic, payload: 'live' })), ...readRows.map(({ clientId }) => ({ topic: marker(clientId), payload: 'end' }))]);
  const reads = Object.fromEntries(await received);

  const observer = await connect(port, { clientId: 'observer', user: 'root' });
  observer.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 0 }, { topic: '$app/#', qos: 0 }] });
  await observer.next('suback');
  for (const [index, row] of writeRows.entries()) {
    const writer = await connect(port, row);
    await publishAll(writer, [{ topic: row.topic, payload: `w:${index}` }]);
    await writer.close();
  }
  await publishAll(root, [{ topic: 'done/observer', payload: 'end' }]);
  const through = await receivedPayloads(observer);
  return { reads, writes: through.map((payload) => label(writeRows[Number(payload.slice(2))]!)).sort() };
}

/** The write-row payloads (`w:<index>`) the observer receives up to its marker. */
async function receivedPayloads(client: RawClient): Promise<string[]> {
  const payloads: string[] = [];
  for (;;) {
    const publish = await client.next('publish');
    if (publish.topic === 'done/observer') return payloads;
    const payload = publish.payload.toString();
    if (payload.startsWith('w:')) payloads.push(payload);
  }
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'broker-parity-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Mosquitto on a free loopback port with the ACL and the users (its own password file format). */
async function startMosquitto(aclText: string): Promise<number> {
  const dir = tempDir();
  const passwordFile = join(dir, 'mosquitto-passwd');
  writeFileSync(passwordFile, '', { mode: 0o600 });
  for (const [user, password] of Object.entries(PASSWORDS)) execFileSync(MOSQUITTO_PASSWD, ['-b', passwordFile, user, password]);
  writeFileSync(join(dir, 'acl'), aclText);
  const port = await freePort();
  const config = join(dir, 'mosquitto.conf');
  writeFileSync(
    config,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      `password_file ${passwordFile}`,
      `acl_file ${join(dir, 'acl')}`,
      'persistence false',
      // Run as root, Mosquitto would switch to the user `mosquitto`, who cannot read this directory.
      `user ${userInfo().username}`,
      'log_dest stderr',
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn(MOSQUITTO, ['-c', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  cleanups.push(() => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    return new Promise((resolve) => child.once('close', resolve));
  });
  await new Promise<void>((resolve, reject) => {
    let output = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (/mosquitto version [\d.]+ running/.test(output)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`mosquitto exited (${code}) before running:\n${output}`)));
  });
  return port;
}

async function startOurs(aclText: string): Promise<number> {
  const dir = tempDir();
  const passwordFile = join(dir, 'passwd');
  for (const [user, password] of Object.entries(PASSWORDS)) await setPassword(passwordFile, user, password);
  writeFileSync(join(dir, 'acl'), aclText);
  const running = await startBroker({ dataDir: dir, passwordFile, aclFile: join(dir, 'acl') });
  cleanups.push(() => running.stop());
  return running.port;
}

describe('the same ACL file means the same on Mosquitto 2.0 and here', { timeout: 120_000 }, () => {
  it('Mosquitto and its password tool are installed (apt-get install mosquitto)', () => {
    expect(existsSync(MOSQUITTO), MOSQUITTO).toBe(true);
    expect(existsSync(MOSQUITTO_PASSWD), MOSQUITTO_PASSWD).toBe(true);
  });

  it('every subscriber of the table receives the same messages, every publisher reaches the same readers', async () => {
    const mosquitto = await observe(await startMosquitto(ACL));
    const ours = await observe(await startOurs(ACL));
    expect(ours.reads).toEqual(mosquitto.reads);
    expect(ours.writes).toEqual(mosquitto.writes);

    // The table is not vacuous: the rules it is about show in what Mosquitto delivered.
    const reads = mosquitto.reads;
    // Anonymous rules are for anonymous clients only: anon reads public/a, alice and bob's own rules decide for them.
    expect(reads['anonymous anon-0 #']).toContain('retained public/a');
    expect(reads['alice alice-0 #']).not.toContain('public/a');
    expect(reads['alice alice-0 #']).toContain('sensors/alice/secret');
    // A pattern deny does not take back what the client's own rules allow...
    expect(reads['anonymous anon-2 public/#']).toContain('public/anon-2/x');
    expect(reads['bob bob-3 sensors/#']).toContain('sensors/bob/secret');
    // ...but denies among the patterns, and an own deny beats a pattern allow.
    expect(reads['carol carol-3 sensors/#']).toEqual(['sensors/carol/x']);
    expect(reads['bob bob-7 own/#']).toEqual([]);
    expect(reads['carol carol-7 own/#']).toEqual(['own/carol']);
    // A + in the client id or the user name: no pattern at all, own rules still.
    expect(reads['anonymous anon-4 devices/+/cmd']).toEqual(['devices/anon-4/cmd']);
    expect(reads['carol carol-4 devices/+/cmd']).toEqual(['devices/carol-4/cmd']);
    expect(reads['anonymous dev+-4 devices/+/cmd']).toEqual([]);
    expect(reads['x+y xy-4 devices/+/cmd']).toEqual([]);
    expect(reads['x+y xy-2 public/#']).toContain('retained public/private/x');
    // A pattern starting with a wildcard reaches no $ topic [MQTT-4.7.2-1]: +/%c gives any/<id>, not $app/<id>.
    expect(reads['carol carol-1 +/+']).toEqual(['any/carol-1', 'own/carol']);
    expect(reads['carol carol-5 $app/#']).toEqual([]);
    expect(reads['anonymous dev+-2 public/#']).not.toContain('public/private/x');
    expect(mosquitto.writes.length).toBeGreaterThan(5);
  });
});
