import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { BrokerError, ErrorCodes, errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import { parseAcl, type Acl, type ClientRules } from './acl.js';
import { readPasswordFile, type Abandoned, type PasswordTable } from './password-file.js';

/** What authentication needs to know of the listener a client came through. */
export interface ListenerPolicy {
  /** Bound to a loopback address: anonymous clients are always allowed there. */
  readonly loopback: boolean;
  /** The listener's effective allow_anonymous. */
  readonly allowAnonymous: boolean;
}

/** What a CONNECT offers to prove who the client is. */
export interface Credentials {
  username?: string | undefined;
  password?: Buffer | undefined;
  /** The subject CN of a verified client certificate (TLS cert_username): already authenticated. */
  certificateUser?: string | undefined;
  /** True once the client has gone: a password check still waiting is skipped. */
  abandoned?: Abandoned;
}

/** CONNACK return codes of a refusal (MQTT 3.1.1 table 3.1). */
export const BAD_USER_NAME_OR_PASSWORD = 0x04;
export const NOT_AUTHORIZED = 0x05;
export const SERVER_UNAVAILABLE = 0x03;

export type Authentication =
  | { accepted: true; /** The user name the client acts as; undefined for an anonymous client. */ user: string | undefined }
  | { accepted: false; returnCode: typeof BAD_USER_NAME_OR_PASSWORD | typeof NOT_AUTHORIZED | typeof SERVER_UNAVAILABLE; reason: string };

export interface AccessControlOptions {
  /** Without it, user names are not verified (and a client with one still counts as anonymous). */
  passwordFile?: string;
  /** Without it, every client may publish, subscribe to and receive everything. */
  aclFile?: string;
  log: Logger;
  /** Reload the files when they change on disk (default true). */
  watch?: boolean;
}

/** Changes arrive in bursts (an editor's write, a temp file renamed over the old one). */
const RELOAD_DEBOUNCE_MS = 100;
/** Compiled per-client rules kept; beyond it the cache starts afresh (it is only a cache). */
const MAX_CACHED_CLIENTS = 50_000;

/**
 * The one object the protocol layer asks about identity and permissions: who a CONNECT is
 * (password file, certificate, anonymous rule) and what a client may publish, subscribe to and
 * receive (ACL file). Both files are reloaded when they change and on `reload()` (SIGHUP); a reload
 * that fails keeps the rules in force and logs why.
 */
export class AccessControl {
  readonly #passwordFile: string | undefined;
  readonly #aclFile: string | undefined;
  readonly #log: Logger;
  readonly #watch: boolean;
  #passwords: PasswordTable | undefined;
  #acl: Acl | undefined;
  /** user (ANONYMOUS for none) → client id → compiled rules of the current ACL. */
  #compiled = new Map<string | typeof ANONYMOUS, Map<string, ClientRules>>();
  #compiledCount = 0;
  readonly #watchers: FSWatcher[] = [];
  #reloadTimer: NodeJS.Timeout | undefined;
  #reloading: Promise<void> = Promise.resolve();

  constructor(options: AccessControlOptions) {
    this.#passwordFile = options.passwordFile === undefined ? undefined : resolve(options.passwordFile);
    this.#aclFile = options.aclFile === undefined ? undefined : resolve(options.aclFile);
    this.#log = options.log;
    this.#watch = options.watch ?? true;
  }

  /** Whether an ACL file is in force: without one every check below is true. */
  get hasAcl(): boolean {
    return this.#aclFile !== undefined;
  }

  /** Reads both files; a missing or invalid one is an error (the broker does not start). Then watches them. */
  async start(): Promise<void> {
    const [passwords, acl] = await Promise.all([this.#readPasswords(), this.#readAcl()]);
    this.#passwords = passwords;
    this.#setAcl(acl);
    if (this.#passwordFile) this.#log.info(`password file ${this.#passwordFile}: ${passwords!.size} users`);
    if (this.#aclFile) this.#log.info(`ACL file ${this.#aclFile}: ${acl!.ruleCount} rules`);
    this.#warnAbout(acl);
    if (acl?.namesUsers && !this.#passwordFile) {
      this.#log.warn(
        `ACL file ${this.#aclFile} has rules for user names, but without a password file user names are not verified: any client can claim one`,
      );
    }
    if (this.#watch) this.#startWatching();
  }

  /**
   * Re-reads both files. Each one that reads and parses replaces the rules in force; one that does
   * not leaves them as they were, and the error is logged. Resolves when done; never rejects.
   */
  reload(): Promise<void> {
    this.#reloading = this.#reloading.then(async () => {
      if (this.#passwordFile) {
        try {
          this.#passwords = await this.#readPasswords();
          this.#log.info(`password file ${this.#passwordFile} reloaded: ${this.#passwords!.size} users`);
        } catch (error) {
          this.#log.error(`password file not reloaded, the previous users stay in force: ${errorMessage(error)}`);
        }
      }
      if (this.#aclFile) {
        try {
          this.#setAcl(await this.#readAcl());
          this.#log.info(`ACL file ${this.#aclFile} reloaded: ${this.#acl!.ruleCount} rules`);
          this.#warnAbout(this.#acl);
        } catch (error) {
          this.#log.error(`ACL file not reloaded, the previous rules stay in force: ${errorMessage(error)}`);
        }
      }
    });
    return this.#reloading;
  }

  /** Stops watching the files. */
  close(): void {
    clearTimeout(this.#reloadTimer);
    for (const watcher of this.#watchers.splice(0)) watcher.close();
  }

  /**
   * Who a CONNECT is. A verified client certificate names the user. A user name is checked against
   * the password file (0x04 when it does not verify); without a password file it is taken as given
   * but proves nothing, so the client is treated as anonymous for the listener rule: anonymous
   * clients are allowed on loopback listeners and where allow_anonymous is on, else 0x05.
   */
  async authenticate(credentials: Credentials, listener: ListenerPolicy): Promise<Authentication> {
    const { username, password, certificateUser } = credentials;
    if (certificateUser !== undefined) return { accepted: true, user: certificateUser };
    const passwords = this.#passwords;
    if (username !== undefined && passwords) {
      let verified: boolean;
      try {
        verified = await passwords.verify(username, password, credentials.abandoned);
      } catch (error) {
        if (!(error instanceof BrokerError && error.code === ErrorCodes.AUTH_BUSY)) throw error;
        return { accepted: false, returnCode: SERVER_UNAVAILABLE, reason: `too busy to check a password: ${error.message}` };
      }
      if (verified) return { accepted: true, user: username };
      return { accepted: false, returnCode: BAD_USER_NAME_OR_PASSWORD, reason: `user name or password not accepted for ${JSON.stringify(username)}` };
    }
    if (listener.loopback || listener.allowAnonymous) return { accepted: true, user: username };
    return {
      accepted: false,
      returnCode: NOT_AUTHORIZED,
      reason:
        username === undefined
          ? 'anonymous clients are not allowed on this listener'
          : 'user names cannot be verified without a password file, and anonymous clients are not allowed on this listener',
    };
  }

  /** May this client publish on `topic`? */
  canPublish(clientId: string, user: string | undefined, topic: string): boolean {
    return this.#acl === undefined || this.#rules(clientId, user).canWrite(topic);
  }

  /** May this client subscribe to `filter`? */
  canSubscribe(clientId: string, user: string | undefined, filter: string): boolean {
    return this.#acl === undefined || this.#rules(clientId, user).canSubscribe(filter);
  }

  /** May the session of this client (owned by `user`) receive a message on `topic`? */
  canRead(clientId: string, user: string | undefined, topic: string): boolean {
    return this.#acl === undefined || this.#rules(clientId, user).canRead(topic);
  }

  #rules(clientId: string, user: string | undefined): ClientRules {
    const key = user ?? ANONYMOUS;
    let byClient = this.#compiled.get(key);
    let rules = byClient?.get(clientId);
    if (rules) return rules;
    if (this.#compiledCount >= MAX_CACHED_CLIENTS) {
      this.#compiled = new Map();
      this.#compiledCount = 0;
      byClient = undefined;
    }
    if (!byClient) {
      byClient = new Map();
      this.#compiled.set(key, byClient);
    }
    rules = this.#acl!.forClient(clientId, user);
    byClient.set(clientId, rules);
    this.#compiledCount++;
    return rules;
  }

  #setAcl(acl: Acl | undefined): void {
    this.#acl = acl;
    this.#compiled = new Map();
    this.#compiledCount = 0;
  }

  /** Lines that Mosquitto, and so this broker, reads otherwise than they look. */
  #warnAbout(acl: Acl | undefined): void {
    for (const warning of acl?.warnings ?? []) this.#log.warn(`ACL file ${warning}`);
  }

  async #readPasswords(): Promise<PasswordTable | undefined> {
    return this.#passwordFile === undefined ? undefined : readPasswordFile(this.#passwordFile);
  }

  async #readAcl(): Promise<Acl | undefined> {
    const file = this.#aclFile;
    if (file === undefined) return undefined;
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      throw new BrokerError(ErrorCodes.ACL_FILE_INVALID, `${file}: cannot read the ACL file: ${errorMessage(error)}`, { cause: error });
    }
    return parseAcl(text, file);
  }

  /**
   * Watches the directories, not the files: `broker-admin passwd` and most editors replace a file
   * by renaming a new one over it, which a watch on the old file would not follow.
   */
  #startWatching(): void {
    const names = new Map<string, Set<string>>();
    for (const file of [this.#passwordFile, this.#aclFile]) {
      if (file === undefined) continue;
      const directory = dirname(file);
      const set = names.get(directory) ?? new Set<string>();
      set.add(basename(file));
      names.set(directory, set);
    }
    for (const [directory, files] of names) {
      try {
        const watcher = watch(directory, { persistent: false }, (_event, filename) => {
          // Some platforms do not say which file changed: reload then, to be safe.
          if (filename === null || files.has(filename.toString())) this.#scheduleReload();
        });
        watcher.on('error', (error) => {
          this.#log.warn(`stopped watching ${directory} for changes (reload with SIGHUP): ${errorMessage(error)}`);
          watcher.close();
        });
        this.#watchers.push(watcher);
      } catch (error) {
        this.#log.warn(`cannot watch ${directory} for changes (reload with SIGHUP): ${errorMessage(error)}`);
      }
    }
  }

  #scheduleReload(): void {
    clearTimeout(this.#reloadTimer);
    this.#reloadTimer = setTimeout(() => void this.reload(), RELOAD_DEBOUNCE_MS);
    this.#reloadTimer.unref();
  }
}

const ANONYMOUS = Symbol('anonymous');
