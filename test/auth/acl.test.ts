/**
 * The ACL file: parsing as Mosquitto 2.0 parses its acl_file (with line-numbered errors and
 * warnings) and evaluation as Mosquitto evaluates it — a client's own rules (anonymous ones for a
 * client without a user name, else its user's), then the patterns, deny first within each — plus
 * our `client` sections and `subscribe` word, %c/%u substitution, the `$` rule [MQTT-4.7.2-1] and
 * filter coverage and overlap. test/auth/mosquitto-parity.test.ts checks the same meaning against
 * the real Mosquitto.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { filterCovers, filtersOverlap, parseAcl, substitute } from '../../src/auth/acl.js';
import { BrokerError, ErrorCodes } from '../../src/errors.js';
import { topicMatches } from '../../src/routing/topic.js';

const DESIGN_EXAMPLE = `
# before the first user line: anonymous clients only (Mosquitto: "the first set of topics are applied to anonymous clients")
topic read public/#
user alice
topic readwrite sensors/#
topic subscribe alerts/+
topic deny sensors/secret/#
client gateway-1
topic write devices/gateway-1/#
pattern readwrite devices/%c/#
`;

function aclError(text: string): string {
  try {
    parseAcl(text, 'acl');
  } catch (error) {
    expect(error).toBeInstanceOf(BrokerError);
    expect((error as BrokerError).code).toBe(ErrorCodes.ACL_FILE_INVALID);
    return (error as Error).message;
  }
  throw new Error('expected a parse error');
}

describe('the example of the README', () => {
  const acl = parseAcl(DESIGN_EXAMPLE, 'acl');

  it('rules before the first user line apply to anonymous clients only, as in Mosquitto: not to alice, not to a user without a section', () => {
    const anonymous = acl.forClient('x', undefined);
    expect(anonymous.canRead('public/news')).toBe(true);
    expect(anonymous.canWrite('public/news')).toBe(false);
    expect(anonymous.canSubscribe('public/#')).toBe(true);
    for (const user of ['alice', 'bob']) {
      const rules = acl.forClient('x', user);
      expect(rules.canRead('public/news'), user).toBe(false);
      expect(rules.canSubscribe('public/#'), user).toBe(false);
    }
  });

  it("alice: readwrite sensors/#, but sensors/secret/# is denied for every kind of access", () => {
    const alice = acl.forClient('dashboard', 'alice');
    expect(alice.canRead('sensors/t1')).toBe(true);
    expect(alice.canWrite('sensors/t1')).toBe(true);
    expect(alice.canRead('sensors')).toBe(true); // sensors/# matches its parent level [MQTT-4.7.1-2]
    expect(alice.canRead('sensors/secret/key')).toBe(false);
    expect(alice.canWrite('sensors/secret/key')).toBe(false);
    expect(alice.canRead('sensors/secret')).toBe(false);
    expect(alice.canSubscribe('sensors/secret/#')).toBe(false);
    expect(alice.canSubscribe('sensors/secret/+')).toBe(false);
    // A wide filter the deny covers only in part is allowed; delivery leaves the secrets out.
    expect(alice.canSubscribe('sensors/#')).toBe(true);
    // So is `#`: Mosquitto grants it and delivers what alice may read, sensors/… (see canSubscribe).
    expect(alice.canSubscribe('#')).toBe(true);
    expect(alice.canSubscribe('+/t1')).toBe(true);
    // Through these, nothing could ever be delivered.
    expect(alice.canSubscribe('other/#')).toBe(false);
    expect(alice.canSubscribe('$SYS/#')).toBe(false);
    expect(alice.canRead('other/topic')).toBe(false);
    expect(alice.canWrite('other/topic')).toBe(false);
  });

  it('subscribe grants subscribing to covered filters and nothing else: receiving needs read', () => {
    const alice = acl.forClient('dashboard', 'alice');
    expect(alice.canSubscribe('alerts/+')).toBe(true);
    expect(alice.canSubscribe('alerts/fire')).toBe(true);
    expect(alice.canSubscribe('alerts/#')).toBe(false);
    expect(alice.canSubscribe('alerts/fire/x')).toBe(false);
    expect(alice.canRead('alerts/fire')).toBe(false);
    expect(alice.canWrite('alerts/fire')).toBe(false);
  });

  it('client rules apply to that client id whoever the user; pattern rules to every client with its own id', () => {
    for (const user of [undefined, 'alice', 'bob']) {
      const gateway = acl.forClient('gateway-1', user);
      expect(gateway.canWrite('devices/gateway-1/status')).toBe(true);
      expect(gateway.canRead('devices/gateway-1/cmd')).toBe(true); // from the pattern
      const other = acl.forClient('gateway-2', user);
      expect(other.canWrite('devices/gateway-1/status')).toBe(false);
      expect(other.canRead('devices/gateway-1/cmd')).toBe(false);
      expect(other.canWrite('devices/gateway-2/status')).toBe(true);
    }
  });

  it("an anonymous client gets the anonymous and pattern rules, not alice's", () => {
    const anonymous = acl.forClient('x', undefined);
    expect(anonymous.canRead('sensors/t1')).toBe(false);
    expect(anonymous.canWrite('devices/x/y')).toBe(true);
    expect(acl.ruleCount).toBe(6);
    expect(acl.warnings).toEqual([]);
  });
});

describe("Mosquitto's order: the client's own rules, then the patterns; deny first within each", () => {
  it('a pattern deny does not take back what a user line allows; a user deny beats a pattern allow', () => {
    const acl = parseAcl('user alice\ntopic read #\ntopic deny own/#\npattern deny secret/#\npattern read own/%u\n', 'acl');
    const alice = acl.forClient('c', 'alice');
    expect(alice.canRead('secret/x')).toBe(true);
    expect(alice.canSubscribe('secret/#')).toBe(true);
    expect(alice.canRead('own/alice')).toBe(false);
    expect(alice.canSubscribe('own/alice')).toBe(false);
    // carol has no section: the patterns alone decide, and there deny comes first.
    const carol = acl.forClient('c', 'carol');
    expect(carol.canRead('secret/x')).toBe(false);
    expect(carol.canRead('own/carol')).toBe(true);
  });

  it("an own rule for another kind of access does not decide: a read line leaves writing to the patterns", () => {
    const alice = parseAcl('user alice\ntopic read a/#\npattern write a/%u\n', 'acl').forClient('c', 'alice');
    expect(alice.canWrite('a/alice')).toBe(true);
    expect(alice.canWrite('a/bob')).toBe(false);
  });

  it("the anonymous rules are anonymous clients' own rules: a pattern deny does not override them either", () => {
    const acl = parseAcl('topic readwrite #\npattern deny #\n', 'acl');
    expect(acl.forClient('c', undefined).canRead('a/x')).toBe(true);
    expect(acl.forClient('c', 'alice').canRead('a/x')).toBe(false);
  });

  it('a client id or user name holding + or # gets no pattern rule at all, its own rules stay (CVE-2017-7650)', () => {
    const acl = parseAcl('topic read a/#\nuser x+y\ntopic read a/#\npattern read public/#\npattern read d/%c\n', 'acl');
    for (const [clientId, user] of [['dev+1', undefined], ['dev#1', undefined], ['c', 'x+y']] as const) {
      const rules = acl.forClient(clientId, user);
      expect(rules.canRead('a/1'), clientId).toBe(true);
      expect(rules.canRead('public/news'), clientId).toBe(false);
      expect(rules.canRead(`d/${clientId}`), clientId).toBe(false);
    }
    expect(acl.forClient('dev-1', undefined).canRead('public/news')).toBe(true);
  });
});

describe('substitution', () => {
  const acl = parseAcl('pattern readwrite users/%u/#\npattern read clients/%c/in\npattern write out/%u/%c\n', 'acl');

  it('%u is the user name, %c the client id; a %u pattern does not apply to anonymous clients', () => {
    const bob = acl.forClient('phone', 'bob');
    expect(bob.canWrite('users/bob/notes')).toBe(true);
    expect(bob.canWrite('users/alice/notes')).toBe(false);
    expect(bob.canRead('clients/phone/in')).toBe(true);
    expect(bob.canRead('clients/laptop/in')).toBe(false);
    expect(bob.canWrite('out/bob/phone')).toBe(true);
    const anonymous = acl.forClient('phone', undefined);
    expect(anonymous.canRead('clients/phone/in')).toBe(true);
    expect(anonymous.canWrite('out/undefined/phone')).toBe(false);
    expect(anonymous.canWrite('users/undefined/x')).toBe(false);
    expect(anonymous.canWrite('users//x')).toBe(false);
  });

  it('a value with +, # or / (or an empty one) leaves the pattern out instead of widening it', () => {
    for (const clientId of ['+', '#', 'a/b', 'x+']) {
      const rules = acl.forClient(clientId, 'bob');
      expect(rules.canRead(`clients/${clientId}/in`), clientId).toBe(false);
      expect(rules.canRead('clients/anyone/in'), clientId).toBe(false);
    }
    for (const user of ['+', '#', 'a/b', '']) {
      expect(acl.forClient('c', user).canWrite('users/anyone/x'), user).toBe(false);
    }
    // Stricter than Mosquitto, which would give the client id a/b the subtree clients/a/b/…,
    // inside client a's: here a `/` in the value drops that pattern (only that one).
    const slash = parseAcl('pattern readwrite d/%c/#\npattern read plain/#\n', 'acl').forClient('a/b', undefined);
    expect(slash.canRead('d/a/b/x')).toBe(false);
    expect(slash.canRead('plain/x')).toBe(true);
    expect(substitute('a/%c/%u', '+', 'u')).toBeUndefined();
    expect(substitute('a/%c/%u', 'c', undefined)).toBeUndefined();
    // Mosquitto 2.0.11 substitutes inside a level too, and leaves any other % as it is.
    expect(substitute('a/%c-x/%u', 'c', 'u')).toBe('a/c-x/u');
    expect(substitute('a/%x/%c', 'c', undefined)).toBe('a/%x/c');
    expect(substitute('plain/#', '+', undefined)).toBe('plain/#');
  });

  it('property: the client id substituted into devices/%c/# grants exactly that client its own subtree', () => {
    const id = fc.stringMatching(/^[a-zA-Z0-9 _.$-]{1,12}$/);
    const devices = parseAcl('pattern readwrite devices/%c/#\n', 'acl');
    fc.assert(
      fc.property(id, id, fc.stringMatching(/^[a-z]{0,5}$/), (self, other, leaf) => {
        const rules = devices.forClient(self, undefined);
        expect(rules.canWrite(`devices/${self}/${leaf}`)).toBe(true);
        expect(rules.canRead(`devices/${self}`)).toBe(true);
        expect(rules.canWrite(`devices/${other}/${leaf}`)).toBe(self === other);
      }),
      { numRuns: 500 },
    );
  });
});

describe('$ topics [MQTT-4.7.2-1]', () => {
  it('a client id or user name starting with $ does not put a leading %c/%u pattern over the $ topics', () => {
    const acl = parseAcl('pattern readwrite %c/#\npattern read %u/inbox\npattern readwrite devices/%c/#\n', 'acl');
    const sys = acl.forClient('$SYS', '$SYS');
    expect(sys.canWrite('$SYS/broker/uptime')).toBe(false);
    expect(sys.canRead('$SYS/inbox')).toBe(false);
    expect(sys.canSubscribe('$SYS/#')).toBe(false);
    // Inside a pattern, the same id is a literal level like any other.
    expect(sys.canWrite('devices/$SYS/t')).toBe(true);
    expect(acl.forClient('plain', 'plain').canWrite('plain/t')).toBe(true);
  });

  it('a pattern starting with a wildcard never matches a $ topic; a literal $ pattern does', () => {
    const everything = parseAcl('topic readwrite #\ntopic read +/status\n', 'acl').forClient('c', undefined);
    expect(everything.canRead('a/b')).toBe(true);
    expect(everything.canRead('$SYS/uptime')).toBe(false);
    expect(everything.canWrite('$share/x')).toBe(false);
    expect(everything.canRead('$SYS/status')).toBe(false);
    expect(everything.canSubscribe('$SYS/#')).toBe(false);
    expect(everything.canSubscribe('#')).toBe(true);
    const sys = parseAcl('topic read $SYS/#\npattern write $SYS/broker/connection/%c/state\n', 'acl').forClient('c', undefined);
    expect(sys.canRead('$SYS/uptime')).toBe(true);
    expect(sys.canSubscribe('$SYS/+')).toBe(true);
    expect(sys.canWrite('$SYS/broker/connection/c/state')).toBe(true);
  });

  it('a deny starting with a wildcard does not reach the $ topics either', () => {
    const rules = parseAcl('topic read $app/#\ntopic deny #\n', 'acl').forClient('c', undefined);
    expect(rules.canRead('$app/x')).toBe(true);
    expect(rules.canSubscribe('$app/#')).toBe(true);
    expect(rules.canRead('a')).toBe(false);
  });
});

describe('no rule, no access', () => {
  it('an ACL without rules for a client denies it everything', () => {
    const rules = parseAcl('user alice\ntopic readwrite #\n', 'acl').forClient('c', 'bob');
    expect(rules.canRead('a')).toBe(false);
    expect(rules.canWrite('a')).toBe(false);
    expect(rules.canSubscribe('a')).toBe(false);
    expect(parseAcl('', 'acl').forClient('c', undefined).canRead('a')).toBe(false);
  });

  it('user and client sections accumulate when they appear twice; pattern lines apply wherever they stand', () => {
    const acl = parseAcl('user alice\ntopic read a\nuser bob\npattern write p/%c\nuser alice\ntopic write b\n', 'acl');
    const alice = acl.forClient('c', 'alice');
    expect(alice.canRead('a')).toBe(true);
    expect(alice.canWrite('b')).toBe(true);
    expect(alice.canWrite('p/c')).toBe(true);
    expect(acl.forClient('c', 'carol').canWrite('p/c')).toBe(true);
    expect(acl.forClient('c', 'bob').canRead('a')).toBe(false);
  });
});

describe('parse errors name the file and the line (where Mosquitto refuses the file too)', () => {
  const cases: Array<[string, string, string]> = [
    ['unknown keyword', 'topc read a', 'acl:3: unknown keyword "topc" (expected topic, pattern, user or client)'],
    ['unknown access', 'topic reed a/b', 'acl:3: unknown access "reed" (expected read, write, readwrite, subscribe or deny)'],
    ['nothing after topic', 'topic', 'acl:3: expected topic [read|write|readwrite|subscribe|deny] <topic pattern>'],
    ['nothing after pattern', 'pattern   ', 'acl:3: expected pattern [read|write|readwrite|subscribe|deny] <topic pattern>'],
    ['# not last', 'topic read a/#/b', 'acl:3: invalid topic pattern "a/#/b"'],
    ['+ inside a level', 'topic write a+/b', 'acl:3: invalid topic pattern "a+/b"'],
    ['a comment after the topic', 'topic read a/b # note', 'acl:3: invalid topic pattern "a/b # note" (a comment needs a line of its own)'],
    ['a tab is not a space to Mosquitto', 'topic\tread\ta', 'acl:3: unknown keyword "topic\\tread\\ta" (expected topic, pattern, user or client)'],
    ['user without a name', 'user', 'acl:3: expected user <user name>'],
  ];
  for (const [name, line, message] of cases) {
    it(name, () => {
      expect(aclError(`# header\ntopic read ok\n${line}\ntopic read fine\n`)).toBe(message);
    });
  }
});

describe('lines that mean what Mosquitto reads in them', () => {
  it('the access word may be left out (readwrite); after it the rest of the line is the topic, spaces included', () => {
    const rules = parseAcl('topic a/b\ntopic read  with space/x  \npattern readwrite room %c\n', 'acl').forClient('c', undefined);
    expect(rules.canRead('a/b')).toBe(true);
    expect(rules.canWrite('a/b')).toBe(true);
    expect(rules.canRead('with space/x')).toBe(true);
    expect(rules.canWrite('with space/x')).toBe(false);
    expect(rules.canRead('room c')).toBe(true);
  });

  it('`topic read` alone is readwrite on the topic "read" (warned)', () => {
    const acl = parseAcl('topic read\n', 'acl');
    expect(acl.forClient('c', undefined).canWrite('read')).toBe(true);
    expect(acl.warnings).toEqual(['acl:1: "topic read" grants readwrite on the topic "read", as Mosquitto reads it (is the topic missing?)']);
  });

  it('the user name (and client id) is the rest of the line: `user alice # note` is the user "alice # note" (warned)', () => {
    const acl = parseAcl('user alice # note\ntopic read a\nclient my gateway\ntopic read b\n', 'acl');
    expect(acl.forClient('c', 'alice').canRead('a')).toBe(false);
    expect(acl.forClient('c', 'alice # note').canRead('a')).toBe(true);
    expect(acl.forClient('my gateway', undefined).canRead('b')).toBe(true);
    expect(acl.warnings).toEqual(['acl:1: the user name is "alice # note", the whole rest of the line, as Mosquitto reads it (a comment needs a line of its own)']);
  });

  it('%c and %u in a topic line are literal (warned); in a pattern line any other % is literal', () => {
    const acl = parseAcl('topic read devices/%c\npattern read x/%x/%c\n', 'acl');
    const rules = acl.forClient('me', undefined);
    expect(rules.canRead('devices/%c')).toBe(true);
    expect(rules.canRead('devices/me')).toBe(false);
    expect(rules.canRead('x/%x/me')).toBe(true);
    expect(acl.warnings).toEqual(['acl:1: %c and %u are substituted in pattern lines only: this topic line is about the literal topic "devices/%c"']);
  });

  it('comments are lines whose first character is # (an indented one is accepted too); CRLF line ends are fine', () => {
    const rules = parseAcl('# top\r\n  # indented\r\ntopic read #\r\n\r\n   \ntopic write a/#\r\n', 'acl').forClient('c', undefined);
    expect(rules.canRead('x/y')).toBe(true);
    expect(rules.canWrite('a/b')).toBe(true);
    expect(rules.canWrite('x')).toBe(false);
  });
});

// Small alphabets make random patterns, filters and topics collide; '$x' and '' exercise the $ rule
// and empty levels, 'z' is a level no pattern names.
const LEVEL = fc.constantFrom('a', 'b', '', '$x');
const patternArb = fc
  .tuple(fc.array(fc.oneof(LEVEL, fc.constant('+')), { minLength: 0, maxLength: 3 }), fc.boolean())
  .map(([levels, multi]) => (multi ? [...levels, '#'] : levels).join('/'))
  .filter((pattern) => pattern.length > 0);
const TOPIC_LEVELS = ['a', 'b', '', '$x', 'z'];
const UNIVERSE: string[] = [];
for (let depth = 1; depth <= 4; depth++) {
  const build = (prefix: string[]): void => {
    if (prefix.length === depth) {
      const topic = prefix.join('/');
      if (topic.length > 0) UNIVERSE.push(topic);
      return;
    }
    for (const level of TOPIC_LEVELS) build([...prefix, level]);
  };
  build([]);
}

describe('filter coverage (properties)', () => {
  it('covers(pattern, filter) exactly when every topic the filter matches, the pattern matches too', () => {
    fc.assert(
      fc.property(patternArb, patternArb, (pattern, filter) => {
        const expected = UNIVERSE.every((topic) => !topicMatches(filter, topic) || topicMatches(pattern, topic));
        expect(filterCovers(pattern, filter), `${pattern} ⊇ ${filter}`).toBe(expected);
      }),
      { numRuns: 10_000 },
    );
  });

  it('examples', () => {
    expect(filterCovers('#', 'a/b')).toBe(true);
    expect(filterCovers('a/#', 'a')).toBe(true);
    expect(filterCovers('a/#', 'a/#')).toBe(true);
    expect(filterCovers('a/+/#', 'a/#')).toBe(false);
    expect(filterCovers('+/#', '#')).toBe(true);
    expect(filterCovers('+/+/#', '#')).toBe(false);
    expect(filterCovers('/+/#', '/#')).toBe(true);
    expect(filterCovers('a/+', 'a/#')).toBe(false);
    expect(filterCovers('a/+', 'a/b')).toBe(true);
    expect(filterCovers('a/b', 'a/+')).toBe(false);
    expect(filterCovers('+', '$SYS')).toBe(false);
    expect(filterCovers('#', '$SYS/#')).toBe(false);
    expect(filterCovers('$SYS/#', '$SYS/+/x')).toBe(true);
  });
});

describe('filter overlap (properties)', () => {
  it('overlap(a, b) exactly when some topic is matched by both', () => {
    fc.assert(
      fc.property(patternArb, patternArb, (first, second) => {
        const expected = UNIVERSE.some((topic) => topicMatches(first, topic) && topicMatches(second, topic));
        expect(filtersOverlap(first, second), `${first} ∩ ${second}`).toBe(expected);
      }),
      { numRuns: 10_000 },
    );
  });

  it('examples', () => {
    expect(filtersOverlap('#', 'a/b')).toBe(true);
    expect(filtersOverlap('a/#', 'a')).toBe(true);
    expect(filtersOverlap('a/+/c', '+/b/#')).toBe(true);
    expect(filtersOverlap('a/+', 'a/b/c')).toBe(false);
    expect(filtersOverlap('#', '$SYS/#')).toBe(false);
    expect(filtersOverlap('$SYS/+', '$SYS/#')).toBe(true);
  });
});

/**
 * Mosquitto 2.0's check, as its security_default.c does it: the client's own list (the anonymous
 * one or its user's), deny entries first, skipping entries that do not start with `$` for a `$`
 * topic; the first entry that matches decides when it denies or grants this kind of access. Then,
 * unless the client id or user name holds + or #, the patterns the same way, after replacing %c
 * and %u (%u patterns skipped for anonymous clients). Nothing decided: denied.
 */
