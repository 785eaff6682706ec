/**
 * broker-admin dump and the read commands, against a store produced by a real broker run (see
 * fixture.ts): while the broker runs (admin socket) and after SIGTERM (the stopped store).
 */
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import type { SessionRecord } from '../../src/admin/records.js';
import { encodeRecord } from '../../src/store/codec.js';
import { keys } from '../../src/store/key-layout.js';
import { BINARY, connect, ofType, records, runAdmin, setUp, stopBroker, tearDown, withStore, type AdminRun } from './fixture.js';

afterEach(tearDown);

const FIELDS = {
  header: ['command', 'mode', 'schema', 'store', 'type'],
  session: ['clientId', 'connected', 'createdAt', 'dropped', 'inbound', 'inflight', 'lastSeen', 'persistent', 'queued', 'subscriptions', 'type'],
  message: ['clientId', 'packetId', 'payload', 'qos', 'retain', 'seq', 'state', 'topic', 'type'],
  retained: ['payload', 'qos', 'topic', 'type'],
  totals: [
    'diskBytes',
    'inbound',
    'inflight',
    'keyBytes',
    'keys',
    'queued',
    'queuedBytes',
    'retained',
    'retainedBytes',
    'schema',
    'sessions',
    'sharedBodies',
    'subscriptions',
    'type',
    'valueBytes',
  ],
  payload: ['data', 'encoding', 'size', 'truncated'],
  counters: ['connectionsRefused', 'packetsTooLarge', 'publishesOverClientMaximum', 'publishesRefused', 'qos0Dropped', 'type'],
};

const SUBSCRIPTIONS = [
  { filter: 'alerts/#', qos: 2 },
  { filter: 'sensors/#', qos: 1 },
];
const TRUNCATED_BINARY = { encoding: 'base64', data: BINARY.subarray(0, 64).toString('base64'), size: 100, truncated: true };

/** The sessions of the fixture as a dump shows them; createdAt and lastSeen checked separately. */
function expectedSessions(running: boolean) {
  const iso = expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  const sessions = [
    {
      type: 'session',
      clientId: 'pub-qos2',
      persistent: true,
      connected: running,
      createdAt: iso,
      lastSeen: iso,
      subscriptions: [],
      queued: { count: 0, bytes: 0 },
      dropped: 0,
      inflight: [],
      inbound: [{ packetId: 42, receivedAt: iso }],
    },
    {
      type: 'session',
      clientId: 'sub-inflight',
      persistent: true,
      connected: running,
      createdAt: iso,
      lastSeen: iso,
      subscriptions: SUBSCRIPTIONS,
      queued: { count: 3, bytes: 108 },
      dropped: 0,
      inflight: [
        { seq: 1, packetId: 1, state: 'sent', topic: 'sensors/t1', qos: 1 },
        { seq: 2, packetId: 2, state: 'released', topic: 'alerts/fire', qos: 2 },
        { seq: 3, packetId: 3, state: 'sent', topic: 'sensors/raw', qos: 1 },
      ],
      inbound: [],
    },
    {
      type: 'session',
      clientId: 'sub-offline',
      persistent: true,
      connected: false,
      createdAt: iso,
      lastSeen: iso,
      subscriptions: SUBSCRIPTIONS,
      queued: { count: 3, bytes: 108 },
      dropped: 0,
      inflight: [],
      inbound: [],
    },
  ];
  if (running) {
    sessions.push({
      type: 'session',
      clientId: 'watcher',
      persistent: false,
      connected: true,
      createdAt: null,
      lastSeen: null,
      subscriptions: [{ filter: 'status/#', qos: 0 }],
      queued: { count: 0, bytes: 0 },
      dropped: 0,
      inflight: [],
      inbound: [],
    });
  }
  return sessions;
}

const RETAINED = [
  { type: 'retained', topic: 'bin/blob', qos: 1, payload: TRUNCATED_BINARY },
  { type: 'retained', topic: 'status/gw', qos: 1, payload: { encoding: 'utf8', data: 'online', size: 6, truncated: false } },
];

