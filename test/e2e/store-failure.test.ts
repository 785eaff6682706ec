/**
 * Store writes failing under a running broker: the broker in process, real TCP, the real LevelDB
 * underneath with its writes made to fail on demand (test/helpers/disk-faults.ts), as a full disk
 * or an I/O error would. What was not stored is never acknowledged [MQTT-4.3.2-2] [MQTT-4.3.3-2];
 * the clients whose writes fail are disconnected and re-send; the others are served throughout;
 * once the disk is back everything goes on, across a restart too.
 *
 * No sleeps and no timed assertions: absence is shown by a marker message published afterwards
 * arriving next, or by a PINGREQ answered after everything sent before it was handled.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { IPublishPacket } from 'mqtt-packet';
import { afterEach, describe, expect, it } from 'vitest';
import type { Logger } from '../../src/logger.js';
import { createBroker, type Broker } from '../../src/server/broker.js';
import { LevelRepository } from '../../src/store/level-repository.js';
import { makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { DiskFaults, touches } from '../helpers/disk-faults.js';
import { RawClient } from '../helpers/raw-client.js';
import { acknowledge, subscribe, summary } from '../helpers/wait.js';

class LogLines implements Logger {
  readonly lines: string[] = [];
  info(message: string): void {
    this.lines.push(`info ${message}`);
  }
  warn(message: string): void {
    this.lines.push(`warn ${message}`);
  }
  error(message: string): void {
    this.lines.push(`error ${message}`);
  }
  matching(pattern: RegExp): string[] {
    return this.lines.filter((line) => pattern.test(line));
  }
}

interface Running {
  broker: Broker;
  port: number;
  repository: LevelRepository;
}

const teardown: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const step of teardown.splice(0).reverse()) await step().catch(() => undefined);
});

/** A broker on `dataDir` whose LevelDB store is instrumented with `faults` (when given). */
async function start(dataDir: string, log: LogLines, faults?: DiskFaults): Promise<Running> {
  const repository = new LevelRepository({ location: join(dataDir, 'store'), log, ...(faults ? { instrument: faults.instrument } : {}) });
  const broker = createBroker({ host: '127.0.0.1', port: 0, dataDir, repository, log });
  const { port } = await broker.listen();
  teardown.push(() => broker.close());
  return { broker, port, repository };
}

/** A broker on a fresh data directory whose store writes `faults` can make fail. */
async function startWithFaults(): Promise<Running & { log: LogLines; faults: DiskFaults }> {
  const log = new LogLines();
  const faults = new DiskFaults();
  return { ...(await start(dataDir(), log, faults)), log, faults };
}

function dataDir(): string {
  const dir = makeDataDir('broker-store-failure-');
  teardown.unshift(async () => removeDataDir(dir));
  return dir;
}

async function connect(port: number, clientId: string, clean: boolean): Promise<{ client: RawClient; sessionPresent: boolean }> {
  const { client, connack } = await RawClient.session(port, { clientId, clean });
  teardown.push(() => client.close());
  expect(connack.returnCode).toBe(0);
  return { client, sessionPresent: connack.sessionPresent };
}

/**
 * Receives PUBLISHes until one with payload `until` arrives, completing each flow as a client
 * does (PUBACK; PUBREC, then PUBCOMP on PUBREL). Returns them in arrival order.
 */
async function receiveUntil(client: RawClient, until: string): Promise<IPublishPacket[]> {
  const received: IPublishPacket[] = [];
  for (;;) {
    const publish = await client.next('publish');
    received.push(publish);
    await acknowledge(client, publish);
    if (publish.payload.toString() === until) return received;
  }
}

async function publishAcked(client: RawClient, messageId: number, topic: string, payload: string, options: { qos?: 1 | 2; dup?: boolean } = {}) {
  const qos = options.qos ?? 1;
  client.send({ cmd: 'publish', topic, payload, qos, messageId, retain: false, dup: options.dup ?? false });
  if (qos === 1) {
    expect((await client.next('puback')).messageId).toBe(messageId);
    return;
  }
  expect((await client.next('pubrec')).messageId).toBe(messageId);
  client.send({ cmd: 'pubrel', messageId });
  expect((await client.next('pubcomp')).messageId).toBe(messageId);
}

