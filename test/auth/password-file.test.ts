/**
 * The password file: its format, scrypt hashing and verification, line-precise parse errors, and
 * the edits broker-admin makes (atomic, mode 0600, other lines kept).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import {
  DEFAULT_SCRYPT,
  fairShareKey,
  HASH_QUEUE_LIMITS,
  HashQueue,
  hashPassword,
  parsePasswordFile,
  readPasswordFile,
  removeUser,
  setPassword,
  verifyPassword,
} from '../../src/auth/password-file.js';
import { BrokerError, ErrorCodes } from '../../src/errors.js';

/** Cheap parameters for the cases that hash many times; the format is the same. */
const FAST = { N: 16, r: 1, p: 1 };

const directories: string[] = [];
afterEach(() => {
  for (const dir of directories.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'broker-passwd-'));
  directories.push(dir);
  return dir;
}

function parseError(text: string): string {
  try {
    parsePasswordFile(text, 'passwd');
  } catch (error) {
    expect(error).toBeInstanceOf(BrokerError);
    expect((error as BrokerError).code).toBe(ErrorCodes.PASSWORD_FILE_INVALID);
    return (error as Error).message;
  }
  throw new Error('expected a parse error');
}

describe('hashPassword and verifyPassword', () => {
  it('default hash: $scrypt$N=16384,r=8,p=1$<16-byte salt>$<32-byte hash>; verifies the password and nothing else', async () => {
    const encoded = await hashPassword('s3cret');
    const match = /^\$scrypt\$N=16384,r=8,p=1\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(encoded);
    expect(match, encoded).not.toBeNull();
    expect(Buffer.from(match![1]!, 'base64')).toHaveLength(16);
    expect(Buffer.from(match![2]!, 'base64')).toHaveLength(32);
    expect(DEFAULT_SCRYPT).toEqual({ N: 16384, r: 8, p: 1 });
    expect(await verifyPassword(encoded, 's3cret')).toBe(true);
    expect(await verifyPassword(encoded, Buffer.from('s3cret'))).toBe(true);
    expect(await verifyPassword(encoded, 's3cret ')).toBe(false);
    expect(await verifyPassword(encoded, '')).toBe(false);
  });

  it('a fresh salt every time: the same password never gives the same line twice', async () => {
    const [a, b] = await Promise.all([hashPassword('same', FAST), hashPassword('same', FAST)]);
    expect(a).not.toBe(b);
    expect(await verifyPassword(a, 'same')).toBe(true);
    expect(await verifyPassword(b, 'same')).toBe(true);
  });

  it('trailing zero bytes count: scrypt alone (HMAC key padding) would take "abc" and "abc\\0" for one password', async () => {
    for (const [password, other] of [
      [Buffer.alloc(0), Buffer.from([0])],
      [Buffer.from('abc'), Buffer.from('abc\u0000')],
    ] as const) {
      const encoded = await hashPassword(password, FAST);
      expect(await verifyPassword(encoded, password)).toBe(true);
      expect(await verifyPassword(encoded, other)).toBe(false);
    }
  });

  it('property: a password verifies against its own hash, any other does not (bytes, not just text)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 40 }), fc.uint8Array({ maxLength: 40 }), async (password, other) => {
        const encoded = await hashPassword(Buffer.from(password), FAST);
        expect(await verifyPassword(encoded, Buffer.from(password))).toBe(true);
        expect(await verifyPassword(encoded, Buffer.from(other))).toBe(Buffer.from(password).equals(Buffer.from(other)));
      }),
      { numRuns: 100 },
    );
  });
});