function messages(clientId: string, states: Array<['queued' | 'sent' | 'released', number | null]>) {
  const bodies = [
    { topic: 'sensors/t1', qos: 1, payload: { encoding: 'utf8', data: '21.5', size: 4, truncated: false } },
    { topic: 'alerts/fire', qos: 2, payload: { encoding: 'utf8', data: 'fire', size: 4, truncated: false } },
    { topic: 'sensors/raw', qos: 1, payload: TRUNCATED_BINARY },
  ];
  return bodies.map((body, index) => ({
    type: 'message',
    clientId,
    seq: index + 1,
    state: states[index]![0],
    packetId: states[index]![1],
    retain: false,
    ...body,
  }));
}

function expectSchema(run: AdminRun): void {
  for (const record of records(run)) {
    const fields = FIELDS[record.type as keyof typeof FIELDS];
    expect(fields, `known record type ${String(record.type)}`).toBeDefined();
    expect(Object.keys(record).sort()).toEqual(fields);
    if (record.payload) expect(Object.keys(record.payload as object).sort()).toEqual(FIELDS.payload);
  }
}

function expectDump(run: AdminRun, mode: 'running' | 'stopped', dataDir: string): void {
  expect(run.code, run.stderr).toBe(0);
  expectSchema(run);
  const all = records(run);
  expect(all[0]).toEqual({ type: 'header', schema: 1, command: 'dump', mode, store: `${dataDir}/store` });
  const running = mode === 'running';
  const sessions = expectedSessions(running);
  expect(all.filter((record) => record.type === 'session')).toEqual(sessions);
  expect(all.filter((record) => record.type === 'message')).toEqual([
    ...messages('sub-inflight', [
      ['sent', 1],
      ['released', 2],
      ['sent', 3],
    ]),
    ...messages('sub-offline', [
      ['queued', null],
      ['queued', null],
      ['queued', null],
    ]),
  ]);
  // Each message record follows its session's record.
  expect(all.map((record) => (record.type === 'message' ? `m:${String(record.clientId)}` : String(record.type)))).toEqual([
    'header',
    'session',
    'session',
    'm:sub-inflight',
    'm:sub-inflight',
    'm:sub-inflight',
    'session',
    'm:sub-offline',
    'm:sub-offline',
    'm:sub-offline',
    ...(running ? ['session'] : []),
    'retained',
    'retained',
    'totals',
  ]);
  expect(all.filter((record) => record.type === 'retained')).toEqual(RETAINED);
  const [totals] = all.filter((record) => record.type === 'totals');
  expect(totals).toMatchObject({
    schema: 1,
    sessions: 3,
    subscriptions: 4,
    queued: 6,
    queuedBytes: 216,
    inflight: 3,
    inbound: 1,
    sharedBodies: 3,
    retained: 2,
    retainedBytes: 106,
  });
  expect(run.stderr).toBe(
    running ? `broker-admin: using the running broker via ${dataDir}/admin.sock\n` : `broker-admin: using the stopped store ${dataDir}/store\n`,
  );
}

