/**
 * ACL changes reach messages already queued: read access is checked again when a queued message is
 * about to be sent, so a rule removed by a reload stops the next delivery, also of messages queued
 * (or sent and not yet acknowledged) before the reload. Absence is shown by a marker published
 * afterwards arriving next, never by waiting.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { setPassword } from '../../src/auth/password-file.js';
import { makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { Clients, publishQos1, subscribe, summary } from '../helpers/wait.js';

const ALLOWED = 'user alice\ntopic read news/#\nuser bob\ntopic write news/#\n';
const REVOKED = 'user alice\ntopic read news/public/#\nuser bob\ntopic write news/#\n';

let running: RunningBroker | undefined;
let clients: Clients | undefined;
let dataDir: string | undefined;

afterEach(async () => {
  await clients?.closeAll();
  await running?.stop();
  if (dataDir) removeDataDir(dataDir);
  running = clients = dataDir = undefined;
});

async function brokerWithAcl(): Promise<{ acl: string; port: number }> {
  dataDir = makeDataDir();
  const passwordFile = join(dataDir, 'passwd');
  await setPassword(passwordFile, 'alice', 'a-pass');
  await setPassword(passwordFile, 'bob', 'b-pass');
  const acl = join(dataDir, 'acl');
  writeFileSync(acl, ALLOWED);
  running = await startBroker({ dataDir, passwordFile, aclFile: acl });
  clients = new Clients(running.port);
  return { acl, port: running.port };
}

const alice = { clientId: 'alice-reader', clean: false, username: 'alice', password: Buffer.from('a-pass') };
const bob = { clientId: 'bob-writer', username: 'bob', password: Buffer.from('b-pass') };

describe('ACL revocation reaches queued messages', () => {
  it('a message queued before a reload that takes read access away is not delivered after it; the rest is', async () => {
    const { acl } = await brokerWithAcl();
    const reader = await clients!.rawAccepted(alice);
    expect(await subscribe(reader, 1, [{ topic: 'news/#', qos: 1 }])).toEqual([1]);
    await reader.disconnect();

    const writer = await clients!.rawAccepted(bob);
    await publishQos1(writer, 1, 'news/secret/1', 'queued while allowed');
    await publishQos1(writer, 2, 'news/public/1', 'public 1');
    expect((await running!.broker.sessions.lookup('alice-reader')!.queueStats())?.messages).toBe(2);

    writeFileSync(acl, REVOKED);
    await running!.broker.reload();
    await publishQos1(writer, 3, 'news/public/marker', 'marker');

    const again = await clients!.rawAccepted(alice);
    const delivered = [];
    for (let index = 0; index < 2; index++) {
      const publish = await again.next('publish');
      delivered.push(summary(publish));
      again.send({ cmd: 'puback', messageId: publish.messageId! });
    }
    expect(delivered).toEqual(['news/public/1=public 1', 'news/public/marker=marker']);
    await again.disconnect();
    // The refused one left the queue, like the acknowledged ones: the next connection gets only
    // what came after (a new connection reads the queue once the previous one's writes are done).
    await publishQos1(writer, 4, 'news/public/after', 'after');
    const third = await clients!.rawAccepted(alice);
    const next = await third.next('publish');
    expect([summary(next), next.dup]).toEqual(['news/public/after=after', false]);
    third.send({ cmd: 'puback', messageId: next.messageId! });
    await third.disconnect();
  });

  it('a message sent before the reload and never acknowledged is not sent again after it', async () => {
    const { acl } = await brokerWithAcl();
    const reader = await clients!.rawAccepted(alice);
    expect(await subscribe(reader, 1, [{ topic: 'news/#', qos: 1 }])).toEqual([1]);
    const writer = await clients!.rawAccepted(bob);
    await publishQos1(writer, 1, 'news/secret/2', 'sent, not acknowledged');
    expect(summary(await reader.next('publish'))).toBe('news/secret/2=sent, not acknowledged');
    await reader.close();

    writeFileSync(acl, REVOKED);
    await running!.broker.reload();
    await publishQos1(writer, 2, 'news/public/marker', 'marker');

    const again = await clients!.rawAccepted(alice);
    const first = await again.next('publish');
    expect([summary(first), first.dup]).toEqual(['news/public/marker=marker', false]);
  });
});