function acks(client: RawClient): string[] {
  return client.received.filter((packet) => ['puback', 'pubrec', 'suback', 'pubcomp'].includes(packet.cmd)).map((packet) => packet.cmd);
}

describe('store write failures under a running broker', () => {
  it('a PUBLISH whose write fails is not acknowledged and its connection closes; others are served; after recovery the re-sent messages arrive, QoS 2 exactly once', async () => {
    const { log, faults, port } = await startWithFaults();

    const { client: sub } = await connect(port, 'sub', false);
    expect(await subscribe(sub, 1, [{ topic: 't/#', qos: 2 }])).toEqual([2]);
    const { client: pub } = await connect(port, 'pub', false);
    // Two clean clients whose traffic needs no disk write.
    const { client: chatSub } = await connect(port, 'chat-sub', true);
    expect(await subscribe(chatSub, 1, [{ topic: 'chat/#', qos: 1 }])).toEqual([1]);
    const { client: chatPub } = await connect(port, 'chat-pub', true);

    faults.fail();
    pub.send({ cmd: 'publish', topic: 't/a', payload: 'one', qos: 1, messageId: 1, retain: false, dup: false });
    pub.send({ cmd: 'publish', topic: 't/b', payload: 'two', qos: 2, messageId: 2, retain: false, dup: false });
    await pub.closed;
    // Nothing that was not stored is acknowledged [MQTT-4.3.2-2] [MQTT-4.3.3-2].
    expect(acks(pub)).toEqual([]);
    expect(faults.refused).toBeGreaterThan(0);

    // Clients that need no write are served during the failure.
    await publishAcked(chatPub, 1, 'chat/x', 'still here');
    expect(summary(await chatSub.next('publish'))).toBe('chat/x=still here');
    await sub.roundTrip();

    // The failure is logged once by the store; the publisher's connection once.
    expect(log.matching(/^error .*transitions were not stored/)).toHaveLength(1);
    expect(log.matching(/^error client "pub": store write failed/)).toHaveLength(1);

    faults.recover();
    const { client: again, sessionPresent } = await connect(port, 'pub', false);
    expect(sessionPresent).toBe(true);
    // The client re-sends what was not acknowledged, DUP=1, same packet ids [MQTT-4.4.0-1].
    await publishAcked(again, 1, 't/a', 'one', { dup: true });
    await publishAcked(again, 2, 't/b', 'two', { qos: 2, dup: true });
    await publishAcked(again, 3, 't/z', 'end');

    const received = (await receiveUntil(sub, 'end')).map(summary);
    expect(received.filter((text) => text === 't/b=two')).toHaveLength(1);
    expect(received.filter((text) => text === 't/a=one').length).toBeGreaterThanOrEqual(1);
    expect(received).toEqual(['t/a=one', 't/b=two', 't/z=end']);
    expect(faults.reopens).toBeGreaterThan(0);
    expect(log.matching(/^warn .*succeed again/)).toHaveLength(1);
  });

  it('many clients pipelining PUBLISHes into a failing disk: one log line from the store, one for the first client and a count of the others, no acknowledgement', async () => {
    const { log, faults, port, broker } = await startWithFaults();
    const { client: sub } = await connect(port, 'sub', false);
    expect(await subscribe(sub, 1, [{ topic: 't/#', qos: 1 }])).toEqual([1]);
    const publishers = await Promise.all(['p1', 'p2', 'p3'].map(async (clientId) => (await connect(port, clientId, false)).client));

    faults.fail();
    for (const publisher of publishers) {
      for (let id = 1; id <= 20; id++) {
        publisher.send({ cmd: 'publish', topic: 't/x', payload: `${id}`, qos: id % 2 === 0 ? 1 : 2, messageId: id, retain: false, dup: false });
      }
    }
    await Promise.all(publishers.map((publisher) => publisher.closed));
    for (const publisher of publishers) expect(acks(publisher)).toEqual([]);
    // A write acknowledged after recovery comes after every refused one: all their failures are in by then.
    faults.recover();
    const { client: late } = await connect(port, 'late', true);
    await publishAcked(late, 1, 't/x', 'after');
    expect(log.matching(/^error .*transitions were not stored/)).toHaveLength(1);
    // Per-connection store errors are summarized (issue 12, item 7): the first at once, the others
    // counted and said in one line at the end of the interval, or when the broker stops.
    expect(log.matching(/^error client "p[123]": store write failed/), log.lines.join('\n')).toHaveLength(1);
    await broker.close();
    const summaries = log.matching(/^error store failure, client disconnected: \d+ more in the last \d+ s, from 1 address; the last: (client|session) "p[123]"/);
    expect(summaries, log.lines.join('\n')).toHaveLength(1);
    expect(Number(/: (\d+) more/.exec(summaries[0]!)![1])).toBeGreaterThanOrEqual(2);
  });

  it('a clean start whose discard of the old session fails is refused (0x03) and leaves that session whole; after recovery a clean start discards it [MQTT-3.1.2-6]', async () => {
    const { log, faults, port } = await startWithFaults();
    const { client: sub } = await connect(port, 'sub', false);
    expect(await subscribe(sub, 1, [{ topic: 't/#', qos: 1 }])).toEqual([1]);
    await sub.disconnect();
    const { client: pub } = await connect(port, 'pub', true);
    await publishAcked(pub, 1, 't/x', 'm1');

    faults.fail();
    const { client: refused, connack } = await RawClient.session(port, { clientId: 'sub', clean: true });
    teardown.push(() => refused.close());
    // Server unavailable: the session could not be discarded [MQTT-3.2.2-5].
    expect(connack.returnCode).toBe(3);
    await refused.closed;
    faults.recover();

    // Still routed and still stored: a message published now is queued for it.
    await publishAcked(pub, 2, 't/x', 'm2');
    const { client: back, sessionPresent } = await connect(port, 'sub', false);
    expect(sessionPresent).toBe(true);
    expect((await receiveUntil(back, 'm2')).map(summary)).toEqual(['t/x=m1', 't/x=m2']);
    await back.disconnect();

    const { client: fresh, sessionPresent: present } = await connect(port, 'sub', true);
    expect(present).toBe(false);
    await fresh.disconnect();
    const { client: last, sessionPresent: stillPresent } = await connect(port, 'sub', false);
    expect(stillPresent).toBe(false);
    await publishAcked(pub, 3, 't/x', 'not subscribed');
    await last.roundTrip();
    expect(last.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
  });

  it('a SUBSCRIBE whose write fails gets no SUBACK and routes nothing; after recovery it is granted', async () => {
    const { log, faults, port } = await startWithFaults();
    const { client: sub } = await connect(port, 'sub', false);
    faults.fail();
    sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 't/#', qos: 1 }] });
    await sub.closed;
    expect(acks(sub)).toEqual([]);
    faults.recover();

    const { client: pub } = await connect(port, 'pub', true);
    await publishAcked(pub, 1, 't/x', 'not for sub');
    const { client: back } = await connect(port, 'sub', false);
    expect(await subscribe(back, 2, [{ topic: 't/#', qos: 1 }])).toEqual([1]);
    await publishAcked(pub, 2, 't/x', 'for sub');
    // The message published while the subscription did not exist was not queued for it.
    expect((await receiveUntil(back, 'for sub')).map(summary)).toEqual(['t/x=for sub']);
  });

  it('a failing sent-watermark write: the subscriber is disconnected before anything is sent; after recovery it gets every message, as first deliveries', async () => {
    const { log, faults, port } = await startWithFaults();
    const { client: sub } = await connect(port, 'sub', false);
    expect(await subscribe(sub, 1, [{ topic: 't/#', qos: 1 }])).toEqual([1]);
    await sub.disconnect();
    const { client: other } = await connect(port, 'other', false);
    expect(await subscribe(other, 1, [{ topic: 'o/#', qos: 1 }])).toEqual([1]);
    const { client: pub } = await connect(port, 'pub', true);
    for (let id = 1; id <= 3; id++) await publishAcked(pub, id, 't/x', `m${id}`);

    // Only the subscriber's watermark writes fail: its CONNECT is stored, its backlog cannot be marked sent.
    faults.fail({ when: touches('w', 'sub') });
    const { client: failing, sessionPresent } = await connect(port, 'sub', false);
    expect(sessionPresent).toBe(true);
    await failing.closed;
    // Nothing goes out before the watermark is stored: no PUBLISH the store does not know was sent.
    expect(failing.received.filter((packet) => packet.cmd === 'publish')).toEqual([]);
    expect(log.matching(/^error .*transitions were not stored/)).toHaveLength(1);
    // Another persistent session, whose writes do not touch that watermark, is served meanwhile.
    await publishAcked(pub, 4, 'o/x', 'for other');
    expect((await receiveUntil(other, 'for other')).map(summary)).toEqual(['o/x=for other']);

    faults.recover();
    const { client: back } = await connect(port, 'sub', false);
    // Once for the session, once by the store (the reconnect's write came after every refused one).
    expect(log.matching(/^error session "sub"/), log.lines.join('\n')).toHaveLength(1);
    expect(log.matching(/^error .*transitions were not stored/)).toHaveLength(1);
    const backlog = await receiveUntil(back, 'm3');
    expect(backlog.map(summary)).toEqual(['t/x=m1', 't/x=m2', 't/x=m3']);
    // Never sent before, so not redeliveries [MQTT-3.3.1-1].
    expect(backlog.map((publish) => publish.dup)).toEqual([false, false, false]);
    // Live messages keep flowing on the recovered connection.
    await publishAcked(pub, 5, 't/x', 'live');
    expect((await receiveUntil(back, 'live')).map(summary)).toEqual(['t/x=live']);
    await back.roundTrip();
    expect(back.isClosed).toBe(false);
  });

  it('a failing completion write (PUBACK from the subscriber): disconnected, and the message is redelivered with DUP=1 after recovery, then never again', async () => {
    const { log, faults, port } = await startWithFaults();
    const { client: sub } = await connect(port, 'sub', false);
    expect(await subscribe(sub, 1, [{ topic: 't/#', qos: 1 }])).toEqual([1]);
    const { client: pub } = await connect(port, 'pub', true);
    await publishAcked(pub, 1, 't/x', 'once');
    const first = await sub.next('publish');
    expect(summary(first)).toBe('t/x=once');

    // The completion removes the queue entry: make exactly that write fail.
    faults.fail({ when: touches('q', 'sub') });
    sub.send({ cmd: 'puback', messageId: first.messageId! });
    await sub.closed;
    faults.recover();

    const { client: back } = await connect(port, 'sub', false);
    const again = await back.next('publish');
    expect(summary(again)).toBe('t/x=once');
    expect(again.dup).toBe(true);
    expect(again.messageId).toBe(first.messageId);
    back.send({ cmd: 'puback', messageId: again.messageId! });
    await back.disconnect();

    const { client: last } = await connect(port, 'sub', false);
    await publishAcked(pub, 2, 't/x', 'marker');
    expect((await receiveUntil(last, 'marker')).map(summary)).toEqual(['t/x=marker']);
  });

  it("a persistent subscriber's queue stays right across a failure and a restart: every acknowledged message once, in order, nothing refused", async () => {
    const dir = dataDir();
    const log = new LogLines();
    const faults = new DiskFaults();
    const first = await start(dir, log, faults);
    const { client: sub } = await connect(first.port, 'sub', false);
    expect(await subscribe(sub, 1, [{ topic: 't/#', qos: 2 }])).toEqual([2]);
    await sub.disconnect();

    const { client: pub } = await connect(first.port, 'pub', false);
    await publishAcked(pub, 1, 't/x', 'm1');
    await publishAcked(pub, 2, 't/x', 'm2', { qos: 2 });
    faults.fail();
    pub.send({ cmd: 'publish', topic: 't/x', payload: 'm3', qos: 2, messageId: 3, retain: false, dup: false });
    await pub.closed;
    expect(acks(pub)).toEqual([]);
    faults.recover();
    const { client: again } = await connect(first.port, 'pub', false);
    await publishAcked(again, 3, 't/x', 'm3', { qos: 2, dup: true });
    await publishAcked(again, 4, 't/x', 'm4');
    await again.disconnect();
    expect(await first.repository.queueStats('sub')).toEqual({ messages: 4, bytes: 8, dropped: 0 });

    await first.broker.close();
    const second = await start(dir, new LogLines());
    const { client: back, sessionPresent } = await connect(second.port, 'sub', false);
    expect(sessionPresent).toBe(true);
    const delivered = await receiveUntil(back, 'm4');
    expect(delivered.map(summary)).toEqual(['t/x=m1', 't/x=m2', 't/x=m3', 't/x=m4']);
    expect(delivered.map((publish) => publish.qos)).toEqual([1, 2, 2, 1]);
    await back.disconnect();
    // Completed means gone: reconnected, the subscriber gets only what is published next.
    const { client: last } = await connect(second.port, 'sub', false);
    const { client: marker } = await connect(second.port, 'marker', true);
    await publishAcked(marker, 1, 't/x', 'marker');
    expect((await receiveUntil(last, 'marker')).map(summary)).toEqual(['t/x=marker']);
  });
});

