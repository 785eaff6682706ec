/**
 * Hostile input over real sockets (issue 6): fast-check sends (a) random bytes after a valid
 * CONNECT, (b) valid packets from mqtt-packet, mutated (bit flips, truncation, length-field edits,
 * splices, insertions, repeats) and (c) sequences of valid but odd packets, to the broker running
 * as a child process (bin/broker.js), so a crash shows as an exit. Each case ends when the broker
 * has closed the connection after the client's FIN (or closed it earlier): a case never waits on a
 * timer. After each batch the broker still runs and a well-behaved client still publishes and
 * receives QoS 1, live and through its persistent session; at the end the store verifies, running
 * and stopped, and that session survives a restart intact.
 *
 * FUZZ_SCALE=<n> multiplies the case counts (default 1, sized for CI).
 */
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { records, runAdmin } from '../admin/fixture.js';
import { BrokerProcess, makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { encodedConnect, encodedConnect5, encodedPacket, encodedPacket5, mutatedPackets, mutatedPackets5 } from '../helpers/mqtt-arbitraries.js';
import { RawClient } from '../helpers/raw-client.js';
import { startBroker } from '../helpers/in-process.js';
import { Clients, publishQos1, subscribe } from '../helpers/wait.js';

const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const BATCHES = 4;
const RUNS_PER_BATCH = {
  random: Math.round(1000 * SCALE),
  mutated: Math.round(1000 * SCALE),
  sequences: Math.round(500 * SCALE),
  // MQTT 5: properties, reason codes, topic aliases, session expiry, will delay, AUTH.
  random5: Math.round(500 * SCALE),
  mutated5: Math.round(1000 * SCALE),
  sequences5: Math.round(500 * SCALE),
};
/** A broker that neither answers nor closes for this long on one case is hung: the case fails. */
const CASE_DEADLINE_MS = 10_000;

// ---- the broker and the cases ---------------------------------------------------------------

let dataDir: string;
let broker: BrokerProcess;
const counts = { random: 0, mutated: 0, sequences: 0, random5: 0, mutated5: 0, sequences5: 0, batches: 0 };

/**
 * One fuzz connection: CONNECT and `bytes` in one write, then FIN. Resolves when the socket is
 * closed: the broker closed it (bad input, DISCONNECT) or answered our FIN once it had read
 * everything before it. Whatever the broker sends is read and discarded.
 */
async function fuzzConnection(connectBytes: Buffer, bytes: Buffer): Promise<void> {
  const socket = connect(broker.port, '127.0.0.1');
  socket.setNoDelay(true);
  socket.on('error', () => {}); // ECONNRESET / EPIPE when the broker cuts a bad connection short
  socket.resume();
  const closed = once(socket, 'close');
  await once(socket, 'connect');
  socket.end(Buffer.concat([connectBytes, bytes]));
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      if (process.env.FUZZ_LOG) writeFileSync(`${process.env.FUZZ_LOG}.hang-${Date.now()}`, Buffer.concat([connectBytes, bytes]).toString('hex'));
      reject(new Error(`broker neither closed nor answered FIN within ${CASE_DEADLINE_MS} ms`));
    }, CASE_DEADLINE_MS);
  });
  try {
    await Promise.race([closed, deadline]);
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
}

/** The well-behaved client: a persistent subscriber on wb/# and a publisher. */
let subscriber: RawClient;
let publisher: RawClient;
let nextId = 1;
const id = () => (nextId = (nextId % 60_000) + 1);

async function connectSubscriber(expectPresent: boolean): Promise<void> {
  const { client, connack } = await RawClient.session(broker.port, { clientId: 'wb-subscriber', clean: false });
  expect(connack.returnCode).toBe(0);
  expect(connack.sessionPresent).toBe(expectPresent);
  subscriber = client;
}

/** Acknowledged PUBLISHes until the one on `topic` (fuzz clients may publish on wb/ topics too, by chance). */
async function receive(topic: string): Promise<string> {
  for (;;) {
    const publish = await subscriber.next('publish');
    if (publish.qos === 1) subscriber.send({ cmd: 'puback', messageId: publish.messageId! });
    if (publish.qos === 2) {
      subscriber.send({ cmd: 'pubrec', messageId: publish.messageId! });
      await subscriber.next('pubrel');
      subscriber.send({ cmd: 'pubcomp', messageId: publish.messageId! });
    }
    if (publish.topic === topic) return publish.payload.toString();
  }
}

/** The broker runs, QoS 1 goes end to end live, and a message queued while offline is there on reconnect. */
let step = '';
async function expectWellBehavedServed(): Promise<void> {
  expect(broker.child.exitCode).toBeNull();
  expect(broker.child.signalCode).toBeNull();
  const live = id();
  step = `publish live ${live}`;
  await publishQos1(publisher, live, `wb/live/${live}`, `live ${live}`);
  step = `receive live ${live}`;
  expect(await receive(`wb/live/${live}`)).toBe(`live ${live}`);

  step = 'disconnect';
  await subscriber.disconnect();
  const offline = id();
  step = `publish offline ${offline}`;
  await publishQos1(publisher, offline, `wb/offline/${offline}`, `offline ${offline}`);
  step = 'reconnect';
  await connectSubscriber(true);
  step = `receive offline ${offline}`;
  expect(await receive(`wb/offline/${offline}`)).toBe(`offline ${offline}`);
  counts.batches++;
}

