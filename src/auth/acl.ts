import { BrokerError, ErrorCodes } from '../errors.js';
import { isValidTopicFilter, topicMatches } from '../routing/topic.js';

/**
 * The ACL file (Mosquitto-like):
 *
 *     topic read $SYS/#                  # before any user/client line: applies to everyone
 *     user alice
 *     topic readwrite sensors/#
 *     topic deny sensors/secret/#
 *     client gateway-1
 *     topic write devices/gateway-1/#
 *     pattern readwrite devices/%c/#     # every client; %c = client id, %u = user name
 *
 * Access words: read (receive on matching topics; subscribe to filters it covers), write
 * (publish), subscribe (subscribe to filters it covers, nothing more: receiving needs read),
 * readwrite (read + write), deny (overrides every allow for the topics it matches). What no rule
 * grants is denied.
 */

export type AccessWord = 'read' | 'write' | 'readwrite' | 'subscribe' | 'deny';

const ACCESS_WORDS: readonly AccessWord[] = ['read', 'write', 'readwrite', 'subscribe', 'deny'];

export interface AclRule {
  access: AccessWord;
  /** A topic filter; in pattern rules it may hold %c and %u. */
  pattern: string;
  /** 1-based line in the file. */
  line: number;
}

/** The rules that apply to one client: user name (undefined: anonymous) and client id. */
export class ClientRules {
  readonly #read: string[] = [];
  readonly #write: string[] = [];
  /** read and subscribe rules: either lets a client subscribe to a filter it covers. */
  readonly #subscribe: string[] = [];
  readonly #deny: string[] = [];

  constructor(rules: Iterable<{ access: AccessWord; pattern: string }>) {
    for (const { access, pattern } of rules) {
      if (access === 'deny') this.#deny.push(pattern);
      if (access === 'read' || access === 'readwrite') this.#read.push(pattern);
      if (access === 'write' || access === 'readwrite') this.#write.push(pattern);
      if (access === 'read' || access === 'readwrite' || access === 'subscribe') this.#subscribe.push(pattern);
    }
  }

