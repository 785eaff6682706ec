/**
 * broker-admin and MQTT 5 state: session expiry and its deadline, subscription options and
 * identifiers, shared groups, message properties and expiry, in JSON (fields added to schema 1,
 * the others unchanged) and in the readable tables (escaped like every other text); `verify`
 * checks the new records. A real broker (bin/broker.js) makes the state; broker-admin reads it
 * from the running broker and from the stopped store.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { BrokerProcess, makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { RawClient } from '../helpers/raw-client.js';
import { encodeRecord } from '../../src/store/codec.js';
import { keys } from '../../src/store/key-layout.js';
import type { MessageRecord, RetainedRecord, SessionRecord } from '../../src/admin/records.js';
import { ofType, runAdmin, withStore } from './fixture.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const CONTENT_TYPE = 'text/\u001b[31mplain';
const CORRELATION = Buffer.from([0, 1, 0xfe, 0xff]);

async function v5(broker: BrokerProcess, clientId: string, expiry: number): Promise<RawClient> {
  const { client, connack } = await RawClient.session5(broker.port, { clientId, clean: false, properties: { sessionExpiryInterval: expiry } });
  cleanups.push(() => void client.socket.destroy());
  expect(connack.reasonCode).toBe(0);
  return client;
}

/**
 * worker: MQTT 5, expiry 600 s, away; a member of $share/crew/jobs/# and subscribed to news/# with
 * every option, both with identifier 7; queued for it: jobs/1 with every property (expiry 1 h)
 * through the group, and news/a (retained, as published). Retained: news/a with a User Property.
 */
async function start(): Promise<{ broker: BrokerProcess; dataDir: string; before: number }> {
  const dataDir = makeDataDir('broker-admin-v5-');
  const broker = await BrokerProcess.start(dataDir);
  cleanups.push(async () => {
    if (broker.child.exitCode === null && broker.child.signalCode === null) broker.child.kill('SIGKILL');
    await broker.exited;
    removeDataDir(dataDir);
  });
  const before = Date.now();
  const worker = await v5(broker, 'worker', 600);
  worker.send({
    cmd: 'subscribe',
    messageId: 1,
    subscriptions: [
      { topic: '$share/crew/jobs/#', qos: 1 },
      { topic: 'news/#', qos: 2, nl: true, rap: true, rh: 1 },
    ],
    properties: { subscriptionIdentifier: 7 },
  });
  expect((await worker.next('suback')).granted).toEqual([1, 2]);
  await worker.disconnect();
  const publisher = await v5(broker, 'publisher', 0);
  publisher.send({
    cmd: 'publish',
    topic: 'jobs/1',
    payload: 'job',
    qos: 1,
    messageId: 1,
    dup: false,
    retain: false,
    properties: {
      payloadFormatIndicator: true,
      messageExpiryInterval: 3600,
      contentType: CONTENT_TYPE,
      responseTopic: 'reply/here',
      correlationData: CORRELATION,
      userProperties: { k: ['v1', 'v2'], 'evil\n': 'x' },
    },
  });
  await publisher.next('puback');
  publisher.send({ cmd: 'publish', topic: 'news/a', payload: 'headline', qos: 1, messageId: 2, dup: false, retain: true, properties: { userProperties: { lang: 'en' } } });
  await publisher.next('puback');
  await publisher.disconnect();
  return { broker, dataDir, before };
}

const JOB_PROPERTIES = {
  payloadFormat: 1,
  contentType: CONTENT_TYPE,
  responseTopic: 'reply/here',
  correlationData: { encoding: 'base64', data: CORRELATION.toString('base64'), size: 4, truncated: false },
  userProperties: [
    ['k', 'v1'],
    ['k', 'v2'],
    ['evil\n', 'x'],
  ],
};

