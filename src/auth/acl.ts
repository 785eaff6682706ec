import { BrokerError, ErrorCodes } from '../errors.js';
import { isValidTopicFilter, topicMatches } from '../routing/topic.js';

/**
 * The ACL file, Mosquitto's `acl_file`: a file Mosquitto 2.0 accepts means here what it means to
 * Mosquitto (test/auth/mosquitto-parity.test.ts compares the deliveries of both brokers):
 *
 *     # the topic lines before the first user line are the rules of anonymous clients only
 *     topic read public/#
 *     user alice
 *     topic readwrite sensors/#
 *     topic deny sensors/secret/#
 *     pattern readwrite devices/%c/#
 *
 * A client's own rules (the anonymous ones for a client without a user name, else its user's
 * section) are checked first, deny before allow; only when none of them decides are the pattern
 * lines asked (every client's, wherever they stand; %c is the client id, %u the user name), deny
 * before allow. So a `pattern deny` does not take back what a user's own `topic` line allows.
 * What nothing allows is denied.
 *
 * Two additions Mosquitto does not know (it refuses a file holding them): `client <id>` sections,
 * whose rules join the client's own rules whoever its user, and the access word `subscribe`.
 */

export type AccessWord = 'read' | 'write' | 'readwrite' | 'subscribe' | 'deny';

const ACCESS_WORDS: readonly AccessWord[] = ['read', 'write', 'readwrite', 'subscribe', 'deny'];

export interface AclRule {
  access: AccessWord;
  /** A topic filter; in pattern rules %c and %u are substituted. */
  pattern: string;
  /** 1-based line in the file. */
  line: number;
}

type Decision = 'allow' | 'deny' | undefined;

/**
 * One group of rules Mosquitto checks as a whole: deny rules first, then the allows; the first
 * that matches decides, and when none does the next group is asked.
 */
class RuleGroup {
  readonly #read: string[] = [];
  readonly #write: string[] = [];
  readonly #subscribe: string[] = [];
  readonly #deny: string[] = [];

  constructor(rules: Iterable<{ access: AccessWord; pattern: string }>) {
    for (const { access, pattern } of rules) {
      if (access === 'deny') this.#deny.push(pattern);
      if (access === 'read' || access === 'readwrite') this.#read.push(pattern);
      if (access === 'write' || access === 'readwrite') this.#write.push(pattern);
      if (access === 'subscribe') this.#subscribe.push(pattern);
    }
  }

  read(topic: string): Decision {
    return this.#decide(this.#read, topic);
  }

  write(topic: string): Decision {
    return this.#decide(this.#write, topic);
  }

