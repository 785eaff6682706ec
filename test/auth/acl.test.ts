/**
 * The ACL file: parsing (with line-numbered errors) and evaluation — read, write and subscribe,
 * %c/%u substitution, deny precedence, the `$` rule [MQTT-4.7.2-1] and filter coverage.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { filterCovers, parseAcl, substitute } from '../../src/auth/acl.js';
import { BrokerError, ErrorCodes } from '../../src/errors.js';
import { topicMatches } from '../../src/routing/topic.js';

const DESIGN_EXAMPLE = `
# rules before any \`user\`/\`client\` line apply to everyone, anonymous included
topic read $SYS/#
user alice
topic readwrite sensors/#
topic subscribe alerts/+
topic deny sensors/secret/#
client gateway-1
topic write devices/gateway-1/#
pattern readwrite devices/%c/#     # pattern lines apply to every client; %c = client id, %u = user name
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

describe('the example of the design', () => {
  const acl = parseAcl(DESIGN_EXAMPLE, 'acl');

  it('rules before any user/client line apply to everyone, anonymous included', () => {
    for (const rules of [acl.forClient('x', undefined), acl.forClient('x', 'alice'), acl.forClient('gateway-1', 'bob')]) {
      expect(rules.canRead('$SYS/broker/uptime')).toBe(true);
      expect(rules.canWrite('$SYS/broker/uptime')).toBe(false);
      expect(rules.canSubscribe('$SYS/#')).toBe(true);
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
    expect(alice.canSubscribe('#')).toBe(false);
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

  it('an anonymous client gets the general and pattern rules, not alice\'s', () => {
    const anonymous = acl.forClient('x', undefined);
    expect(anonymous.canRead('sensors/t1')).toBe(false);
    expect(anonymous.canWrite('devices/x/y')).toBe(true);
    expect(acl.ruleCount).toBe(6);
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
    expect(substitute('a/%c/%u', '+', 'u')).toBeUndefined();
    expect(substitute('a/%c/%u', 'c', undefined)).toBeUndefined();
    expect(substitute('a/%c-x/%u', 'c', 'u')).toBe('a/c-x/u');
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
    const sys = parseAcl('topic read $SYS/#\n', 'acl').forClient('c', undefined);
    expect(sys.canRead('$SYS/uptime')).toBe(true);
    expect(sys.canSubscribe('$SYS/+')).toBe(true);
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

describe('parse errors name the file and the line', () => {
  const cases: Array<[string, string, string]> = [
    ['unknown keyword', 'topc read a', 'acl:3: unknown keyword "topc" (expected topic, pattern, user or client)'],
    ['unknown access', 'topic reed a/b', 'acl:3: unknown access "reed" (expected read, write, readwrite, subscribe or deny)'],
    ['missing pattern', 'topic read', 'acl:3: expected topic <read|write|readwrite|subscribe|deny> <topic pattern>'],
    ['missing everything', 'pattern', 'acl:3: expected pattern <read|write|readwrite|subscribe|deny> <topic pattern>'],
    ['# not last', 'topic read a/#/b', 'acl:3: invalid topic pattern "a/#/b"'],
    ['+ inside a level', 'topic write a+/b', 'acl:3: invalid topic pattern "a+/b"'],
    ['a space in the topic', 'topic read a b', 'acl:3: unexpected "b" after topic <read|write|readwrite|subscribe|deny> <topic pattern> (topic patterns cannot hold spaces)'],
    ['%c in a topic line', 'topic read devices/%c', 'acl:3: %c and %u are substituted in pattern lines only, not in topic lines: "devices/%c"'],
    ['unknown substitution', 'pattern read devices/%x', 'acl:3: unknown substitution "%x" in "devices/%x" (only %c and %u)'],
    ['user without a name', 'user', 'acl:3: expected user <user name>'],
    ['client with two names', 'client a b', 'acl:3: unexpected "b" after client <client id> (topic patterns cannot hold spaces)'],
  ];
  for (const [name, line, message] of cases) {
    it(name, () => {
      expect(aclError(`# header\ntopic read ok\n${line}\ntopic read fine\n`)).toBe(message);
    });
  }

  it('comments: whole lines and after the last field (`topic read #` keeps its #)', () => {
    const rules = parseAcl('  # indented\ntopic read # # everything\ntopic write a/# #comment\nuser u # the user\n', 'acl').forClient('c', undefined);
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

describe('deny always wins (property)', () => {
  const access = fc.constantFrom('read', 'write', 'readwrite', 'subscribe', 'deny');
  const rule = fc.tuple(access, patternArb).map(([word, pattern]) => `topic ${word} ${pattern}`);

  it('whatever the allow rules, a topic a deny rule matches is neither read nor written, a filter it covers not subscribed', () => {
    fc.assert(
      fc.property(fc.array(rule, { maxLength: 6 }), patternArb, fc.nat(10), (rules, denied, at) => {
        const lines = [...rules];
        lines.splice(at % (lines.length + 1), 0, `topic deny ${denied}`);
        const client = parseAcl(lines.join('\n'), 'acl').forClient('c', 'u');
        for (const topic of UNIVERSE) {
          if (topicMatches(denied, topic)) {
            expect(client.canRead(topic)).toBe(false);
            expect(client.canWrite(topic)).toBe(false);
          }
        }
        for (const filter of ['#', '+', 'a', 'a/#', 'a/+', '$x/#', 'b/a', denied]) {
          if (filterCovers(denied, filter)) expect(client.canSubscribe(filter)).toBe(false);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('without deny rules, access is exactly what some allow rule matches', () => {
    const allow = fc.tuple(fc.constantFrom('read', 'write', 'readwrite'), patternArb);
    fc.assert(
      fc.property(fc.array(allow, { maxLength: 5 }), (rules) => {
        const client = parseAcl(rules.map(([word, pattern]) => `topic ${word} ${pattern}`).join('\n'), 'acl').forClient('c', undefined);
        for (const topic of UNIVERSE) {
          const readable = rules.some(([word, pattern]) => word !== 'write' && topicMatches(pattern, topic));
          const writable = rules.some(([word, pattern]) => word !== 'read' && topicMatches(pattern, topic));
          expect(client.canRead(topic)).toBe(readable);
          expect(client.canWrite(topic)).toBe(writable);
        }
      }),
      { numRuns: 300 },
    );
  });
});