async function batch(name: keyof typeof RUNS_PER_BATCH, property: fc.IAsyncProperty<[Buffer, Buffer]>): Promise<void> {
  await fc.assert(property, { numRuns: RUNS_PER_BATCH[name], endOnFailure: true });
  counts[name] += RUNS_PER_BATCH[name];
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      if (process.env.FUZZ_LOG) {
        writeFileSync(
          `${process.env.FUZZ_LOG}.stuck-${Date.now()}`,
          `${broker.output}\n---stuck at: ${step}; subscriber port ${subscriber.socket.localPort}---\n${JSON.stringify([subscriber.received, publisher.received])}`,
        );
      }
      reject(new Error('well-behaved client not served'));
    }, 20_000);
  });
  try {
    await Promise.race([expectWellBehavedServed(), stuck]);
  } finally {
    clearTimeout(timer);
  }
}

describe('fuzzing over real sockets', { timeout: 120_000 }, () => {
  beforeAll(async () => {
    dataDir = makeDataDir('broker-fuzz-');
    broker = await BrokerProcess.start(dataDir);
    await connectSubscriber(false);
    subscriber.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'wb/#', qos: 1 }] });
    expect((await subscriber.next('suback')).granted).toEqual([1]);
    ({ client: publisher } = await RawClient.session(broker.port, { clientId: 'wb-publisher' }));
  });

  afterAll(async () => {
    subscriber?.socket.destroy();
    publisher?.socket.destroy();
    if (broker && broker.child.exitCode === null && broker.child.signalCode === null) broker.child.kill('SIGKILL');
    await broker?.exited;
    if (process.env.FUZZ_LOG) writeFileSync(process.env.FUZZ_LOG, broker.output);
    removeDataDir(dataDir);
    console.log(
      `fuzz cases: ${counts.random} random-byte, ${counts.mutated} mutated-packet, ${counts.sequences} odd-sequence, ` +
        `MQTT 5: ${counts.random5} random-byte, ${counts.mutated5} mutated-packet, ${counts.sequences5} odd-sequence ` +
        `(${counts.random + counts.mutated + counts.sequences + counts.random5 + counts.mutated5 + counts.sequences5} in total); ` +
        `${counts.batches} well-behaved checks passed`,
    );
  });

  for (let round = 1; round <= BATCHES; round++) {
    it(`(a) random bytes after a valid CONNECT, batch ${round}`, async () => {
      await batch(
        'random',
        fc.asyncProperty(encodedConnect, fc.uint8Array({ maxLength: 256 }).map((bytes) => Buffer.from(bytes)), fuzzConnection),
      );
    });

    it(`(b) mutated valid packets, batch ${round}`, async () => {
      await batch('mutated', fc.asyncProperty(encodedConnect, mutatedPackets, fuzzConnection));
    });

    it(`(c) valid but odd packet sequences, batch ${round}`, async () => {
      const sequence = fc.array(encodedPacket, { minLength: 1, maxLength: 20 }).map((packets) => Buffer.concat(packets));
      await batch('sequences', fc.asyncProperty(encodedConnect, sequence, fuzzConnection));
    });

    it(`(d) MQTT 5: random bytes after a valid v5 CONNECT, batch ${round}`, async () => {
      await batch('random5', fc.asyncProperty(encodedConnect5, fc.uint8Array({ maxLength: 256 }).map((bytes) => Buffer.from(bytes)), fuzzConnection));
    });

    it(`(e) MQTT 5: mutated packets with properties and reason codes, batch ${round}`, async () => {
      await batch('mutated5', fc.asyncProperty(encodedConnect5, mutatedPackets5, fuzzConnection));
    });

    it(`(f) MQTT 5: valid but odd packet sequences (aliases, expiry, will delay, AUTH), batch ${round}`, async () => {
      const sequence = fc.array(encodedPacket5, { minLength: 1, maxLength: 20 }).map((packets) => Buffer.concat(packets));
      await batch('sequences5', fc.asyncProperty(encodedConnect5, sequence, fuzzConnection));
    });
  }

  it('leaves a store that verifies, running and stopped, and the persistent session intact across a restart', async () => {
    // Hostile input is a client's problem: it is logged at warn, never as a broker error.
    expect(broker.output.split('\n').filter((line) => / error /.test(line))).toEqual([]);
    const running = await runAdmin(['verify', '--data', dataDir, '--json']);
    expect(records(running).find((record) => record.type === 'verify')).toMatchObject({ ok: true, problems: 0 });
    expect(running.code).toBe(0);

    await subscriber.disconnect();
    await publishQos1(publisher, id(), 'wb/final', 'kept across the restart');
    await publisher.disconnect();
    expect(await broker.stop()).toEqual({ code: 0, signal: null });

    const stopped = await runAdmin(['verify', '--data', dataDir, '--json']);
    expect(records(stopped).find((record) => record.type === 'verify')).toMatchObject({ ok: true, problems: 0 });
    expect(stopped.code).toBe(0);

    broker = await BrokerProcess.start(dataDir);
    await connectSubscriber(true);
    expect(await receive('wb/final')).toBe('kept across the restart');
    ({ client: publisher } = await RawClient.session(broker.port, { clientId: 'wb-publisher' }));
    await expectWellBehavedServed();
  });
});