  /**
   * Refused when a deny rule covers the whole filter; allowed when a read rule shares a topic with
   * it (what arrives is then checked message by message) or a subscribe rule covers it.
   */
  subscribe(filter: string): Decision {
    if (this.#deny.some((pattern) => filterCovers(pattern, filter))) return 'deny';
    if (this.#read.some((pattern) => filtersOverlap(pattern, filter))) return 'allow';
    if (this.#subscribe.some((pattern) => filterCovers(pattern, filter))) return 'allow';
    return undefined;
  }

  #decide(allows: string[], topic: string): Decision {
    if (matchesAny(this.#deny, topic)) return 'deny';
    return matchesAny(allows, topic) ? 'allow' : undefined;
  }
}

/** The rules that apply to one client: its own, then the patterns (substituted for it). */
export class ClientRules {
  readonly #groups: RuleGroup[];

  constructor(own: Iterable<{ access: AccessWord; pattern: string }>, patterns: Iterable<{ access: AccessWord; pattern: string }>) {
    this.#groups = [new RuleGroup(own), new RuleGroup(patterns)];
  }

  /** May this client receive a message published on `topic`? */
  canRead(topic: string): boolean {
    return this.#first((group) => group.read(topic));
  }

  /** May this client publish on `topic`? */
  canWrite(topic: string): boolean {
    return this.#first((group) => group.write(topic));
  }

  /**
   * May this client subscribe to `filter`? Mosquitto grants every SUBSCRIBE and checks read access
   * on each message it delivers; so does this broker, except that a filter through which nothing
   * could ever be delivered gets 0x80 (what a subscriber receives is the same either way). A
   * `subscribe` rule grants the filters it covers without granting any message.
   */
  canSubscribe(filter: string): boolean {
    return this.#first((group) => group.subscribe(filter));
  }

  #first(ask: (group: RuleGroup) => Decision): boolean {
    for (const group of this.#groups) {
      const decision = ask(group);
      if (decision !== undefined) return decision === 'allow';
    }
    return false;
  }
}

function matchesAny(patterns: string[], topic: string): boolean {
  for (const pattern of patterns) if (topicMatches(pattern, topic)) return true;
  return false;
}

/** Whether a filter's first level is a wildcard, which matches no `$` topic [MQTT-4.7.2-1]. */
const startsWild = (levels: string[]) => levels[0] === '+' || levels[0] === '#';
/** Whether a filter's first level is a literal `$` level, matched by no wildcard [MQTT-4.7.2-1]. */
const startsDollar = (levels: string[]) => levels[0]!.startsWith('$');

/**
 * Whether every topic that `filter` matches is matched by `pattern` (both valid topic filters).
 * Patterns starting with a wildcard match no `$` topic [MQTT-4.7.2-1], so they cover no filter
 * whose first level is a literal starting with `$`.
 */
export function filterCovers(pattern: string, filter: string): boolean {
  const patternLevels = pattern.split('/');
  const filterLevels = filter.split('/');
  if (startsWild(patternLevels) && startsDollar(filterLevels)) return false;
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

/** Whether some topic is matched by both filters (valid topic filters). */
export function filtersOverlap(first: string, second: string): boolean {
  const a = first.split('/');
  const b = second.split('/');
  // A `$` topic is matched only by filters naming its first level [MQTT-4.7.2-1].
  if ((startsWild(a) && startsDollar(b)) || (startsDollar(a) && startsWild(b))) return false;
  for (let index = 0; ; index++) {
    const left = a[index];
    const right = b[index];
    if (left === '#' || right === '#') {
      // `x/#` also matches its parent `x` [MQTT-4.7.1-2], where the other one may end; but the
      // parent of `/#` would be the empty topic, and there is none [MQTT-4.7.3-1].
      const other = left === '#' ? right : left;
      return other !== undefined || index > 1 || (a[0] !== '' && b[0] !== '');
    }
    if (left === undefined || right === undefined) return left === right;
    if (left !== '+' && right !== '+' && left !== right) return false;
  }
}

/**
 * Replaces %c and %u in a pattern rule. undefined when the rule does not apply to this client: a
 * %u rule for an anonymous client (as in Mosquitto), or, where this broker is stricter than
 * Mosquitto, a value that would change the pattern's shape or reach: one holding `/` (a client id
 * `a/b` must not get into the subtree of client `a`), an empty one, or one that would start the
 * topic with `$` (`%c/#` for a client id `$SYS`) [MQTT-4.7.2-1]. Values with `+` or `#` get no
 * pattern rule at all: see `Acl.forClient`.
 */
export function substitute(pattern: string, clientId: string, user: string | undefined): string | undefined {
  if (!/%[cu]/.test(pattern)) return pattern;
  if (pattern.includes('%u') && (user === undefined || !isSafeValue(user))) return undefined;
  if (pattern.includes('%c') && !isSafeValue(clientId)) return undefined;
  const substituted = pattern.replace(/%([cu])/g, (_, which: string) => (which === 'c' ? clientId : user!));
  return substituted.startsWith('$') && !pattern.startsWith('$') ? undefined : substituted;
}

function isSafeValue(value: string): boolean {
  return value.length > 0 && !/[+#/]/.test(value);
}

/** A client id or user name Mosquitto refuses every pattern rule to (CVE-2017-7650). */
const WILDCARD = /[+#]/;

export class Acl {
  /** Rules before the first user line: anonymous clients' own rules. */
  readonly #anonymous: AclRule[];
  readonly #users: Map<string, AclRule[]>;
  readonly #clients: Map<string, AclRule[]>;
  /** pattern lines, wherever they stand: they apply to every client, with substitution. */
  readonly #patterns: AclRule[];
  /** Lines that mean something else than they seem to (as Mosquitto reads them): logged, not refused. */
  readonly warnings: readonly string[];

  constructor(
    anonymous: AclRule[],
    users: Map<string, AclRule[]>,
    clients: Map<string, AclRule[]>,
    patterns: AclRule[],
    warnings: readonly string[] = [],
  ) {
    this.#anonymous = anonymous;
    this.#users = users;
    this.#clients = clients;
    this.#patterns = patterns;
    this.warnings = warnings;
  }

  /** Rules that depend on the user name (`user` sections, `%u` patterns). */
  get namesUsers(): boolean {
    return this.#users.size > 0 || this.#patterns.some((rule) => rule.pattern.includes('%u'));
  }

  get ruleCount(): number {
    let count = this.#anonymous.length + this.#patterns.length;
    for (const rules of this.#users.values()) count += rules.length;
    for (const rules of this.#clients.values()) count += rules.length;
    return count;
  }

  /** The rules of one client, compiled (substituted) once: check them as often as needed. */
  forClient(clientId: string, user: string | undefined): ClientRules {
    const own = [...(user === undefined ? this.#anonymous : (this.#users.get(user) ?? [])), ...(this.#clients.get(clientId) ?? [])];
    const patterns: Array<{ access: AccessWord; pattern: string }> = [];
    if (!WILDCARD.test(clientId) && !(user !== undefined && WILDCARD.test(user))) {
      for (const { access, pattern } of this.#patterns) {
        const substituted = substitute(pattern, clientId, user);
        if (substituted !== undefined) patterns.push({ access, pattern: substituted });
      }
    }
    return new ClientRules(own, patterns);
  }
}

/** White space as C's isspace() sees it: what Mosquitto trims from a line's ends and a name's. */
const trimC = (text: string) => text.replace(/^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g, '');
/** The first word (up to a space: a tab does not end a word in Mosquitto) and the rest after it. */
const firstWord = (text: string) => /^ *([^ ]*) *(.*)$/s.exec(text)!.slice(1) as [string, string];

/**
 * Parses the text of an ACL file the way Mosquitto 2.0 does; `file` names it in errors, which also
 * give the line. Where Mosquitto refuses a line, so does this parser, but for one leniency: a
 * comment line may be indented. Lines that Mosquitto reads differently from how they look are
 * accepted with a warning (`Acl.warnings`).
 */
export function parseAcl(text: string, file: string): Acl {
  const anonymous: AclRule[] = [];
  const users = new Map<string, AclRule[]>();
  const clients = new Map<string, AclRule[]>();
  const patterns: AclRule[] = [];
  const warnings: string[] = [];
  let current = anonymous;
  text.split('\n').forEach((raw, index) => {
    const line = index + 1;
    const fail = (problem: string): never => {
      throw new BrokerError(ErrorCodes.ACL_FILE_INVALID, `${file}:${line}: ${problem}`);
    };
    const warn = (problem: string) => warnings.push(`${file}:${line}: ${problem}`);
    const content = trimC(raw);
    if (content === '' || content.startsWith('#')) return;
    const [keyword, rest] = firstWord(content);
    switch (keyword) {
      case 'user':
      case 'client': {
        // The rest of the line is the name, spaces included: Mosquitto knows no comment after it.
        const what = keyword === 'user' ? 'user name' : 'client id';
        const name = trimC(rest);
        if (name === '') fail(`expected ${keyword} <${what}>`);
        if (/\s#/.test(name)) warn(`the ${what} is ${JSON.stringify(name)}, the whole rest of the line, as Mosquitto reads it (a comment needs a line of its own)`);
        const table = keyword === 'user' ? users : clients;
        current = table.get(name) ?? [];
        table.set(name, current);
        return;
      }
      case 'topic':
      case 'pattern': {
        if (rest === '') fail(`expected ${keyword} [read|write|readwrite|subscribe|deny] <topic pattern>`);
        // After the access word, the rest of the line is the topic, spaces included. A word alone
        // is the topic, with readwrite access: `topic read` is readwrite on the topic "read".
        const [first, after] = firstWord(rest);
        const topic = trimC(after);
        let access: AccessWord = 'readwrite';
        let pattern = first;
        if (topic !== '') {
          if (!ACCESS_WORDS.includes(first as AccessWord)) {
            fail(`unknown access ${JSON.stringify(first)} (expected read, write, readwrite, subscribe or deny)`);
          }
          access = first as AccessWord;
          pattern = topic;
        } else if (ACCESS_WORDS.includes(first as AccessWord)) {
          warn(`${JSON.stringify(content)} grants readwrite on the topic ${JSON.stringify(first)}, as Mosquitto reads it (is the topic missing?)`);
        }
        if (!isValidTopicFilter(pattern)) {
          fail(`invalid topic pattern ${JSON.stringify(pattern)}${/\s#/.test(pattern) ? ' (a comment needs a line of its own)' : ''}`);
        }
        if (keyword === 'topic' && /%[cu]/.test(pattern)) {
          warn(`%c and %u are substituted in pattern lines only: this topic line is about the literal topic ${JSON.stringify(pattern)}`);
        }
        const rule: AclRule = { access, pattern, line };
        (keyword === 'pattern' ? patterns : current).push(rule);
        return;
      }
      default:
        fail(`unknown keyword ${JSON.stringify(keyword)} (expected topic, pattern, user or client)`);
    }
  });
  return new Acl(anonymous, users, clients, patterns, warnings);
}