/**
 * A real full disk: the broker process runs in a user and mount namespace of its own
 * (`unshare --user --map-root-user --mount`), with its data directory on a 4 MiB tmpfs that a
 * filler file keeps almost full. The test drives it through stdin (free the filler, SIGKILL and
 * restart the broker) and over TCP. Where unprivileged namespaces are not available it is skipped.
 */
const BROKER_BIN = fileURLToPath(new URL('../../bin/broker.js', import.meta.url));
const namespaces = spawnSync('unshare', ['--user', '--map-root-user', '--mount', 'true']).status === 0;

const DISK_SCRIPT = `
set -e
mount -t tmpfs -o size=4m tmpfs "$MNT"
mkdir "$MNT/data"
dd if=/dev/zero of="$MNT/filler" bs=1024 count=3072 2>/dev/null
node "$BROKER" --host 127.0.0.1 --port 0 --data "$MNT/data" &
pid=$!
while read -r command; do
  case "$command" in
    free) rm -f "$MNT/filler"; echo "disk: freed";;
    restart) kill -KILL "$pid"; wait "$pid" || true; node "$BROKER" --host 127.0.0.1 --port 0 --data "$MNT/data" & pid=$!;;
    stop) kill -TERM "$pid"; wait "$pid" || true; echo "disk: stopped"; exit 0;;
  esac
done
`;