describe('broker-admin and MQTT 5 state', { timeout: 60_000 }, () => {
  it('dump --json shows session expiry and deadline, subscription options, shared groups, message properties and expiry, running and stopped', async () => {
    const { broker, dataDir, before } = await start();
    const check = async (mode: string) => {
      const run = await runAdmin(['dump', '--client', 'worker', '--messages', '--data', dataDir, '--json']);
      expect(run.code, run.stderr).toBe(0);
      const [session] = ofType<SessionRecord>(run, 'session');
      expect(session?.expiry, mode).toBe(600);
      const deadline = Date.parse(session!.expiresAt!);
      expect(deadline).toBe(Date.parse(session!.lastSeen!) + 600_000);
      expect(session!.subscriptions).toEqual([
        { filter: '$share/crew/jobs/#', qos: 1, identifier: 7, shareGroup: 'crew' },
        { filter: 'news/#', qos: 2, noLocal: true, retainAsPublished: true, retainHandling: 1, identifier: 7 },
      ]);
      const messages = ofType<MessageRecord>(run, 'message');
      expect(messages.map(({ topic }) => topic)).toEqual(['jobs/1', 'news/a']);
      const [job, news] = messages;
      expect(job).toMatchObject({ qos: 1, retain: false, properties: JOB_PROPERTIES, subscriptionIds: [7], shared: ['$share/crew/jobs/#'] });
      expect(Date.parse(job!.expiresAt!)).toBeGreaterThanOrEqual(before + 3_600_000);
      expect(job!.expiresIn).toBeGreaterThan(3500);
      expect(job!.expiresIn).toBeLessThanOrEqual(3600);
      // Retain As Published keeps RETAIN; no expiry, no shared group: those fields are absent.
      expect(news).toMatchObject({ retain: true, properties: { userProperties: [['lang', 'en']] }, subscriptionIds: [7] });
      expect(Object.keys(news!)).not.toContain('expiresAt');
      expect(Object.keys(news!)).not.toContain('shared');
      const retained = ofType<RetainedRecord>(await runAdmin(['retained', 'list', '--data', dataDir, '--json']), 'retained');
      expect(retained).toEqual([{ type: 'retained', topic: 'news/a', qos: 1, payload: { encoding: 'utf8', data: 'headline', size: 8, truncated: false }, properties: { userProperties: [['lang', 'en']] } }]);
    };
    await check('running');
    expect((await broker.stop()).code).toBe(0);
    await check('stopped');
  });

  it('the readable tables show the same, every text escaped; 3.1.1 rows keep their columns', async () => {
    const { dataDir } = await start();
    const run = await runAdmin(['dump', '--messages', '--data', dataDir]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f]/);
    const lines = run.stdout.split('\n');
    const worker = lines.find((line) => line.startsWith('worker'))!.split(/\s{2,}/);
    expect(worker[5]).toBe('$share/crew/jobs/# (1 id7), news/# (2 nl rap rh1 id7)');
    expect(worker.at(-1)).toMatch(/^600 s: \d{4}-.+Z$/);
    const job = lines.find((line) => /^\d+\s+queued\s+-\s+1\s+no\s+jobs\/1\s/.test(line))!;
    expect(job).toMatch(/Z \(\d+ s left\)/);
    expect(job).toContain('utf-8, content type "text/\\u001b[31mplain", response topic "reply/here", correlation hex:0001feff, "k"="v1", "k"="v2", "evil\\n"="x", ids 7, shared $share/crew/jobs/#');
    expect(lines.find((line) => line.startsWith('news/a'))).toMatch(/"headline"\s+"lang"="en"$/);
    expect(lines).toContainEqual(expect.stringMatching(/^CLIENT\s+SESSION\s+CONNECTED\s+CREATED\s+LAST SEEN\s+SUBSCRIPTIONS\s+QUEUED\s+BYTES\s+DROPPED\s+INFLIGHT\s+INBOUND QOS2\s+OWNER\s+EXPIRY$/));
  });

  it('verify: the records pass; No Local on a stored shared subscription, or a delivery tagged with a filter that is not shared, is reported', async () => {
    const { broker, dataDir } = await start();
    expect((await broker.stop()).code).toBe(0);
    const clean = await runAdmin(['verify', '--data', dataDir, '--json']);
    expect(clean.code, clean.stdout).toBe(0);
    const store = `${dataDir}/store`;
    const badSubscription = keys.subscription('worker', '$share/crew/x');
    const badEntry = keys.queueEntry('worker', 99);
    await withStore(store, async (db) => {
      await db.put(badSubscription, encodeRecord(badSubscription, { q: 1, n: true }));
      await db.put(badEntry, encodeRecord(badEntry, { q: 1, r: false, t: 'jobs/2', p: Buffer.from('x'), o: 1, g: ['jobs/#'] }));
    });
    const run = await runAdmin(['verify', '--data', dataDir, '--json']);
    expect(run.code).toBe(2);
    const problems = ofType<{ key: string; problem: string }>(run, 'problem').filter(({ problem }) => problem === 'bad-shared');
    expect(problems.map(({ key }) => key).sort()).toEqual([badSubscription, badEntry].sort());
  });
});