  /** May this client receive a message published on `topic`? */
  canRead(topic: string): boolean {
    return !matchesAny(this.#deny, topic) && matchesAny(this.#read, topic);
  }

  /** May this client publish on `topic`? */
  canWrite(topic: string): boolean {
    return !matchesAny(this.#deny, topic) && matchesAny(this.#write, topic);
  }

  /**
   * May this client subscribe to `filter`? A read or subscribe rule must cover it (every topic the
   * filter matches is matched by the rule), and no deny rule may cover it. A filter that a deny
   * rule covers only in part is allowed: the read check at delivery keeps the denied topics out.
   */
  canSubscribe(filter: string): boolean {
    return !this.#deny.some((pattern) => filterCovers(pattern, filter)) && this.#subscribe.some((pattern) => filterCovers(pattern, filter));
  }
}

function matchesAny(patterns: string[], topic: string): boolean {
  for (const pattern of patterns) if (topicMatches(pattern, topic)) return true;
  return false;
}

/**
 * Whether every topic that `filter` matches is matched by `pattern` (both valid topic filters).
 * Patterns starting with a wildcard match no `$` topic [MQTT-4.7.2-1], so they cover no filter
 * whose first level is a literal starting with `$`.
 */
export function filterCovers(pattern: string, filter: string): boolean {
  const patternLevels = pattern.split('/');
  const filterLevels = filter.split('/');
  const first = patternLevels[0]!;
  if ((first === '+' || first === '#') && filterLevels[0]!.startsWith('$')) return false;
  for (let index = 0; index < patternLevels.length; index++) {
    const level = patternLevels[index]!;
    // `a/#` matches `a` and everything below it [MQTT-4.7.1-2]: whatever the filter has left.
    if (level === '#') return true;
    if (index >= filterLevels.length) return false;
    const filterLevel = filterLevels[index]!;
    if (filterLevel === '#') {
      // The filter matches any number of levels here, zero included (its parent, `a` for `a/#`):
      // only `#` covers that. Where the parent cannot be a topic (`#` alone, `/#`: a topic is
      // never empty), it matches one level or more, and `+/#` covers that too.
      const parentIsNoTopic = index === 0 || (index === 1 && filterLevels[0] === '');
      return parentIsNoTopic && level === '+' && patternLevels.length === index + 2 && patternLevels[index + 1] === '#';
    }
    if (level === '+') continue;
    if (filterLevel !== level) return false;
  }
  return patternLevels.length === filterLevels.length;
}

/**
 * Replaces %c and %u in a pattern rule. undefined when the rule does not apply to this client: a
 * %u rule for an anonymous client, or a value that would change the pattern's shape (`+`, `#`, `/`)
 * or leave a level empty (a client id `+` must not turn `devices/%c/#` into `devices/+/#`).
 */
export function substitute(pattern: string, clientId: string, user: string | undefined): string | undefined {
  if (!pattern.includes('%')) return pattern;
  if (pattern.includes('%u') && (user === undefined || !isSafeValue(user))) return undefined;
  if (pattern.includes('%c') && !isSafeValue(clientId)) return undefined;
  const substituted = pattern.replace(/%([cu])/g, (_, which: string) => (which === 'c' ? clientId : user!));
  // A client id `$SYS` must not turn `%c/#` into a rule over the `$` topics [MQTT-4.7.2-1].
  return substituted.startsWith('$') && !pattern.startsWith('$') ? undefined : substituted;
}

function isSafeValue(value: string): boolean {
  return value.length > 0 && !/[+#/]/.test(value);
}

export class Acl {
  /** Rules before any user or client line: they apply to everyone. */
  readonly #general: AclRule[];
  readonly #users: Map<string, AclRule[]>;
  readonly #clients: Map<string, AclRule[]>;
  /** pattern lines, wherever they stand: they apply to every client, with substitution. */
  readonly #patterns: AclRule[];

  constructor(general: AclRule[], users: Map<string, AclRule[]>, clients: Map<string, AclRule[]>, patterns: AclRule[]) {
    this.#general = general;
    this.#users = users;
    this.#clients = clients;
    this.#patterns = patterns;
  }

  /** Rules that depend on the user name (`user` sections, `%u` patterns). */
  get namesUsers(): boolean {
    return this.#users.size > 0 || this.#patterns.some((rule) => rule.pattern.includes('%u'));
  }

  get ruleCount(): number {
    let count = this.#general.length + this.#patterns.length;
    for (const rules of this.#users.values()) count += rules.length;
    for (const rules of this.#clients.values()) count += rules.length;
    return count;
  }

  /** The rules of one client, compiled (substituted) once: check them as often as needed. */
  forClient(clientId: string, user: string | undefined): ClientRules {
    const rules: Array<{ access: AccessWord; pattern: string }> = [...this.#general];
    if (user !== undefined) rules.push(...(this.#users.get(user) ?? []));
    rules.push(...(this.#clients.get(clientId) ?? []));
    for (const { access, pattern } of this.#patterns) {
      const substituted = substitute(pattern, clientId, user);
      if (substituted !== undefined) rules.push({ access, pattern: substituted });
    }
    return new ClientRules(rules);
  }
}

/** Parses the text of an ACL file; `file` names it in errors, which also give the line. */
export function parseAcl(text: string, file: string): Acl {
  const general: AclRule[] = [];
  const users = new Map<string, AclRule[]>();
  const clients = new Map<string, AclRule[]>();
  const patterns: AclRule[] = [];
  let current = general;
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = index + 1;
    const fail = (problem: string): never => {
      throw new BrokerError(ErrorCodes.ACL_FILE_INVALID, `${file}:${line}: ${problem}`);
    };
    const content = raw.trim();
    if (content === '' || content.startsWith('#')) return;
    const tokens = content.split(/\s+/);
    const keyword = tokens[0]!;
    // A comment may follow a line's last field, after white space. Topic patterns hold no spaces.
    const fields = (count: number, usage: string): string[] => {
      const taken = tokens.slice(1, 1 + count);
      if (taken.length < count) fail(`expected ${usage}`);
      const rest = tokens[1 + count];
      if (rest !== undefined && !rest.startsWith('#')) fail(`unexpected ${JSON.stringify(rest)} after ${usage} (topic patterns cannot hold spaces)`);
      return taken;
    };
    switch (keyword) {
      case 'user':
      case 'client': {
        const [name] = fields(1, `${keyword} <${keyword === 'user' ? 'user name' : 'client id'}>`) as [string];
        const table = keyword === 'user' ? users : clients;
        current = table.get(name) ?? [];
        table.set(name, current);
        return;
      }
      case 'topic':
      case 'pattern': {
        const usage = `${keyword} <read|write|readwrite|subscribe|deny> <topic pattern>`;
        const access = tokens[1];
        if (access !== undefined && !ACCESS_WORDS.includes(access as AccessWord)) {
          fail(`unknown access ${JSON.stringify(access)} (expected read, write, readwrite, subscribe or deny)`);
        }
        const [, pattern] = fields(2, usage) as [string, string];
        if (!isValidTopicFilter(pattern)) fail(`invalid topic pattern ${JSON.stringify(pattern)}`);
        if (pattern.includes('%')) {
          if (keyword === 'topic') fail(`%c and %u are substituted in pattern lines only, not in topic lines: ${JSON.stringify(pattern)}`);
          for (const match of pattern.matchAll(/%(.?)/g)) {
            if (match[1] === 'c' || match[1] === 'u') continue;
            fail(`unknown substitution ${JSON.stringify(match[0])} in ${JSON.stringify(pattern)} (only %c and %u)`);
          }
        }
        const rule: AclRule = { access: access as AccessWord, pattern, line };
        (keyword === 'pattern' ? patterns : current).push(rule);
        return;
      }
      default:
        fail(`unknown keyword ${JSON.stringify(keyword)} (expected topic, pattern, user or client)`);
    }
  });
  return new Acl(general, users, clients, patterns);
}