class SmallDisk {
  readonly #child: ChildProcess;
  output = '';
  #waiters: Array<() => void> = [];

  constructor(mountPoint: string) {
    // Its own process group, so the broker it starts goes down with it whatever happens.
    this.#child = spawn('unshare', ['--user', '--map-root-user', '--mount', 'sh', '-c', DISK_SCRIPT], {
      env: { ...process.env, MNT: mountPoint, BROKER: BROKER_BIN },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    const collect = (chunk: Buffer) => {
      this.output += chunk.toString();
      for (const wake of this.#waiters.splice(0)) wake();
    };
    this.#child.stdout!.on('data', collect);
    this.#child.stderr!.on('data', collect);
  }

  /** Resolves once the output holds `pattern` `count` times; returns the last match. */
  async waitFor(pattern: RegExp, count = 1): Promise<RegExpMatchArray> {
    for (;;) {
      const matches = [...this.output.matchAll(new RegExp(pattern.source, 'g'))];
      if (matches.length >= count) return matches[count - 1]!;
      if (this.#child.exitCode !== null) throw new Error(`the namespace ended:\n${this.output}`);
      // A broker that refuses to start (its fatal line starts with "broker:") will not print what we wait for.
      if (/^broker: /m.test(this.output)) throw new Error(`the broker did not start:\n${this.output.replace(/x{100,}/g, 'x…')}`);
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  command(command: 'free' | 'restart' | 'stop'): void {
    this.#child.stdin!.write(`${command}\n`);
  }

  kill(): void {
    if (this.#child.exitCode === null && this.#child.pid !== undefined) process.kill(-this.#child.pid, 'SIGKILL');
  }
}

describe.skipIf(!namespaces)('a real full disk (tmpfs in a mount namespace)', () => {
  it('what is refused while the disk is full is not acknowledged; everything acknowledged, before and after, survives a SIGKILL', async () => {
    const mountPoint = mkdtempSync(join(tmpdir(), 'broker-full-disk-'));
    const disk = new SmallDisk(mountPoint);
    teardown.push(async () => {
      disk.kill();
      rmSync(mountPoint, { recursive: true, force: true });
    });
    const port = Number((await disk.waitFor(/listening on [^\s:]+:(\d+)/))[1]);

    const { client: sub } = await connect(port, 'sub', false);
    expect(await subscribe(sub, 1, [{ topic: 't/#', qos: 1 }])).toEqual([1]);
    await sub.disconnect();

    // Fill the disk with queued messages until one is refused: no PUBACK, the connection closes.
    const acknowledged: string[] = [];
    const padding = 'x'.repeat(32 * 1024);
    let { client: pub } = await connect(port, 'pub', false);
    let refused: { id: number; payload: string } | undefined;
    for (let id = 1; refused === undefined; id++) {
      const payload = `m${id} ${padding}`;
      pub.send({ cmd: 'publish', topic: 't/x', payload, qos: 1, messageId: id, retain: false, dup: false });
      const answer = await Promise.race([pub.next('puback').then(() => 'acked' as const), pub.closed.then(() => 'closed' as const)]);
      if (answer === 'acked') acknowledged.push(`m${id}`);
      else refused = { id, payload };
      expect(id, 'the disk never filled up').toBeLessThan(200);
    }
    expect(acknowledged.length).toBeGreaterThan(0);
    await disk.waitFor(/No space left on device/);

    disk.command('free');
    await disk.waitFor(/disk: freed/);
    ({ client: pub } = await connect(port, 'pub', false));
    // The refused message, re-sent as a client does [MQTT-4.4.0-1], then new ones.
    await publishAcked(pub, refused.id, 't/x', refused.payload, { dup: true });
    acknowledged.push(`m${refused.id}`);
    for (const name of ['after-1', 'after-2']) {
      await publishAcked(pub, 1000 + acknowledged.length, 't/x', name);
      acknowledged.push(name);
    }
    await disk.waitFor(/succeed again/);

    disk.command('restart');
    const restartedPort = Number((await disk.waitFor(/listening on [^\s:]+:(\d+)/, 2))[1]);
    const { client: back, sessionPresent } = await connect(restartedPort, 'sub', false);
    expect(sessionPresent).toBe(true);
    const { client: marker } = await connect(restartedPort, 'marker', true);
    await publishAcked(marker, 1, 't/x', 'marker');
    const received = (await receiveUntil(back, 'marker')).map((publish) => publish.payload.toString().split(' ')[0]!);
    // Every acknowledged message is there, in order; the refused attempt left no copy.
    expect(received).toEqual([...acknowledged, 'marker']);

    disk.command('stop');
    await disk.waitFor(/disk: stopped/);
  });
});
