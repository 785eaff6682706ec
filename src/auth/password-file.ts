import { createHmac, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { BrokerError, ErrorCodes } from '../errors.js';

/**
 * The password file: one line per user, `user:$scrypt$N=16384,r=8,p=1$<salt>$<hash>` (salt and
 * hash in base64), `#` comments and blank lines allowed. Only hashes are stored; a password is
 * checked with scrypt and compared in constant time.
 */

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

/** 16 MiB of memory and some 50 ms of a small board's CPU per hash: costly to guess offline. */
export const DEFAULT_SCRYPT: ScryptParams = { N: 16384, r: 8, p: 1 };
const SALT_BYTES = 16;
const HASH_BYTES = 32;

/** Bounds on what a file may ask for, so a hand-edited line cannot make one check take seconds or gigabytes. */
const MAX_N = 2 ** 20;
const MAX_R = 32;
const MAX_P = 16;
const MAX_MEMORY = 256 * 1024 * 1024;

interface PasswordHash {
  params: ScryptParams;
  salt: Buffer;
  hash: Buffer;
}

export interface PasswordEntry extends PasswordHash {
  user: string;
  /** The encoded hash as written after the colon. */
  encoded: string;
  /** 1-based line in the file. */
  line: number;
}

/** Hashes a password with a fresh random salt; the result is what follows `user:` in the file. */
export async function hashPassword(password: string | Buffer, params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const hash = (await derive(password, salt, params, HASH_BYTES))!; // nothing to abandon here
  return `$scrypt$N=${params.N},r=${params.r},p=${params.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

/** Checks a password against an encoded hash (`$scrypt$…`), in constant time for a given hash. */
export async function verifyPassword(encoded: string, password: string | Buffer): Promise<boolean> {
  const parsed = parseHash(encoded);
  if (typeof parsed === 'string') throw new BrokerError(ErrorCodes.PASSWORD_FILE_INVALID, parsed);
  return matches(parsed, password);
}

async function matches({ params, salt, hash }: PasswordHash, password: string | Buffer, check?: PasswordCheck): Promise<boolean> {
  const derived = await derive(password, salt, params, hash.length, check);
  return derived !== undefined && timingSafeEqual(derived, hash);
}

/** Tells a queued check that its client has gone, so the scrypt is skipped. */
export type Abandoned = () => boolean;

/** What a password check knows of its client, beyond the password. */
export interface PasswordCheck {
  /** The client has gone: a check still waiting for its turn is skipped (false). */
  abandoned?: Abandoned | undefined;
  /** The client's IP address: checks waiting are shared fairly between addresses (see HashQueue). */
  source?: string | undefined;
}

export interface HashQueueLimits {
  /** scrypt computations at once. */
  running: number;
  /** Checks waiting for one, in all. */
  waiting: number;
  /** Checks waiting from one address (an IPv6 /64 counts as one). */
  waitingPerSource: number;
}

/**
 * Two computations at once: they run on libuv's thread pool, which LevelDB needs too, and a burst
 * of CONNECTs must not stall the store's reads and writes. Beyond the waiting limits a CONNECT is
 * refused at once (0x03, server unavailable) instead of queueing work that would outlast its
 * client's patience: a fleet reconnecting at once retries later. One address may take a quarter
 * of the places: a gateway, or a NAT in front of a fleet, brings many clients from one address.
 */
export const HASH_QUEUE_LIMITS: Readonly<HashQueueLimits> = { running: 2, waiting: 256, waitingPerSource: 64 };

interface Waiter {
  resolve(): void;
  reject(error: Error): void;
}

/**
 * Turns at scrypt for password checks, shared fairly between the addresses they come from, so that
 * one address's flood of CONNECTs cannot lock out everyone else's new logins: each address waits
 * in a line of its own and the lines take turns (round robin); one address may have at most
 * `waitingPerSource` checks waiting; and when `waiting` checks wait in all, a check from an
 * address with fewer waiting takes the place of the newest one of the address with the most. A
 * check refused or displaced fails with AUTH_BUSY (CONNACK 0x03).
 */
export class HashQueue {
  readonly #limits: Readonly<HashQueueLimits>;
  #running = 0;
  #waiting = 0;
  /** By source, in turn order: the next turn is the first line's, which then moves to the back. */
  readonly #lines = new Map<string, Waiter[]>();

  constructor(limits: Readonly<HashQueueLimits>) {
    this.#limits = limits;
  }

  /** Resolves when it is this check's turn; then `release()` once it is done. */
  acquire(address = ''): Promise<void> {
    const { running, waiting, waitingPerSource } = this.#limits;
    if (this.#running < running && this.#waiting === 0) {
      this.#running++;
      return Promise.resolve();
    }
    const source = fairShareKey(address);
    const line = this.#lines.get(source) ?? [];
    if (line.length >= waitingPerSource) {
      return Promise.reject(busy(`${waitingPerSource} password checks from ${source || 'this address'} are already waiting`));
    }
    if (this.#waiting >= waiting && !this.#displaceFor(line.length)) {
      return Promise.reject(busy(`${waiting} password checks are already waiting`));
    }
    return new Promise<void>((resolve, reject) => {
      line.push({ resolve, reject });
      if (line.length === 1) this.#lines.set(source, line);
      this.#waiting++;
    });
  }

  release(): void {
    this.#running--;
    const first = this.#lines.entries().next();
    if (first.done) return;
    const [source, line] = first.value;
    const waiter = line.shift()!;
    this.#lines.delete(source);
    if (line.length > 0) this.#lines.set(source, line);
    this.#waiting--;
    this.#running++;
    waiter.resolve();
  }

  /** All places taken: the newest check of the longest line gives its place, if that line is longer than the newcomer's would be. */
  #displaceFor(newcomerWaiting: number): boolean {
    let longest: [string, Waiter[]] | undefined;
    for (const entry of this.#lines) if (!longest || entry[1].length > longest[1].length) longest = entry;
    if (!longest || longest[1].length <= newcomerWaiting + 1) return false;
    const [source, line] = longest;
    line.pop()!.reject(busy(`its place was given to a check from an address with fewer waiting (${line.length + 1} from ${source || 'this address'})`));
    this.#waiting--;
    return true;
  }
}

function busy(message: string): BrokerError {
  return new BrokerError(ErrorCodes.AUTH_BUSY, message);
}

/**
 * The address a check counts against: an IPv4 address as it is (also when mapped into IPv6), an
 * IPv6 address by its /64 prefix, the block one host or one customer line usually gets whole.
 */
export function fairShareKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(':')) return address;
  const [head = '', tail] = address.split('%')[0]!.toLowerCase().split('::');
  // An IPv4 address written at the end of an IPv6 one takes the place of two groups.
  const groups = (text: string | undefined) => (text ? text.split(':').flatMap((group) => (group.includes('.') ? ['0', '0'] : [group])) : []);
  const left = groups(head);
  const right = groups(tail);
  const all = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${all
    .slice(0, 4)
    .map((group) => parseInt(group, 16).toString(16))
    .join(':')}::/64`;
}

const hashing = new HashQueue(HASH_QUEUE_LIMITS);

async function derive(
  password: string | Buffer,
  salt: Buffer,
  { N, r, p }: ScryptParams,
  length: number,
  check: PasswordCheck = {},
): Promise<Buffer | undefined> {
  await hashing.acquire(check.source);
  try {
    if (check.abandoned?.()) return undefined;
    const options: ScryptOptions = { N, r, p, maxmem: 2 * 128 * N * r + 1024 * 1024 };
    return await new Promise<Buffer>((resolve, reject) =>
      scrypt(lengthPrefixed(password), salt, length, options, (error, key) => (error ? reject(error) : resolve(key))),
    );
  } finally {
    hashing.release();
  }
}

/**
 * scrypt keys HMAC-SHA256 with the password, and HMAC pads its key with zero bytes: on its own,
 * "abc" and "abc\0" would give the same hash. MQTT passwords are binary data, so the length goes
 * in front and every byte counts.
 */
function lengthPrefixed(password: string | Buffer): Buffer {
  const bytes = typeof password === 'string' ? Buffer.from(password, 'utf8') : password;
  const prefixed = Buffer.allocUnsafe(4 + bytes.length);
  prefixed.writeUInt32BE(bytes.length, 0);
  bytes.copy(prefixed, 4);
  return prefixed;
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Parses `$scrypt$N=…,r=…,p=…$salt$hash`; returns the problem as a string if it is not one. */
function parseHash(encoded: string): PasswordHash | string {
  const parts = encoded.split('$');
  if (parts.length !== 5 || parts[0] !== '') return 'expected $scrypt$N=<n>,r=<r>,p=<p>$<salt base64>$<hash base64>';
  const [, scheme, paramText, saltText, hashText] = parts as [string, string, string, string, string];
  if (scheme !== 'scrypt') return `unknown hash scheme ${JSON.stringify(scheme)} (only scrypt is supported)`;
  const params: Partial<Record<'N' | 'r' | 'p', number>> = {};
  for (const assignment of paramText.split(',')) {
    const match = /^(N|r|p)=(\d{1,10})$/.exec(assignment);
    if (!match) return `bad scrypt parameter ${JSON.stringify(assignment)} (expected N=<n>,r=<r>,p=<p>)`;
    const name = match[1] as 'N' | 'r' | 'p';
    if (params[name] !== undefined) return `scrypt parameter ${name} given twice`;
    params[name] = Number(match[2]);
  }
  const { N, r, p } = params;
  if (N === undefined || r === undefined || p === undefined) return 'scrypt parameters N, r and p are all required';
  if (N < 2 || N > MAX_N || (N & (N - 1)) !== 0) return `scrypt N must be a power of 2 from 2 to ${MAX_N}, got ${N}`;
  if (r < 1 || r > MAX_R) return `scrypt r must be from 1 to ${MAX_R}, got ${r}`;
  if (p < 1 || p > MAX_P) return `scrypt p must be from 1 to ${MAX_P}, got ${p}`;
  if (128 * N * r > MAX_MEMORY) return `scrypt N=${N}, r=${r} needs more than ${MAX_MEMORY / 1024 / 1024} MiB`;
  if (!BASE64.test(saltText)) return 'the salt is not base64';
  if (!BASE64.test(hashText)) return 'the hash is not base64';
  const salt = Buffer.from(saltText, 'base64');
  const hash = Buffer.from(hashText, 'base64');
  if (salt.length < 8) return `the salt is ${salt.length} bytes, at least 8 are needed`;
  if (hash.length < 16 || hash.length > 64) return `the hash is ${hash.length} bytes, expected 16 to 64`;
  return { params: { N, r, p }, salt, hash };
}

/** A parsed password file. `verify` costs one scrypt, except for a password that verified before. */
export class PasswordTable {
  readonly #entries: Map<string, PasswordEntry>;
  /**
   * user → HMAC of the last password that verified (with a key that lives only in this process)
   * and the hash it verified against. A client that reconnects (after a network outage, a whole
   * fleet at once) is then checked without scrypt; a wrong password always pays the full scrypt.
   * The cache lives in this process only: after a broker restart, every first check pays.
   */
  readonly #verified = new Map<string, { encoded: string; digest: Buffer }>();

  constructor(entries: PasswordEntry[]) {
    this.#entries = new Map(entries.map((entry) => [entry.user, entry]));
  }

  get size(): number {
    return this.#entries.size;
  }

  has(user: string): boolean {
    return this.#entries.has(user);
  }

  /** The entries in file order. */
  entries(): PasswordEntry[] {
    return [...this.#entries.values()].sort((a, b) => a.line - b.line);
  }

  /** Rejects with AUTH_BUSY when too many checks wait (see HashQueue). */
  async verify(user: string, password: Buffer | string | undefined, check?: PasswordCheck): Promise<boolean> {
    const entry = this.#entries.get(user);
    const given = password ?? Buffer.alloc(0);
    if (!entry) {
      // Same work as for a known user: the time taken does not tell which user names exist.
      await matches(DUMMY, given, check);
      return false;
    }
    const digest = createHmac('sha256', CACHE_KEY).update(given).digest();
    const cached = this.#verified.get(user);
    if (cached && cached.encoded === entry.encoded && timingSafeEqual(cached.digest, digest)) return true;
    const ok = await matches(entry, given, check);
    if (ok) this.#verified.set(user, { encoded: entry.encoded, digest });
    return ok;
  }
}

const CACHE_KEY = randomBytes(32);
const DUMMY: PasswordHash = { params: DEFAULT_SCRYPT, salt: randomBytes(SALT_BYTES), hash: randomBytes(HASH_BYTES) };

/** A user name the file can hold: no colon (it ends the name), no line breaks, not empty. */
export function checkUserName(user: string): string | undefined {
  if (user.length === 0) return 'a user name cannot be empty';
  if (user.includes(':')) return `user name ${JSON.stringify(user)} contains ':', which the password file uses as separator`;
  if (/[\r\n\u0000]/.test(user)) return `user name ${JSON.stringify(user)} contains a line break or NUL`;
  if (user.startsWith('#')) return `user name ${JSON.stringify(user)} starts with '#', which would make its line a comment`;
  if (user !== user.trim()) return `user name ${JSON.stringify(user)} starts or ends with white space`;
  return undefined;
}

/** Parses the text of a password file; `file` names it in errors, which also give the line. */
export function parsePasswordFile(text: string, file: string): PasswordTable {
  const entries: PasswordEntry[] = [];
  const seen = new Map<string, number>();
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = index + 1;
    const content = raw.trim();
    if (content === '' || content.startsWith('#')) return;
    const fail = (problem: string): never => {
      throw new BrokerError(ErrorCodes.PASSWORD_FILE_INVALID, `${file}:${line}: ${problem}`);
    };
    const colon = content.indexOf(':');
    if (colon < 0) fail('expected user:$scrypt$…, found no colon');
    const user = content.slice(0, colon);
    const encoded = content.slice(colon + 1);
    const badName = checkUserName(user);
    if (badName) fail(badName);
    const earlier = seen.get(user);
    if (earlier !== undefined) fail(`user ${JSON.stringify(user)} is already defined on line ${earlier}`);
    const parsed = parseHash(encoded);
    if (typeof parsed === 'string') fail(`user ${JSON.stringify(user)}: ${parsed}`);
    seen.set(user, line);
    entries.push({ user, encoded, line, ...(parsed as PasswordHash) });
  });
  return new PasswordTable(entries);
}

/** Reads and parses a password file. */
export async function readPasswordFile(path: string): Promise<PasswordTable> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new BrokerError(ErrorCodes.PASSWORD_FILE_INVALID, `${path}: cannot read the password file: ${(error as Error).message}`, { cause: error });
  }
  return parsePasswordFile(text, path);
}

