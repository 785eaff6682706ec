/**
 * Authentication and access control over real TCP: the password file (CONNACK 0x04), anonymous
 * clients and listeners (0x05), the ACL on SUBSCRIBE (0x80), PUBLISH (acknowledged, dropped,
 * counted), per-delivery read checks and wills, session ownership, and reloading the files while
 * the broker runs (on change, on SIGHUP; bin/broker.js as a child process).
 *
 * No sleeps: absence is shown by a marker published afterwards arriving next, and reloads by the
 * broker's own log line.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import type { IPublishPacket } from 'mqtt-packet';
import mqttPacket from 'mqtt-packet';
import { afterEach, describe, expect, it } from 'vitest';
import { setPassword } from '../../src/auth/password-file.js';
import type { Logger } from '../../src/logger.js';
import { BrokerProcess, makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { Clients, receiveAndAck } from '../helpers/wait.js';
import { RawClient } from '../helpers/raw-client.js';

const ADMIN_BIN = fileURLToPath(new URL('../../bin/broker-admin.js', import.meta.url));

const PASSWORDS: Record<string, string> = { alice: 'wonderland', bob: 'builder', carol: 'christmas' };

const ACL = `
user alice
topic readwrite sensors/#
topic deny sensors/secret/#
topic subscribe alerts/+
topic write wills/alice
user bob
topic subscribe #
topic read sensors/public/#
user carol
topic read #
pattern readwrite devices/%c/#
pattern read users/%u/inbox
`;

/** A logger that keeps its lines, so a test can count the warnings. */
class RecordingLog implements Logger {
  readonly lines: string[] = [];
  info = (message: string) => void this.lines.push(`info ${message}`);
  warn = (message: string) => void this.lines.push(`warn ${message}`);
  error = (message: string) => void this.lines.push(`error ${message}`);
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function dataDir(): string {
  const dir = makeDataDir('broker-auth-');
  cleanups.push(() => removeDataDir(dir));
  return dir;
}

async function writePasswords(file: string, users: string[] = Object.keys(PASSWORDS)): Promise<void> {
  for (const user of users) await setPassword(file, user, PASSWORDS[user]!);
}

interface Setup {
  running: RunningBroker;
  clients: Clients;
  log: RecordingLog;
  dir: string;
}

/** An in-process broker on loopback with the password file (alice, bob, carol) and, unless told otherwise, the ACL above. */
async function secured(options: { acl?: string | false; dir?: string } = {}): Promise<Setup> {
  const dir = options.dir ?? dataDir();
  const passwordFile = join(dir, 'passwd');
  if (!options.dir) await writePasswords(passwordFile);
  const log = new RecordingLog();
  let aclFile: string | undefined;
  if (options.acl !== false) {
    aclFile = join(dir, 'acl');
    if (!options.dir) writeFileSync(aclFile, options.acl ?? ACL);
  }
  const running = await startBroker({ dataDir: dir, passwordFile, ...(aclFile ? { aclFile } : {}), log });
  const clients = new Clients(running.port);
  cleanups.push(() => running.stop());
  cleanups.push(() => clients.closeAll());
  return { running, clients, log, dir };
}

function login(user: string, clientId = `${user}-${Math.random().toString(36).slice(2)}`) {
  return { clientId, username: user, password: Buffer.from(PASSWORDS[user]!) };
}

/** The non-loopback address of this machine, if it has one; else all interfaces (reached through 127.0.0.1). */
function exposedAddress(): { bind: string; connect: string } {
  for (const entries of Object.values(networkInterfaces())) {
    for (const entry of entries ?? []) {
      if (entry.family === 'IPv4' && !entry.internal) return { bind: entry.address, connect: entry.address };
    }
  }
  return { bind: '0.0.0.0', connect: '127.0.0.1' };
}

async function expectRefused(client: RawClient, returnCode: number): Promise<void> {
  const connack = await client.next('connack');
  // A refusal carries session present 0 [MQTT-3.2.2-4] and is followed by the close [MQTT-3.2.2-5].
  expect({ returnCode: connack.returnCode, sessionPresent: connack.sessionPresent }).toEqual({ returnCode, sessionPresent: false });
  await client.closed;
}

async function subscribe(client: RawClient, filters: Array<[string, 0 | 1 | 2]>, messageId = 1): Promise<number[]> {
  client.send({ cmd: 'subscribe', messageId, subscriptions: filters.map(([topic, qos]) => ({ topic, qos })) });
  const suback = await client.next('suback');
  expect(suback.messageId).toBe(messageId);
  return suback.granted as number[];
}

async function publishQos1(client: RawClient, messageId: number, topic: string, payload: string, retain = false): Promise<void> {
  client.send({ cmd: 'publish', topic, payload, qos: 1, messageId, retain, dup: false });
  expect((await client.next('puback')).messageId).toBe(messageId);
}

const summary = (publish: IPublishPacket) => `${publish.topic}=${publish.payload.toString()}`;

describe('authentication', { timeout: 60_000 }, () => {
  it('a wrong password or an unknown user gets CONNACK 0x04 and the close (raw and MQTT.js); the right password is accepted', async () => {
    const { clients, running } = await secured({ acl: false });
    for (const connect of [
      { clientId: 'w1', username: 'alice', password: Buffer.from('wonderlan') },
      { clientId: 'w2', username: 'alice' },
      { clientId: 'w3', username: 'mallory', password: Buffer.from('wonderland') },
    ]) {
      const client = await clients.socket();
      client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, ...connect });
      await expectRefused(client, 0x04);
    }
    const refused = await mqtt
      .connectAsync(`mqtt://127.0.0.1:${running.port}`, { username: 'bob', password: 'nope', reconnectPeriod: 0 })
      .then(
        () => undefined,
        (error: { code?: number }) => error,
      );
    expect(refused?.code).toBe(4);
    const client = await clients.mqtt({ username: 'bob', password: 'builder' });
    expect(client.connected).toBe(true);
    const { connack } = await clients.raw(login('alice'));
    expect(connack.returnCode).toBe(0);
  });

