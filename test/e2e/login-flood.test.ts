/**
 * A password flood from one address (issue 12, item 7): new logins from other addresses used to
 * get 0x03 six times out of six, because the flood's checks filled the queue of password checks
 * waiting for scrypt; and each refused CONNECT wrote a log line. Now checks waiting are shared
 * between source addresses (each address its own line, the lines taking turns, at most 64 waiting
 * per address), and refusals are summarized: one line per cause at once, then a count.
 *
 * Real sockets; the sources are distinct loopback addresses (Linux routes all of 127.0.0.0/8 to
 * the loopback interface, and a client socket bound to 127.0.0.2 comes from 127.0.0.2).
 */
import { writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import mqttPacket, { type IConnackPacket, type IConnectPacket, type Packet } from 'mqtt-packet';
import { afterEach, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/auth/password-file.js';
import { makeDataDir, removeDataDir } from '../helpers/broker-process.js';
import { startBroker, type RunningBroker } from '../helpers/in-process.js';
import { LogLines } from './hardening-helpers.js';

/** Cheap hashes for the real users: the flood's checks of an unknown user cost a full scrypt each. */
const FAST = { N: 16, r: 1, p: 1 };
const FLOOD_SOURCE = '127.0.0.2';
const FLOOD_CONNECTIONS = 300;

let running: RunningBroker | undefined;
const directories: string[] = [];
const sockets = new Set<Socket>();
afterEach(async () => {
  for (const socket of sockets) socket.destroy();
  sockets.clear();
  await running?.stop();
  running = undefined;
  for (const dir of directories.splice(0)) removeDataDir(dir);
});

/** CONNECT from `source` and the CONNACK's return code (undefined: closed without one). */
async function connackFrom(port: number, source: string, fields: Partial<IConnectPacket>): Promise<number | undefined> {
  const socket = connect({ port, host: '127.0.0.1', localAddress: source });
  sockets.add(socket);
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  try {
    return await new Promise<number | undefined>((resolve) => {
      socket.on('connect', () =>
        socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: '', ...fields })),
      );
      parser.on('packet', (packet: Packet) => packet.cmd === 'connack' && resolve((packet as IConnackPacket).returnCode));
      socket.on('data', (chunk: Buffer) => parser.parse(chunk));
      socket.on('close', () => resolve(undefined));
      socket.on('error', () => resolve(undefined));
    });
  } finally {
    socket.destroy();
    sockets.delete(socket);
  }
}

/** Wrong passwords for a user that does not exist, from one address, as fast as the broker answers. */
function flood(port: number) {
  const refusals = new Map<number | undefined, number>();
  let stopping = false;
  let firstBusy!: () => void;
  const busy = new Promise<void>((resolve) => (firstBusy = resolve));
  const worker = async () => {
    while (!stopping) {
      const code = await connackFrom(port, FLOOD_SOURCE, { username: 'mallory', password: Buffer.from('guess') });
      refusals.set(code, (refusals.get(code) ?? 0) + 1);
      if (code === 3) firstBusy();
    }
  };
  const workers = Array.from({ length: FLOOD_CONNECTIONS }, worker);
  return {
    refusals,
    /** Resolves once the flood has filled its share: a check of its was refused as too busy. */
    busy,
    /** Ends it; its checks still waiting are skipped once their clients are gone. */
    async stop() {
      stopping = true;
      for (const socket of sockets) socket.destroy();
      await Promise.all(workers);
    },
  };
}

describe('a password flood from one address', { timeout: 60_000 }, () => {
  it('does not lock out new logins from other addresses (six of six get CONNACK 0 while it runs), and is logged as one line per cause, then a count', async () => {
    const dir = makeDataDir('broker-login-flood-');
    directories.push(dir);
    const users = Array.from({ length: 6 }, (_, index) => `user-${index}`);
    const lines = await Promise.all(users.map(async (user) => `${user}:${await hashPassword(`${user}-secret`, FAST)}`));
    writeFileSync(join(dir, 'passwd'), `${lines.join('\n')}\n`);
    const log = new LogLines();
    running = await startBroker({ dataDir: join(dir, 'data'), passwordFile: join(dir, 'passwd'), log });
    const { port } = running;

    const attack = flood(running.port);
    await attack.busy;
    const busyBefore = attack.refusals.get(3)!;
    // Each user logs in for the first time (no verified password cached): each needs a turn at scrypt.
    const results = await Promise.all(
      users.map((user, index) => connackFrom(port, `127.0.0.${3 + index}`, { clientId: user, username: user, password: Buffer.from(`${user}-secret`) })),
    );
    // The flood went on all along: more of its checks were refused meanwhile.
    const busyDuring = attack.refusals.get(3)! - busyBefore;
    await attack.stop();
    console.log(`flood refusals by return code: ${JSON.stringify([...attack.refusals])}; during the six logins: ${busyDuring} refused as busy`);

    expect(results).toEqual([0, 0, 0, 0, 0, 0]);
    expect(busyDuring).toBeGreaterThan(0);
    // Its own share of checks ran: wrong passwords, 0x04 [MQTT-3.2.2-5].
    expect(attack.refusals.get(4)).toBeGreaterThan(0);
    expect(log.matching(/CONNECT refused: too busy to check a password: 64 password checks from 127\.0\.0\.2 are already waiting/)).toHaveLength(1);

    // Hundreds refused, one line for each of the two causes; once the broker stops, the counts.
    expect(log.matching(/CONNECT refused/)).toHaveLength(2);
    await running.stop();
    running = undefined;
    const summaries = log.matching(/^warn CONNECT refused \(0x0[34] [^)]*\): \d+ more in the last \d+ s, from 1 address; the last: connection 127\.0\.0\.2:\d+: CONNECT refused: /);
    expect(summaries.map((line) => /\((0x0[34])/.exec(line)![1]).sort()).toEqual(['0x03', '0x04']);
    const counted = (code: string) => Number(/: (\d+) more/.exec(summaries.find((line) => line.includes(`(${code} `))!)![1]);
    // Every refusal the flood received is accounted for, the one logged at once and the count (and
    // those whose CONNACK its sockets, cut off at the end, did not read).
    const cutOff = attack.refusals.get(undefined) ?? 0;
    for (const [code, name] of [[3, '0x03'], [4, '0x04']] as const) {
      expect(counted(name) + 1).toBeGreaterThanOrEqual(attack.refusals.get(code)!);
      expect(counted(name) + 1).toBeLessThanOrEqual(attack.refusals.get(code)! + cutOff);
    }
  });
});