/**
 * Sets a user's password: replaces the user's line or appends one; comments and the other lines
 * stay as they are. A missing file is created. Returns whether the user existed.
 */
export async function setPassword(path: string, user: string, password: string | Buffer): Promise<boolean> {
  const badName = checkUserName(user);
  if (badName) throw new BrokerError(ErrorCodes.PASSWORD_FILE_INVALID, badName);
  const text = await readIfExists(path);
  const table = parsePasswordFile(text ?? '', path);
  const line = `${user}:${await hashPassword(password)}`;
  const lines = text === undefined || text === '' ? [] : text.replace(/\r?\n$/, '').split(/\r?\n/);
  const existing = table.entries().find((entry) => entry.user === user);
  if (existing) lines[existing.line - 1] = line;
  else lines.push(line);
  await writeFileAtomic(path, `${lines.join('\n')}\n`);
  return existing !== undefined;
}

/** Removes a user's line; returns false (and leaves the file alone) when there is none. */
export async function removeUser(path: string, user: string): Promise<boolean> {
  const text = await readIfExists(path);
  if (text === undefined) return false;
  const existing = parsePasswordFile(text, path)
    .entries()
    .find((entry) => entry.user === user);
  if (!existing) return false;
  const lines = text.replace(/\r?\n$/, '').split(/\r?\n/);
  lines.splice(existing.line - 1, 1);
  await writeFileAtomic(path, lines.length === 0 ? '' : `${lines.join('\n')}\n`);
  return true;
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new BrokerError(ErrorCodes.PASSWORD_FILE_INVALID, `${path}: cannot read the password file: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * Writes a temporary file beside the target (mode 0600, fsynced) and renames it over the target:
 * a reader (the running broker) sees the old file or the new one, never half of one.
 */
export async function writeFileAtomic(path: string, text: string): Promise<void> {
  const temporary = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const handle = await open(temporary, 'wx', 0o600);
    try {
      await handle.writeFile(text, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  // The rename itself is durable once the directory is synced.
  const directory = await open(dirname(path), 'r').catch(() => undefined);
  if (directory) {
    await directory.sync().catch(() => {});
    await directory.close();
  }
}