  it('nothing a client sent after a refused CONNECT is processed [MQTT-3.1.4-5]', async () => {
    const { clients } = await secured({ acl: false });
    const intruder = await clients.socket();
    intruder.sendBytes(
      Buffer.concat([
        mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: 'x', username: 'alice', password: Buffer.from('guess') }),
        mqttPacket.generate({ cmd: 'publish', topic: 'sensors/t', payload: Buffer.from('forged'), qos: 1, messageId: 1, retain: true, dup: false }),
      ]),
    );
    await expectRefused(intruder, 0x04);
    expect(intruder.received).toEqual([]);
    // Nothing was retained: a new subscription gets no retained message, the marker comes first.
    const reader = await clients.rawAccepted(login('carol'));
    expect(await subscribe(reader, [['sensors/#', 1]])).toEqual([1]);
    const writer = await clients.rawAccepted(login('alice'));
    await publishQos1(writer, 1, 'sensors/marker', 'm');
    expect((await receiveAndAck(reader, 1)).map(summary)).toEqual(['sensors/marker=m']);
  });

  it('anonymous clients: 0x05 on a non-loopback listener, accepted on loopback; a verified user is accepted on both', async () => {
    const address = exposedAddress();
    const dir = dataDir();
    await writePasswords(join(dir, 'passwd'), ['alice']);
    const running = await startBroker({ dataDir: dir, passwordFile: join(dir, 'passwd'), listeners: [{ port: 0 }, { host: address.bind, port: 0 }] });
    cleanups.push(() => running.stop());
    const [loopback, exposed] = running.broker.addresses();
    const open = async (port: number, host: string, connect: Partial<mqttPacket.IConnectPacket>) => {
      const client = await RawClient.connect(port, host);
      cleanups.push(() => client.close());
      client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: '', ...connect });
      return client;
    };
    await expectRefused(await open(exposed!.port, address.connect, {}), 0x05);
    // A user name is checked there as anywhere: a wrong password is 0x04, the right one gets in.
    await expectRefused(await open(exposed!.port, address.connect, { username: 'alice', password: Buffer.from('wrong') }), 0x04);
    expect((await (await open(exposed!.port, address.connect, { username: 'alice', password: Buffer.from('wonderland') })).next('connack')).returnCode).toBe(0);
    expect((await (await open(loopback!.port, '127.0.0.1', {})).next('connack')).returnCode).toBe(0);
  });

  it('without a password file a user name is not verified: refused where anonymous clients are; allow_anonymous on a listener lets them in', async () => {
    const address = exposedAddress();
    const running = await startBroker({
      dataDir: dataDir(),
      listeners: [{ port: 0 }, { host: address.bind, port: 0 }, { host: address.bind, port: 0, allowAnonymous: true }],
    });
    cleanups.push(() => running.stop());
    const [, closed, open] = running.broker.addresses();
    const connack = async (port: number, connect: Partial<mqttPacket.IConnectPacket>) => {
      const client = await RawClient.connect(port, address.connect);
      cleanups.push(() => client.close());
      client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: '', ...connect });
      return (await client.next('connack')).returnCode;
    };
    expect(await connack(closed!.port, { username: 'alice', password: Buffer.from('anything') })).toBe(0x05);
    expect(await connack(closed!.port, {})).toBe(0x05);
    expect(await connack(open!.port, {})).toBe(0);
    expect(await connack(open!.port, { username: 'alice' })).toBe(0);
  });
});

