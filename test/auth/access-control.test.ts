/**
 * AccessControl, the object the protocol layer asks: who a CONNECT is, and what a client may do;
 * files read at start (errors stop the start), reloaded on change and on reload() (errors keep the
 * rules in force).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AccessControl, type AccessControlOptions } from '../../src/auth/access-control.js';
import { setPassword } from '../../src/auth/password-file.js';
import { BrokerError, ErrorCodes } from '../../src/errors.js';
import type { Logger } from '../../src/logger.js';

const LOOPBACK = { loopback: true, allowAnonymous: false };
const EXPOSED = { loopback: false, allowAnonymous: false };
const OPEN = { loopback: false, allowAnonymous: true };

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'broker-access-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A logger that keeps its lines and lets a test wait for one (no sleeps). */
class RecordingLog implements Logger {
  readonly lines: string[] = [];
  #waiters: Array<{ pattern: RegExp; resolve: (line: string) => void }> = [];

  info = (message: string) => this.#add(`info ${message}`);
  warn = (message: string) => this.#add(`warn ${message}`);
  error = (message: string) => this.#add(`error ${message}`);

  next(pattern: RegExp): Promise<string> {
    return new Promise((resolve) => this.#waiters.push({ pattern, resolve }));
  }

  #add(line: string): void {
    this.lines.push(line);
    this.#waiters = this.#waiters.filter(({ pattern, resolve }) => {
      if (!pattern.test(line)) return true;
      resolve(line);
      return false;
    });
  }
}

async function started(options: Omit<AccessControlOptions, 'log'> & { log?: RecordingLog }): Promise<AccessControl> {
  const access = new AccessControl({ log: new RecordingLog(), watch: false, ...options });
  await access.start();
  cleanups.push(() => access.close());
  return access;
}

const password = (text: string) => Buffer.from(text);

describe('authenticate', () => {
  it('with a password file: the right password is accepted as that user; a wrong one, or an unknown user, gets 0x04', async () => {
    const passwordFile = join(tempDir(), 'passwd');
    await setPassword(passwordFile, 'alice', 'wonderland');
    const access = await started({ passwordFile });
    for (const listener of [LOOPBACK, EXPOSED, OPEN]) {
      expect(await access.authenticate({ username: 'alice', password: password('wonderland') }, listener)).toEqual({ accepted: true, user: 'alice' });
      for (const wrong of [{ username: 'alice', password: password('wonderlan') }, { username: 'alice' }, { username: 'bob', password: password('wonderland') }]) {
        expect(await access.authenticate(wrong, listener)).toMatchObject({ accepted: false, returnCode: 0x04 });
      }
    }
  });

  it('anonymous (no user name): allowed on loopback and where allow_anonymous is on, else 0x05', async () => {
    const passwordFile = join(tempDir(), 'passwd');
    await setPassword(passwordFile, 'alice', 'wonderland');
    const access = await started({ passwordFile });
    expect(await access.authenticate({}, LOOPBACK)).toEqual({ accepted: true, user: undefined });
    expect(await access.authenticate({}, OPEN)).toEqual({ accepted: true, user: undefined });
    expect(await access.authenticate({}, EXPOSED)).toMatchObject({ accepted: false, returnCode: 0x05 });
  });

  it('without a password file a user name is taken as given but proves nothing: refused (0x05) where anonymous clients are', async () => {
    const access = await started({});
    expect(await access.authenticate({ username: 'alice', password: password('x') }, LOOPBACK)).toEqual({ accepted: true, user: 'alice' });
    expect(await access.authenticate({ username: 'alice' }, OPEN)).toEqual({ accepted: true, user: 'alice' });
    expect(await access.authenticate({ username: 'alice', password: password('x') }, EXPOSED)).toMatchObject({ accepted: false, returnCode: 0x05 });
  });

  it('a verified client certificate names the user: no password needed, even where anonymous clients are refused', async () => {
    const passwordFile = join(tempDir(), 'passwd');
    await setPassword(passwordFile, 'alice', 'wonderland');
    const access = await started({ passwordFile });
    expect(await access.authenticate({ certificateUser: 'sensor-7' }, EXPOSED)).toEqual({ accepted: true, user: 'sensor-7' });
    expect(await access.authenticate({ certificateUser: 'sensor-7', username: 'alice', password: password('nope') }, EXPOSED)).toEqual({
      accepted: true,
      user: 'sensor-7',
    });
  });
});

describe('without an ACL file', () => {
  it('everything is allowed', async () => {
    const access = await started({});
    expect(access.hasAcl).toBe(false);
    expect(access.canPublish('c', undefined, '$SYS/x')).toBe(true);
    expect(access.canSubscribe('c', 'u', '#')).toBe(true);
    expect(access.canRead('c', 'u', 'a/b')).toBe(true);
  });
});