describe('broker-admin dump', { timeout: 120_000 }, () => {
  it('while the broker runs: a JSON snapshot of sessions, queues, in flight, inbound QoS 2, retained and totals, over the admin socket', async () => {
    const fixture = await setUp();
    const run = await runAdmin(['dump', '--data', fixture.dataDir, '--json', '--messages']);
    expectDump(run, 'running', fixture.dataDir);
    // The broker still serves its clients afterwards.
    await fixture.inflight.roundTrip();
  });

  it('after SIGTERM: the same content from the stopped store (nobody connected, no clean session)', async () => {
    const fixture = await setUp();
    const running = await runAdmin(['dump', '--data', fixture.dataDir, '--json', '--messages']);
    await stopBroker(fixture);
    const stopped = await runAdmin(['dump', '--data', fixture.dataDir, '--json', '--messages']);
    expectDump(stopped, 'stopped', fixture.dataDir);
    // Stored state is identical in both modes: only the live flags differ, and the last sighting of
    // the clients the shutdown disconnected.
    const stable = (run: AdminRun) =>
      records(run)
        .filter((record) => record.type === 'session' && record.persistent === true)
        .map((record) => ({ ...record, connected: undefined, lastSeen: undefined }));
    expect(stable(stopped)).toEqual(stable(running));
    const lastSeen = (run: AdminRun) => new Map(ofType<SessionRecord>(run, 'session').map((record) => [record.clientId, record.lastSeen]));
    const before = lastSeen(running);
    for (const [clientId, seen] of lastSeen(stopped)) expect(seen! >= before.get(clientId)!, clientId).toBe(true);
    expect(lastSeen(stopped).get('sub-offline')).toBe(before.get('sub-offline'));
  });

  it('readable by default: a table per section, payloads as text or hex, truncated unless --full', async () => {
    const fixture = await setUp();
    await stopBroker(fixture);
    const run = await runAdmin(['dump', '--data', fixture.dataDir, '--messages']);
    expect(run.code, run.stderr).toBe(0);
    const lines = run.stdout.split('\n');
    expect(lines).toContain('Sessions');
    expect(lines).toContain('Retained messages');
    expect(lines).toContain('Totals');
    const row = (start: string) => lines.find((line) => line.startsWith(start))?.split(/\s{2,}/);
    expect(row('sub-inflight')).toEqual([
      'sub-inflight',
      'persistent',
      'no',
      expect.stringMatching(/Z$/),
      expect.stringMatching(/Z$/),
      'alerts/# (2), sensors/# (1)',
      '3',
      '108',
      '0',
      '#1 sent, #2 released, #3 sent',
      '-',
      '-', // owner: the fixture's clients are anonymous
    ]);
    expect(lines).toContainEqual(expect.stringMatching(/^CLIENT\s+SESSION\s+CONNECTED\s+CREATED\s+LAST SEEN\s+SUBSCRIPTIONS\s/));
    expect(row('pub-qos2')).toEqual(['pub-qos2', 'persistent', 'no', expect.stringMatching(/Z$/), expect.stringMatching(/Z$/), '-', '0', '0', '0', '-', '#42', '-']);
    expect(row('status/gw')).toEqual(['status/gw', '1', '6', '"online"']);
    expect(row('bin/blob')).toEqual(['bin/blob', '1', '100', `hex:${BINARY.subarray(0, 64).toString('hex')}…`]);
    expect(lines.some((line) => /^2\s+released\s+#2\s+2\s+no\s+alerts\/fire\s+4\s+"fire"$/.test(line))).toBe(true);

    const full = await runAdmin(['retained', 'list', 'bin/#', '--data', fixture.dataDir, '--full']);
    expect(full.stdout).toContain(`hex:${BINARY.toString('hex')}\n`);
    const fullJson = ofType(await runAdmin(['retained', 'list', 'bin/#', '--data', fixture.dataDir, '--full', '--json']), 'retained');
    expect(fullJson).toEqual([{ ...RETAINED[0], payload: { encoding: 'base64', data: BINARY.toString('base64'), size: 100, truncated: false } }]);
  });

  it('lastSeen moves forward as the client connects and disconnects; null for a record stored without it', async () => {
    const fixture = await setUp();
    const data = ['--data', fixture.dataDir, '--json'];
    const show = async (): Promise<SessionRecord> => {
      const run = await runAdmin(['dump', '--client', 'sub-offline', ...data]);
      expect(run.code, run.stderr).toBe(0);
      return ofType<SessionRecord>(run, 'session')[0]!;
    };
    // Seen at its connect and at its disconnect, both after its creation.
    const offline = await show();
    expect(offline.connected).toBe(false);
    expect(offline.lastSeen! >= offline.createdAt!).toBe(true);

    const client = await connect(fixture.broker, 'sub-offline', false);
    const online = await show();
    expect(online.connected).toBe(true);
    expect(online.createdAt).toBe(offline.createdAt);
    expect(online.lastSeen! >= offline.lastSeen!).toBe(true);

    await client.disconnect();
    const again = await connect(fixture.broker, 'sub-offline', false);
    const reconnected = await show();
    expect(reconnected.createdAt).toBe(offline.createdAt);
    expect(reconnected.lastSeen! >= online.lastSeen!).toBe(true);
    again.socket.destroy();

    // A store written before last-seen was stored: { c } alone.
    await stopBroker(fixture);
    await withStore(join(fixture.dataDir, 'store'), (db) =>
      db.put(keys.session('sub-offline'), encodeRecord(keys.session('sub-offline'), { c: Date.parse(offline.createdAt!) })),
    );
    const old = await show();
    expect(old.createdAt).toBe(offline.createdAt);
    expect(old.lastSeen).toBeNull();
    const table = await runAdmin(['sessions', '--data', fixture.dataDir]);
    const row = table.stdout.split('\n').find((line) => line.startsWith('sub-offline'))?.split(/\s{2,}/);
    expect(row?.slice(0, 5)).toEqual(['sub-offline', 'persistent', 'no', offline.createdAt, '-']);
  });

  it('--client, sessions, session show, retained list FILTER and stats give the same records, in both modes', async () => {
    const fixture = await setUp();
    const check = async (mode: 'running' | 'stopped') => {
      const data = ['--data', fixture.dataDir, '--json'];
      const one = await runAdmin(['dump', '--client', 'sub-inflight', ...data]);
      expect(one.code, one.stderr).toBe(0);
      expect(records(one).map((record) => record.type)).toEqual(['header', 'session']);
      expect(ofType(one, 'session')).toEqual([expectedSessions(mode === 'running')[1]]);

      const list = await runAdmin(['sessions', ...data]);
      expectSchema(list);
      expect(ofType(list, 'session')).toEqual(expectedSessions(mode === 'running'));

      const show = await runAdmin(['session', 'show', 'sub-offline', ...data]);
      expectSchema(show);
      expect(records(show).slice(1)).toEqual([
        expectedSessions(mode === 'running')[2],
        ...messages('sub-offline', [
          ['queued', null],
          ['queued', null],
          ['queued', null],
        ]),
      ]);

      expect(ofType(await runAdmin(['retained', 'list', 'status/+', ...data]), 'retained')).toEqual([RETAINED[1]]);
      expect(ofType(await runAdmin(['retained', 'list', '#', ...data]), 'retained')).toEqual(RETAINED);
      expect(ofType(await runAdmin(['retained', 'list', 'nothing/#', ...data]), 'retained')).toEqual([]);

      const stats = await runAdmin(['stats', ...data]);
      expectSchema(stats);
      // A running broker adds what it counted since it started; a stopped store has no such thing.
      expect(records(stats).map((record) => record.type)).toEqual(mode === 'running' ? ['header', 'totals', 'counters'] : ['header', 'totals']);
      expect(ofType(stats, 'totals')[0]).toMatchObject({ sessions: 3, queued: 6, inflight: 3, inbound: 1, retained: 2 });
      if (mode === 'running') expect(ofType(stats, 'counters')[0]).toMatchObject({ publishesRefused: 0 });
    };
    await check('running');
    await stopBroker(fixture);
    await check('stopped');
  });
});

describe('the admin socket under a slow reader', { timeout: 120_000 }, () => {
  it('a big dump that nobody reads yet does not stall MQTT clients; read later, it is complete and ends with done', async () => {
    const fixture = await setUp();
    const COUNT = 1500;
    const payload = Buffer.alloc(1024, 'x');
    // A large queue for sub-offline: about 1.5 MB of payload, far beyond a socket buffer with --full.
    const publisher = await connect(fixture.broker, 'bulk', true);
    for (let index = 1; index <= COUNT; index++) {
      publisher.send({ cmd: 'publish', topic: 'sensors/bulk', payload, qos: 1, messageId: index, retain: false, dup: false });
    }
    await publisher.take('puback', COUNT);
    await publisher.disconnect();
    // The online subscriber drains its share, so only sub-offline keeps a big queue.
    for (let index = 0; index < COUNT; index++) {
      const publish = await fixture.inflight.next('publish');
      fixture.inflight.send({ cmd: 'puback', messageId: publish.messageId! });
    }
    await fixture.inflight.roundTrip();

    const socket = netConnect(join(fixture.dataDir, 'admin.sock'));
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.pause();
    socket.write(`${JSON.stringify({ op: 'session-show', clientId: 'sub-offline', full: true })}\n`);
    // Not reading: the broker stops at the socket's buffer, and still serves its MQTT clients.
    for (let round = 0; round < 20; round++) {
      await fixture.publisher.roundTrip();
      await fixture.watcher.roundTrip();
    }

    const lines: string[] = [];
    const reader = createInterface({ input: socket, crlfDelay: Infinity });
    for await (const line of reader) lines.push(line);
    const frames = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(frames.at(-1)).toEqual({ done: true });
    const messagesOut = frames.filter((frame) => frame.type === 'message');
    expect(messagesOut).toHaveLength(3 + COUNT);
    expect(messagesOut.at(-1)).toMatchObject({ seq: 3 + COUNT, topic: 'sensors/bulk', payload: { size: 1024, truncated: false } });
  });
});