describe('ACL', { timeout: 60_000 }, () => {
  it('SUBSCRIBE: 0x80 for each filter the ACL refuses, the granted QoS for the others, in order [MQTT-3.8.4-5]', async () => {
    const { clients } = await secured();
    const alice = await clients.rawAccepted(login('alice'));
    expect(
      await subscribe(alice, [
        ['sensors/#', 1],
        ['alerts/+', 2],
        ['other/#', 0],
        ['sensors/secret/#', 1],
        ['#', 0],
        ['alerts/fire', 1],
      ]),
    ).toEqual([1, 2, 0x80, 0x80, 0, 1]);
    // `#` is granted as Mosquitto grants it: what it delivers is what alice may read (sensors/…
    // without the secrets); `other/#` and the fully denied `sensors/secret/#` could deliver nothing.
    // An anonymous client (loopback) has no rules at all: refused everything.
    const anonymous = await clients.rawAccepted({ clientId: 'anon' });
    expect(await subscribe(anonymous, [['sensors/#', 0]])).toEqual([0x80]);
  });

  it("a Mosquitto file's anonymous rules (before the first user line) are for anonymous clients only: `topic read #` does not let alice read everything", async () => {
    const { clients } = await secured({ acl: 'topic read #\nuser alice\ntopic readwrite sensors/#\nuser carol\ntopic readwrite #\n' });
    const anonymous = await clients.rawAccepted({ clientId: 'anon' });
    const alice = await clients.rawAccepted(login('alice'));
    expect(await subscribe(anonymous, [['#', 1]])).toEqual([1]);
    expect(await subscribe(alice, [['#', 1]])).toEqual([1]);
    const carol = await clients.rawAccepted(login('carol'));
    await publishQos1(carol, 1, 'private/x', 'for anonymous readers');
    await publishQos1(carol, 2, 'sensors/t', 'for everyone here');
    expect((await receiveAndAck(anonymous, 2)).map(summary)).toEqual(['private/x=for anonymous readers', 'sensors/t=for everyone here']);
    expect((await receiveAndAck(alice, 1)).map(summary)).toEqual(['sensors/t=for everyone here']);
    await alice.roundTrip();
    expect(alice.received).toEqual([]);
  });

  it('a refused PUBLISH is acknowledged as usual (QoS 1 and 2) but reaches nobody [MQTT-3.3.5-2]; counted, one warning per burst', async () => {
    const { clients, running, log, dir } = await secured();
    const carol = await clients.rawAccepted(login('carol'));
    expect(await subscribe(carol, [['#', 2]])).toEqual([2]);
    const alice = await clients.rawAccepted(login('alice'));
    alice.send({ cmd: 'publish', topic: 'other/x', payload: 'q0', qos: 0, retain: false, dup: false });
    await publishQos1(alice, 1, 'other/x', 'q1', true);
    alice.send({ cmd: 'publish', topic: 'other/x', payload: 'q2', qos: 2, messageId: 2, retain: false, dup: false });
    expect((await alice.next('pubrec')).messageId).toBe(2);
    alice.send({ cmd: 'pubrel', messageId: 2 });
    expect((await alice.next('pubcomp')).messageId).toBe(2);
    await publishQos1(alice, 3, 'sensors/secret/key', 'hidden');
    await publishQos1(alice, 4, 'sensors/t1', 'allowed');
    expect((await receiveAndAck(carol, 1)).map(summary)).toEqual(['sensors/t1=allowed']);
    await carol.roundTrip();
    expect(carol.received).toEqual([]);
    expect(running.broker.counters.publishesRefused).toBe(4);
    expect(log.lines.filter((line) => line.startsWith('warn') && line.includes('refused by the ACL'))).toEqual([
      expect.stringContaining('PUBLISH on "other/x" refused by the ACL'),
      expect.stringContaining('PUBLISH on "sensors/secret/key" refused by the ACL'),
    ]);
    // Not retained either.
    const late = await clients.rawAccepted(login('carol'));
    expect(await subscribe(late, [['other/#', 1]])).toEqual([1]);
    await late.roundTrip();
    expect(late.received).toEqual([]);
    // broker-admin stats shows the counter of the running broker.
    const stats = await runAdmin(['stats', '--data', dir, '--json']);
    expect(stats.code, stats.stderr).toBe(0);
    const counters = stats.stdout
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .find((record) => record.type === 'counters');
    expect(counters).toMatchObject({ type: 'counters', publishesRefused: 4 });
    const human = await runAdmin(['stats', '--data', dir]);
    expect(human.stdout).toMatch(/PUBLISHes refused by the ACL\s+4/);
  });

  it('a wide subscription receives only what its owner may read, retained messages included', async () => {
    const { clients } = await secured();
    const alice = await clients.rawAccepted(login('alice'));
    await publishQos1(alice, 1, 'sensors/public/r', 'retained-public', true);
    await publishQos1(alice, 2, 'sensors/private/r', 'retained-private', true);
    const bob = await clients.rawAccepted(login('bob'));
    // subscribe # lets bob subscribe to anything; read sensors/public/# is all he receives.
    expect(await subscribe(bob, [['#', 1]])).toEqual([1]);
    expect((await receiveAndAck(bob, 1)).map(summary)).toEqual(['sensors/public/r=retained-public']);
    for (const [index, topic] of ['sensors/private/a', 'sensors/public/a', 'sensors/x', 'sensors/public/b'].entries()) {
      await publishQos1(alice, 10 + index, topic, String(index));
    }
    expect((await receiveAndAck(bob, 2)).map(summary)).toEqual(['sensors/public/a=1', 'sensors/public/b=3']);
    await bob.roundTrip();
    expect(bob.received).toEqual([]);
  });

  it('%c and %u patterns: each client its own devices/<client id>/#, each user its own users/<user>/inbox', async () => {
    const { clients } = await secured();
    const device = await clients.rawAccepted(login('alice', 'dev-1'));
    expect(await subscribe(device, [['devices/dev-1/#', 1], ['devices/dev-2/#', 1], ['users/alice/inbox', 1], ['users/bob/inbox', 1]])).toEqual([
      1, 0x80, 1, 0x80,
    ]);
    const other = await clients.rawAccepted(login('carol', 'dev-2'));
    expect(await subscribe(other, [['devices/dev-2/#', 1]])).toEqual([1]);
    await publishQos1(device, 1, 'devices/dev-2/cmd', 'not yours'); // refused: dev-1 may not write there
    await publishQos1(other, 1, 'devices/dev-1/cmd', 'not yours either');
    await publishQos1(device, 2, 'devices/dev-1/status', 'mine');
    await publishQos1(other, 2, 'devices/dev-2/status', 'mine too');
    expect((await receiveAndAck(device, 1)).map(summary)).toEqual(['devices/dev-1/status=mine']);
    expect((await receiveAndAck(other, 1)).map(summary)).toEqual(['devices/dev-2/status=mine too']);
  });

  it('a will is checked for write when it is published: refused (counted) or published', async () => {
    const { clients, running } = await secured();
    const carol = await clients.rawAccepted(login('carol'));
    expect(await subscribe(carol, [['#', 1]])).toEqual([1]);
    const refusedWill = await clients.rawAccepted({ ...login('alice'), will: { topic: 'other/will', payload: Buffer.from('gone'), qos: 1, retain: false } });
    await refusedWill.close();
    const allowedWill = await clients.rawAccepted({ ...login('alice'), will: { topic: 'wills/alice', payload: Buffer.from('gone'), qos: 1, retain: false } });
    await allowedWill.close();
    expect((await receiveAndAck(carol, 1)).map(summary)).toEqual(['wills/alice=gone']);
    expect(running.broker.counters.publishesRefused).toBe(1);
  });
});