describe('start: the files must read and parse', () => {
  it('a bad line or a missing file is an error naming the file (and line); nothing is started', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'acl'), 'topic read a\ntopic raed b\n');
    writeFileSync(join(dir, 'passwd'), '# fine\nalice\n');
    const failure = (options: Omit<AccessControlOptions, 'log'>) =>
      new AccessControl({ log: new RecordingLog(), watch: false, ...options }).start().then(
        () => undefined,
        (error: unknown) => error as BrokerError,
      );
    const acl = await failure({ aclFile: join(dir, 'acl') });
    expect(acl?.code).toBe(ErrorCodes.ACL_FILE_INVALID);
    expect(acl?.message).toBe(`${join(dir, 'acl')}:2: unknown access "raed" (expected read, write, readwrite, subscribe or deny)`);
    const passwd = await failure({ passwordFile: join(dir, 'passwd') });
    expect(passwd?.code).toBe(ErrorCodes.PASSWORD_FILE_INVALID);
    expect(passwd?.message).toBe(`${join(dir, 'passwd')}:2: expected user:$scrypt$…, found no colon`);
    const missing = await failure({ aclFile: join(dir, 'none') });
    expect(missing?.message).toMatch(/none: cannot read the ACL file: ENOENT/);
  });
});

describe('reload', () => {
  it('a file that parses replaces the rules; one that does not keeps the rules in force and logs why', async () => {
    const dir = tempDir();
    const aclFile = join(dir, 'acl');
    const passwordFile = join(dir, 'passwd');
    writeFileSync(aclFile, 'topic readwrite a/#\n');
    await setPassword(passwordFile, 'alice', 'one');
    const log = new RecordingLog();
    const access = await started({ aclFile, passwordFile, log });
    expect(access.canPublish('c', undefined, 'a/1')).toBe(true);
    expect(access.canPublish('c', undefined, 'b/1')).toBe(false);

    writeFileSync(aclFile, 'topic readwrite b/#\n');
    await setPassword(passwordFile, 'bob', 'two');
    await access.reload();
    expect(access.canPublish('c', undefined, 'a/1')).toBe(false);
    expect(access.canPublish('c', undefined, 'b/1')).toBe(true);
    expect(await access.authenticate({ username: 'bob', password: password('two') }, EXPOSED)).toMatchObject({ accepted: true });

    writeFileSync(aclFile, 'topic readwrite c/#\ntopic nonsense c/x\n');
    writeFileSync(passwordFile, 'garbage\n');
    await access.reload();
    expect(access.canPublish('c', undefined, 'b/1')).toBe(true);
    expect(access.canPublish('c', undefined, 'c/1')).toBe(false);
    expect(await access.authenticate({ username: 'bob', password: password('two') }, EXPOSED)).toMatchObject({ accepted: true });
    expect(log.lines).toContainEqual(`error ACL file not reloaded, the previous rules stay in force: ${aclFile}:2: unknown access "nonsense" (expected read, write, readwrite, subscribe or deny)`);
    expect(log.lines).toContainEqual(`error password file not reloaded, the previous users stay in force: ${passwordFile}:1: expected user:$scrypt$…, found no colon`);
  });

  it('lines Mosquitto reads otherwise than they look are logged as warnings, at start and at each reload', async () => {
    const dir = tempDir();
    const aclFile = join(dir, 'acl');
    writeFileSync(aclFile, 'topic read\n');
    const log = new RecordingLog();
    const access = await started({ aclFile, log });
    expect(access.canPublish('c', undefined, 'read')).toBe(true);
    const warning = `warn ACL file ${aclFile}:1: "topic read" grants readwrite on the topic "read", as Mosquitto reads it (is the topic missing?)`;
    expect(log.lines.filter((line) => line.startsWith('warn'))).toEqual([warning]);
    writeFileSync(aclFile, 'user alice # the boss\ntopic read\n');
    await access.reload();
    expect(log.lines.filter((line) => line.startsWith('warn'))).toEqual([
      warning,
      `warn ACL file ${aclFile}:1: the user name is "alice # the boss", the whole rest of the line, as Mosquitto reads it (a comment needs a line of its own)`,
      warning.replace(`${aclFile}:1:`, `${aclFile}:2:`),
    ]);
  });

  it('a change on disk is picked up by itself (the directory is watched), a temp file renamed over the old one included', async () => {
    const dir = tempDir();
    const aclFile = join(dir, 'acl');
    writeFileSync(aclFile, 'topic read a\n');
    const log = new RecordingLog();
    const access = await started({ aclFile, log, watch: true });
    expect(access.canRead('c', undefined, 'b')).toBe(false);

    const reloaded = log.next(/ACL file .* reloaded/);
    writeFileSync(aclFile, 'topic read b\n');
    await reloaded;
    expect(access.canRead('c', undefined, 'b')).toBe(true);

    // What broker-admin passwd does to the password file: write a temp file, rename it over.
    const passwordFile = join(dir, 'passwd');
    await setPassword(passwordFile, 'alice', 'x');
    const withPasswords = await started({ passwordFile, log, watch: true });
    expect(await withPasswords.authenticate({ username: 'bob', password: password('y') }, EXPOSED)).toMatchObject({ accepted: false });
    const passwordsReloaded = log.next(/password file .* reloaded: 2 users/);
    await setPassword(passwordFile, 'bob', 'y');
    await passwordsReloaded;
    expect(await withPasswords.authenticate({ username: 'bob', password: password('y') }, EXPOSED)).toEqual({ accepted: true, user: 'bob' });
  });
});