describe('parsePasswordFile', () => {
  it('reads users with their line numbers; comments, blank lines and CRLF are fine', async () => {
    const alice = await hashPassword('a', FAST);
    const bob = await hashPassword('b', FAST);
    const table = parsePasswordFile(`# users\r\n\r\nalice:${alice}\r\n   # indented comment\n  bob:${bob}  \n`, 'passwd');
    expect(table.size).toBe(2);
    expect(table.entries().map(({ user, line }) => [user, line])).toEqual([
      ['alice', 3],
      ['bob', 5],
    ]);
    expect(table.has('alice')).toBe(true);
    expect(table.has('carol')).toBe(false);
    expect(await table.verify('alice', Buffer.from('a'))).toBe(true);
    expect(await table.verify('bob', Buffer.from('a'))).toBe(false);
  });

  it('an empty file (or only comments) has no users', () => {
    expect(parsePasswordFile('', 'passwd').size).toBe(0);
    expect(parsePasswordFile('# nobody yet\n\n', 'passwd').size).toBe(0);
  });

  const salt = Buffer.alloc(16, 1).toString('base64');
  const hash = Buffer.alloc(32, 2).toString('base64');
  const good = `$scrypt$N=16384,r=8,p=1$${salt}$${hash}`;
  const cases: Array<[string, string, RegExp]> = [
    ['no colon', 'alice', /^passwd:2: expected user:\$scrypt\$…, found no colon$/],
    ['empty user name', `:${good}`, /^passwd:2: a user name cannot be empty$/],
    ['other scheme', 'alice:$6$salt$hash', /^passwd:2: user "alice": expected \$scrypt\$N=<n>,r=<r>,p=<p>\$<salt base64>\$<hash base64>$/],
    ['unknown scheme', `alice:$bcrypt$N=1,r=1,p=1$${salt}$${hash}`, /^passwd:2: user "alice": unknown hash scheme "bcrypt"/],
    ['plain text password', 'alice:secret', /^passwd:2: user "alice": expected \$scrypt\$/],
    ['N not a power of 2', `alice:$scrypt$N=1000,r=8,p=1$${salt}$${hash}`, /^passwd:2: user "alice": scrypt N must be a power of 2 from 2 to 1048576, got 1000$/],
    ['N too big', `alice:$scrypt$N=2097152,r=8,p=1$${salt}$${hash}`, /scrypt N must be a power of 2 from 2 to 1048576, got 2097152$/],
    ['r zero', `alice:$scrypt$N=16384,r=0,p=1$${salt}$${hash}`, /^passwd:2: user "alice": scrypt r must be from 1 to 32, got 0$/],
    ['p missing', `alice:$scrypt$N=16384,r=8$${salt}$${hash}`, /scrypt parameters N, r and p are all required$/],
    ['a parameter twice', `alice:$scrypt$N=16384,N=16,r=8,p=1$${salt}$${hash}`, /scrypt parameter N given twice$/],
    ['unknown parameter', `alice:$scrypt$N=16384,r=8,p=1,x=2$${salt}$${hash}`, /bad scrypt parameter "x=2"/],
    ['too much memory', `alice:$scrypt$N=1048576,r=32,p=1$${salt}$${hash}`, /needs more than 256 MiB$/],
    ['salt not base64', `alice:$scrypt$N=16384,r=8,p=1$not*base64$${hash}`, /^passwd:2: user "alice": the salt is not base64$/],
    ['salt too short', `alice:$scrypt$N=16384,r=8,p=1$AAAA$${hash}`, /the salt is 3 bytes, at least 8 are needed$/],
    ['hash too short', `alice:$scrypt$N=16384,r=8,p=1$${salt}$AAAA`, /the hash is 3 bytes, expected 16 to 64$/],
  ];
  for (const [name, line, expected] of cases) {
    it(`error on the line that has it, naming file and line: ${name}`, () => {
      expect(parseError(`# header\n${line}\nbob:${good}\n`)).toMatch(expected);
    });
  }

  it('a user defined twice: the error names both lines', () => {
    expect(parseError(`alice:${good}\n\nalice:${good}\n`)).toBe('passwd:3: user "alice" is already defined on line 1');
  });

  it('readPasswordFile names the file when it cannot be read', async () => {
    const missing = join(tempDir(), 'nope');
    await expect(readPasswordFile(missing)).rejects.toThrow(new RegExp(`^${missing}: cannot read the password file: ENOENT`));
  });
});

describe('PasswordTable.verify', () => {
  it('unknown users, missing and wrong passwords are refused; a right password after a wrong one is accepted', async () => {
    const table = parsePasswordFile(`alice:${await hashPassword('right', FAST)}\n`, 'passwd');
    expect(await table.verify('alice', undefined)).toBe(false);
    expect(await table.verify('alice', Buffer.from('wrong'))).toBe(false);
    expect(await table.verify('alice', Buffer.from('right'))).toBe(true);
    expect(await table.verify('mallory', Buffer.from('right'))).toBe(false);
    expect(await table.verify('Alice', Buffer.from('right'))).toBe(false);
  });

  it('a password that verified once verifies again, and a wrong one is still refused after it (the cache holds no shortcut for it)', async () => {
    const table = parsePasswordFile(`alice:${await hashPassword('right', FAST)}\n`, 'passwd');
    for (let round = 0; round < 3; round++) {
      expect(await table.verify('alice', Buffer.from('right'))).toBe(true);
      expect(await table.verify('alice', Buffer.from('righ'))).toBe(false);
      expect(await table.verify('alice', Buffer.from('right!'))).toBe(false);
    }
  });

  it('a changed hash (reloaded file) does not accept the old password any more', async () => {
    const before = parsePasswordFile(`alice:${await hashPassword('old', FAST)}\n`, 'passwd');
    expect(await before.verify('alice', Buffer.from('old'))).toBe(true);
    const after = parsePasswordFile(`alice:${await hashPassword('new', FAST)}\n`, 'passwd');
    expect(await after.verify('alice', Buffer.from('old'))).toBe(false);
    expect(await after.verify('alice', Buffer.from('new'))).toBe(true);
  });
});