describe('session ownership', { timeout: 60_000 }, () => {
  it("another user's (or an anonymous) CONNECT for a client id whose session belongs to alice gets 0x05 and touches nothing, live or stored, after a restart too", async () => {
    const first = await secured({ acl: false });
    const alice = await first.clients.rawAccepted({ ...login('alice', 'shared'), clean: false });
    expect(await subscribe(alice, [['sensors/#', 1]])).toEqual([1]);

    // Live: bob cannot take the session over; alice's connection stays up.
    const bob = await first.clients.socket();
    bob.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, ...login('bob', 'shared') });
    await expectRefused(bob, 0x05);
    await alice.roundTrip();
    expect(alice.isClosed).toBe(false);
    await alice.disconnect();

    // Stored: messages queue for alice's session while she is away.
    const writer = await first.clients.rawAccepted(login('carol'));
    await publishQos1(writer, 1, 'sensors/a', 'queued-1');
    for (const connect of [{ ...login('bob', 'shared'), clean: true }, { ...login('bob', 'shared'), clean: false }, { clientId: 'shared', clean: true }]) {
      const client = await first.clients.socket();
      client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, keepalive: 0, ...connect });
      await expectRefused(client, 0x05);
    }
    await publishQos1(writer, 2, 'sensors/a', 'queued-2');
    await first.clients.closeAll();
    await first.running.stop();

    // After a restart the owner is still alice: bob is refused, alice finds her session whole.
    const second = await secured({ acl: false, dir: first.dir });
    const again = await second.clients.socket();
    again.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, keepalive: 0, ...login('bob', 'shared') });
    await expectRefused(again, 0x05);
    const { client: back, connack } = await second.clients.raw({ ...login('alice', 'shared'), clean: false });
    expect({ returnCode: connack.returnCode, sessionPresent: connack.sessionPresent }).toEqual({ returnCode: 0, sessionPresent: true });
    expect((await receiveAndAck(back, 2)).map(summary)).toEqual(['sensors/a=queued-1', 'sensors/a=queued-2']);

    // broker-admin shows the owner.
    const show = await runAdmin(['session', 'show', 'shared', '--data', first.dir, '--json']);
    expect(show.code, show.stderr).toBe(0);
    expect(JSON.parse(show.stdout.split('\n')[1]!)).toMatchObject({ type: 'session', clientId: 'shared', owner: 'alice' });
  });
});