function mosquittoCheck(text: string, clientId: string, user: string | undefined): (topic: string, access: 'read' | 'write') => boolean {
  const own: Array<[string, string]> = [];
  const patterns: Array<[string, string]> = [];
  let section: string | undefined;
  for (const line of text.split('\n')) {
    const [keyword, word, pattern] = line.split(' ') as [string, string, string];
    if (keyword === 'user') section = word;
    else if (keyword === 'pattern') patterns.push([word, pattern]);
    else if (keyword === 'topic' && section === user) own.push([word, pattern]);
  }
  const denyFirst = (rules: Array<[string, string]>) => [...rules.filter(([word]) => word === 'deny'), ...rules.filter(([word]) => word !== 'deny')];
  const ownList = denyFirst(own);
  const patternList = denyFirst(patterns);
  const dangerous = /[+#]/.test(clientId) || (user !== undefined && /[+#]/.test(user));
  return (topic, access) => {
    const grants = (word: string) => word === 'readwrite' || word === access;
    for (const [word, pattern] of ownList) {
      if (topic.startsWith('$') && !pattern.startsWith('$')) continue;
      if (!topicMatches(pattern, topic)) continue;
      if (word === 'deny') return false;
      if (grants(word)) return true;
    }
    if (dangerous) return false;
    for (const [word, pattern] of patternList) {
      if (pattern.includes('%u') && user === undefined) continue;
      if (!topicMatches(pattern.replaceAll('%c', clientId).replaceAll('%u', user ?? ''), topic)) continue;
      if (word === 'deny') return false;
      if (grants(word)) return true;
    }
    return false;
  };
}

describe("Mosquitto's check (properties)", () => {
  const access = fc.constantFrom('read', 'write', 'readwrite', 'deny');
  // %c and %u stand for a level here: the client ids and user names below are levels of the universe.
  const withSubstitutions = patternArb.chain((pattern) =>
    fc.constantFrom(pattern, pattern.replace(/^a(?=\/|$)/, '%c'), pattern.replace(/(^|\/)b(?=\/|$)/, '$1%u')),
  );
  const line = fc.oneof(
    fc.tuple(fc.constantFrom('topic', 'pattern'), access, withSubstitutions).map(([keyword, word, pattern]) =>
      keyword === 'topic' && pattern.includes('%') ? `topic ${word} a` : `${keyword} ${word} ${pattern}`,
    ),
    fc.constantFrom('user a', 'user b', 'user a+'),
  );
  const client = fc.tuple(fc.constantFrom('a', 'b', 'z', 'a+'), fc.constantFrom(undefined, 'a', 'b', 'a+'));

  it('read and write: the same answer as Mosquitto for every topic, whatever the file and the client', () => {
    fc.assert(
      fc.property(fc.array(line, { maxLength: 8 }), client, (lines, [clientId, user]) => {
        const text = lines.join('\n');
        const rules = parseAcl(text, 'acl').forClient(clientId, user);
        const mosquitto = mosquittoCheck(text, clientId, user);
        const differences = UNIVERSE.filter((topic) => rules.canRead(topic) !== mosquitto(topic, 'read') || rules.canWrite(topic) !== mosquitto(topic, 'write'));
        expect(differences, text).toEqual([]);
      }),
      { numRuns: 1000 },
    );
  });

  it('subscribe: a filter is refused only when nothing it matches could be delivered; a topic name is granted exactly when it is readable', () => {
    const filters = ['#', '+', 'a', 'a/#', 'a/+', '$x/#', 'b/a', '+/+/#', '$x/+/b'];
    fc.assert(
      fc.property(fc.array(line, { maxLength: 8 }), client, (lines, [clientId, user]) => {
        const rules = parseAcl(lines.join('\n'), 'acl').forClient(clientId, user);
        const refusedButReadable = filters
          .filter((filter) => !rules.canSubscribe(filter))
          .flatMap((filter) => UNIVERSE.filter((topic) => topicMatches(filter, topic) && rules.canRead(topic)).map((topic) => `${filter}: ${topic}`));
        expect(refusedButReadable).toEqual([]);
        expect(UNIVERSE.filter((topic) => rules.canSubscribe(topic) !== rules.canRead(topic))).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });

  it('within one group of rules deny wins: a topic a deny rule matches is neither read nor written, a filter it covers not subscribed', () => {
    const allow = fc.tuple(fc.constantFrom('read', 'write', 'readwrite', 'subscribe'), patternArb).map(([word, pattern]) => `topic ${word} ${pattern}`);
    fc.assert(
      fc.property(fc.array(allow, { maxLength: 6 }), patternArb, fc.nat(10), (rules, denied, at) => {
        const lines = [...rules];
        lines.splice(at % (lines.length + 1), 0, `topic deny ${denied}`);
        const anonymous = parseAcl(lines.join('\n'), 'acl').forClient('c', undefined);
        expect(UNIVERSE.filter((topic) => topicMatches(denied, topic) && (anonymous.canRead(topic) || anonymous.canWrite(topic)))).toEqual([]);
        for (const filter of ['#', '+', 'a', 'a/#', 'a/+', '$x/#', 'b/a', denied]) {
          if (filterCovers(denied, filter)) expect(anonymous.canSubscribe(filter)).toBe(false);
        }
      }),
      { numRuns: 1000 },
    );
  });
});