/** Bugs the fuzzer found, each pinned by a deterministic test against an in-process broker. */
describe('regressions found by fuzzing', () => {
  describe.each([
    {
      // Remaining length 0: mqtt-packet read the packet id from the PINGREQ behind it, or -1.
      name: 'a PUBREL without its packet identifier',
      bytes: [0x62, 0x00, 0xc0, 0x00],
    },
    {
      // QoS 1, remaining length 3: topic "a", then no packet id; the PUBACK then failed to encode.
      name: 'a QoS 1 PUBLISH cut short before its packet identifier',
      bytes: [0x32, 0x03, 0x00, 0x01, 0x61],
    },
    { name: 'a QoS 1 PUBLISH with packet identifier 0 [MQTT-2.3.1-1]', bytes: [0x32, 0x05, 0x00, 0x01, 0x61, 0x00, 0x00] },
    { name: 'a QoS 2 PUBLISH with packet identifier 0 [MQTT-2.3.1-1]', bytes: [0x34, 0x05, 0x00, 0x01, 0x61, 0x00, 0x00] },
    {
      // Only a packet id: mqtt-packet parsed it as a SUBSCRIBE of nothing, whose SUBACK failed to encode.
      name: 'a SUBSCRIBE without topic filters [MQTT-3.8.3-3]',
      bytes: [0x82, 0x02, 0x00, 0x07],
    },
  ])('$name', ({ bytes }) => {
    it('closes the connection without an answer and without a broker error; others are served', async () => {
      const errors: string[] = [];
      const dataDir = makeDataDir('broker-fuzz-regression-');
      const running = await startBroker({ dataDir, log: { info() {}, warn() {}, error: (message) => errors.push(message) } });
      const clients = new Clients(running.port);
      try {
        const bystander = await clients.rawAccepted({ clientId: 'bystander', clean: false });
        expect(await subscribe(bystander, 1, [{ topic: 'b/#', qos: 1 }])).toEqual([1]);
        const offender = await clients.rawAccepted({ clientId: 'offender', clean: false });
        offender.sendBytes(bytes);
        await offender.closed;
        expect(offender.received).toEqual([]);
        expect(errors).toEqual([]);
        await publishQos1(bystander, 2, 'b/after', 'still served');
        const after = await bystander.next('publish');
        expect(after.payload.toString()).toBe('still served');
        bystander.send({ cmd: 'puback', messageId: after.messageId! });
      } finally {
        await clients.closeAll();
        await running.stop();
      }
      // Nothing of the offender's packet reached the store: it verifies.
      const verify = await runAdmin(['verify', '--data', dataDir, '--json']);
      removeDataDir(dataDir);
      expect(records(verify).find((record) => record.type === 'verify')).toMatchObject({ ok: true, problems: 0 });
    });
  });

  it('a SUBSCRIBE still pending when its connection closes adds nothing to the next clean session of that client id [MQTT-3.1.2-6]', async () => {
    const errors: string[] = [];
    const running = await startBroker({ log: { info() {}, warn() {}, error: (message) => errors.push(message) } });
    const clients = new Clients(running.port);
    try {
      // A persistent subscriber makes each PUBLISH below a store write, which the SUBSCRIBE
      // behind it waits for; the connection is gone and the next one has taken over meanwhile.
      const durable = await clients.rawAccepted({ clientId: 'durable', clean: false });
      expect(await subscribe(durable, 1, [{ topic: 'slow/#', qos: 1 }])).toEqual([1]);
      await durable.close();
      const watcher = await clients.rawAccepted({ clientId: 'watcher' });
      for (let round = 0; round < 30; round++) {
        const socket = connect(running.port, '127.0.0.1');
        socket.on('error', () => {});
        socket.resume();
        await once(socket, 'connect');
        socket.end(
          Buffer.concat([
            mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'victim', clean: true, keepalive: 0 }),
            mqttPacket.generate({ cmd: 'publish', topic: 'slow/x', payload: Buffer.alloc(10), qos: 1, messageId: 1, retain: false, dup: false }),
            mqttPacket.generate({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'leak/#', qos: 0 }] }),
          ]),
        );
        await once(socket, 'close');
        const next = await clients.rawAccepted({ clientId: 'victim' });
        await next.roundTrip();
        // The new session subscribed to nothing: a message on leak/x must not reach it.
        watcher.send({ cmd: 'publish', topic: 'leak/x', payload: Buffer.from(`round ${round}`), qos: 0, retain: false, dup: false });
        await watcher.roundTrip();
        await next.roundTrip();
        expect(next.received).toEqual([]);
        await next.close();
      }
      expect(errors).toEqual([]);
    } finally {
      await clients.closeAll();
      await running.stop();
    }
  });
});