/** Runs bin/broker-admin.js to completion, with `input` on its stdin. */
function runAdmin(args: string[], input?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [ADMIN_BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdin.end(input ?? '');
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

/** Resolves when the broker's output (from now on) has a line matching `pattern`. */
function nextLine(broker: BrokerProcess, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const onData = (chunk: Buffer) => {
      seen += chunk.toString();
      const line = seen.split('\n').find((candidate) => pattern.test(candidate));
      if (line === undefined) return;
      broker.child.stdout!.off('data', onData);
      broker.child.stderr!.off('data', onData);
      resolve(line);
    };
    broker.child.stdout!.on('data', onData);
    broker.child.stderr!.on('data', onData);
    broker.child.once('exit', () => reject(new Error(`broker exited while waiting for ${pattern}:\n${broker.output}`)));
  });
}

describe('reload while running (bin/broker.js)', { timeout: 60_000 }, () => {
  async function startProcess(dir: string, args: string[]): Promise<BrokerProcess> {
    const broker = await BrokerProcess.start(dir, args);
    cleanups.push(async () => {
      if (broker.child.exitCode === null && broker.child.signalCode === null) broker.child.kill('SIGKILL');
      await broker.exited;
    });
    return broker;
  }

  async function connackOf(port: number, connect: Partial<mqttPacket.IConnectPacket>): Promise<{ client: RawClient; returnCode: number | undefined }> {
    const client = await RawClient.connect(port);
    cleanups.push(() => client.close());
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: '', ...connect });
    return { client, returnCode: (await client.next('connack')).returnCode };
  }

  it('broker-admin passwd add while the broker runs: the new user can connect once the broker reloaded the file by itself', async () => {
    const dir = dataDir();
    const file = join(dir, 'passwd');
    await writePasswords(file, ['alice']);
    const broker = await startProcess(dir, ['--password-file', file]);
    expect((await connackOf(broker.port, login('carol'))).returnCode).toBe(0x04);

    const reloaded = nextLine(broker, /password file .* reloaded: 2 users/);
    const added = await runAdmin(['passwd', 'add', 'carol', '--password-stdin', '--data', dir], `${PASSWORDS['carol']!}\n`);
    expect(added.code, added.stderr).toBe(0);
    expect(added.stderr).toBe(`broker-admin: added user "carol" in ${file}\n`);
    await reloaded;
    expect((await connackOf(broker.port, login('carol'))).returnCode).toBe(0);

    const removed = nextLine(broker, /password file .* reloaded: 1 users/);
    expect((await runAdmin(['passwd', 'remove', 'carol', '--file', file])).code).toBe(0);
    await removed;
    expect((await connackOf(broker.port, login('carol'))).returnCode).toBe(0x04);
    expect((await connackOf(broker.port, login('alice'))).returnCode).toBe(0);
  });

  it('SIGHUP reloads the ACL (a change the directory watch cannot see); a broken file keeps the rules in force and the broker serving', async () => {
    const dir = dataDir();
    // The ACL is a symlink to a file in another directory: a change of the target is not seen by
    // the watch on the link's directory, only SIGHUP picks it up.
    const elsewhere = join(dir, 'elsewhere');
    mkdirSync(elsewhere);
    const target = join(elsewhere, 'acl');
    writeFileSync(target, 'topic readwrite a/#\n');
    const link = join(dir, 'acl');
    symlinkSync(target, link);
    const broker = await startProcess(dir, ['--acl-file', link]);
    const { client, returnCode } = await connackOf(broker.port, { clientId: 'anon' });
    expect(returnCode).toBe(0);
    expect(await subscribe(client, [['a/#', 1], ['b/#', 1]])).toEqual([1, 0x80]);

    writeFileSync(target, 'topic readwrite b/#\n');
    expect(await subscribe(client, [['b/#', 1]], 2)).toEqual([0x80]);
    let reloaded = nextLine(broker, /ACL file .* reloaded: 1 rules/);
    broker.child.kill('SIGHUP');
    await reloaded;
    expect(await subscribe(client, [['b/#', 1], ['a/x', 1]], 3)).toEqual([1, 0x80]);

    writeFileSync(target, 'topic readwrite c/#\ntopic reed c/x\n');
    const failed = nextLine(broker, /ACL file not reloaded, the previous rules stay in force: .*acl:2: unknown access "reed"/);
    broker.child.kill('SIGHUP');
    await failed;
    expect(await subscribe(client, [['b/x', 1], ['c/#', 1]], 4)).toEqual([1, 0x80]);

    // The broken file stays broken until it is fixed: the broker keeps running on the old rules.
    writeFileSync(target, 'topic readwrite c/#\n');
    reloaded = nextLine(broker, /ACL file .* reloaded: 1 rules/);
    broker.child.kill('SIGHUP');
    await reloaded;
    expect(await subscribe(client, [['c/#', 1]], 5)).toEqual([1]);
    expect(broker.child.exitCode).toBeNull();
  });
});