describe('setPassword and removeUser (what broker-admin passwd does)', () => {
  it('creates the file with mode 0600 and one line per user; replaces a user in place; keeps comments and the other lines', async () => {
    const file = join(tempDir(), 'passwd');
    expect(await setPassword(file, 'alice', 'a1')).toBe(false);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    writeFileSync(file, `# our users\n${readFileSync(file, 'utf8')}# end of alice\n`);
    expect(await setPassword(file, 'bob', 'b1')).toBe(false);
    expect(await setPassword(file, 'alice', 'a2')).toBe(true);
    const lines = readFileSync(file, 'utf8').split('\n');
    expect(lines[0]).toBe('# our users');
    expect(lines[1]).toMatch(/^alice:\$scrypt\$/);
    expect(lines[2]).toBe('# end of alice');
    expect(lines[3]).toMatch(/^bob:\$scrypt\$/);
    expect(lines[4]).toBe('');
    expect(lines).toHaveLength(5);
    const table = await readPasswordFile(file);
    expect(await table.verify('alice', Buffer.from('a2'))).toBe(true);
    expect(await table.verify('alice', Buffer.from('a1'))).toBe(false);
    expect(await table.verify('bob', Buffer.from('b1'))).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('removeUser deletes that line only; an unknown user (or no file) changes nothing', async () => {
    const dir = tempDir();
    const file = join(dir, 'passwd');
    expect(await removeUser(file, 'alice')).toBe(false);
    await setPassword(file, 'alice', 'a');
    await setPassword(file, 'bob', 'b');
    const before = readFileSync(file, 'utf8');
    expect(await removeUser(file, 'carol')).toBe(false);
    expect(readFileSync(file, 'utf8')).toBe(before);
    expect(await removeUser(file, 'alice')).toBe(true);
    expect((await readPasswordFile(file)).entries().map(({ user }) => user)).toEqual(['bob']);
    expect(await removeUser(file, 'bob')).toBe(true);
    expect(readFileSync(file, 'utf8')).toBe('');
    // Only the file itself: every temporary file was renamed over it.
    expect(readdirSync(dir)).toEqual(['passwd']);
  });

  it('user names the file cannot hold are refused: colon, line break, empty, leading #, outer spaces', async () => {
    const file = join(tempDir(), 'passwd');
    for (const user of ['a:b', 'a\nb', '', '#root', ' alice']) {
      await expect(setPassword(file, user, 'x')).rejects.toThrow(BrokerError);
    }
    expect(readdirSync(join(file, '..'))).toEqual([]);
  });

  it('a file with a bad line is not edited: the error names the line, the file stays as it was', async () => {
    const file = join(tempDir(), 'passwd');
    writeFileSync(file, 'alice:not-a-hash\n');
    await expect(setPassword(file, 'bob', 'b')).rejects.toThrow(`${file}:1: user "alice": expected $scrypt$`);
    await expect(removeUser(file, 'alice')).rejects.toThrow(`${file}:1:`);
    expect(readFileSync(file, 'utf8')).toBe('alice:not-a-hash\n');
  });
});

describe('PasswordTable.verify under a burst of CONNECTs', () => {
  it('2 checks run, 64 from one address wait (skipped if their client has gone), beyond that AUTH_BUSY at once', async () => {
    const table = parsePasswordFile(`alice:${await hashPassword('right', FAST)}\n`, 'passwd');
    const { running, waitingPerSource } = HASH_QUEUE_LIMITS;
    // All with the right password: a skipped check shows as false. Clients 2.. are "gone".
    const results = await Promise.allSettled(
      Array.from({ length: 300 }, (_, index) => table.verify('alice', 'right', { source: '10.0.0.1', abandoned: () => index >= running })),
    );
    expect(results.slice(0, running)).toEqual(Array.from({ length: running }, () => ({ status: 'fulfilled', value: true })));
    const skipped = results.slice(running, running + waitingPerSource);
    expect(skipped.every((result) => result.status === 'fulfilled' && result.value === false)).toBe(true);
    const busy = results.slice(running + waitingPerSource);
    expect(busy).toHaveLength(300 - running - waitingPerSource);
    for (const result of busy) {
      expect(result.status).toBe('rejected');
      expect(((result as PromiseRejectedResult).reason as BrokerError).code).toBe(ErrorCodes.AUTH_BUSY);
      expect(((result as PromiseRejectedResult).reason as BrokerError).message).toBe(`${waitingPerSource} password checks from 10.0.0.1 are already waiting`);
    }
    // The queue is free again: the next check runs (and, verified before, hits the cache).
    expect(await table.verify('alice', 'right')).toBe(true);
  });

  it('a flood from one address does not lock out the others: their checks wait their own turn', async () => {
    const table = parsePasswordFile(`alice:${await hashPassword('right', FAST)}\nbob:${await hashPassword('builder', FAST)}\n`, 'passwd');
    const flood = Array.from({ length: 300 }, () => table.verify('alice', 'wrong', { source: '10.0.0.1' }).catch((error: BrokerError) => error.code));
    // After the flood filled its share, logins from other addresses still get a turn, and succeed.
    const others = ['10.0.0.2', '10.0.0.3', '10.0.0.4'].map((source) => table.verify('bob', 'builder', { source }));
    expect(await Promise.all(others)).toEqual([true, true, true]);
    const outcomes = await Promise.all(flood);
    expect(outcomes.filter((outcome) => outcome === false)).toHaveLength(HASH_QUEUE_LIMITS.running + HASH_QUEUE_LIMITS.waitingPerSource);
    expect(outcomes.filter((outcome) => outcome === ErrorCodes.AUTH_BUSY)).toHaveLength(300 - HASH_QUEUE_LIMITS.running - HASH_QUEUE_LIMITS.waitingPerSource);
  });
});

describe('HashQueue', () => {
  /** Acquires for each source in turn, recording the order in which their turns come. */
  function queueWith(limits: { running: number; waiting: number; waitingPerSource: number }) {
    const queue = new HashQueue(limits);
    const turns: string[] = [];
    const refused: string[] = [];
    const acquire = (source: string) =>
      queue.acquire(source).then(
        () => void turns.push(source),
        (error: BrokerError) => {
          expect(error.code).toBe(ErrorCodes.AUTH_BUSY);
          refused.push(source);
        },
      );
    return { queue, turns, refused, acquire };
  }

  it('takes turns between addresses (round robin), each address in its arrival order', async () => {
    const { queue, turns, acquire } = queueWith({ running: 1, waiting: 100, waitingPerSource: 100 });
    const all = ['a', 'a', 'a', 'a', 'b', 'b', 'c', 'a'].map(acquire);
    await Promise.resolve();
    // The first runs at once; each release gives the next turn.
    for (let index = 1; index < all.length; index++) queue.release();
    await Promise.all(all);
    expect(turns).toEqual(['a', 'a', 'b', 'c', 'a', 'b', 'a', 'a']);
  });

  it('refuses at once beyond the checks one address may have waiting, while another address still waits its turn', async () => {
    const { queue, turns, refused, acquire } = queueWith({ running: 1, waiting: 100, waitingPerSource: 2 });
    const all = ['a', 'a', 'a', 'a', 'b'].map(acquire);
    await Promise.resolve();
    for (let index = 0; index < 3; index++) queue.release();
    await Promise.all(all);
    expect(refused).toEqual(['a']);
    expect(turns).toEqual(['a', 'a', 'b', 'a']);
  });

  it('with every place taken, a newcomer from an address with fewer waiting displaces the newest of the longest line', async () => {
    const { queue, turns, refused, acquire } = queueWith({ running: 1, waiting: 4, waitingPerSource: 10 });
    const all = ['a', 'a', 'a', 'a', 'a'].map(acquire);
    // Full: a has 4 waiting. b takes the place of a's newest, then again (a 2, b 2); a third b is refused.
    all.push(acquire('b'), acquire('b'), acquire('b'));
    await Promise.resolve();
    for (let index = 0; index < 4; index++) queue.release();
    await Promise.all(all);
    expect(refused).toEqual(['a', 'a', 'b']);
    expect(turns).toEqual(['a', 'a', 'b', 'a', 'b']);
  });

  it('counts an IPv6 /64 as one address, and an IPv4 address mapped into IPv6 as that IPv4 address', () => {
    expect(fairShareKey('127.0.0.2')).toBe('127.0.0.2');
    expect(fairShareKey('::ffff:127.0.0.2')).toBe('127.0.0.2');
    expect(fairShareKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(fairShareKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff')).toBe('2001:db8:1:2::/64');
    expect(fairShareKey('2001:db8:1:3::1')).toBe('2001:db8:1:3::/64');
    expect(fairShareKey('::1')).toBe('0:0:0:0::/64');
    expect(fairShareKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(fairShareKey('64:ff9b::192.0.2.1')).toBe('64:ff9b:0:0::/64');
  });
});
