/**
 * Topic lines as Mosquitto's `topic` line means them: mapping local ↔ remote under the prefixes,
 * subscriptions on each side, and the combinations refused because they cannot work.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { topicLineProblem, TopicMap } from '../../src/bridge/topic-map.js';
import { topicMatches } from '../../src/routing/topic.js';

describe('TopicMap', () => {
  const map = new TopicMap([
    { pattern: 'sensors/#', direction: 'out', qos: 1, localPrefix: '', remotePrefix: 'site/gw-17/' },
    { pattern: 'commands/#', direction: 'in', qos: 1, localPrefix: '', remotePrefix: 'site/gw-17/' },
    { pattern: 'shared/#', direction: 'both', qos: 2 },
    { pattern: '+/state', direction: 'both', qos: 0, localPrefix: 'local/', remotePrefix: 'fleet/gw/' },
    { pattern: '', direction: 'out', localPrefix: 'alarm', remotePrefix: 'alarms/gw-17' },
  ]);

  it('subscribes locally to what goes out, upstream to what comes in (local_prefix/remote_prefix + pattern)', () => {
    expect(map.localSubscriptions).toEqual([
      { filter: 'sensors/#', qos: 1 },
      { filter: 'shared/#', qos: 2 },
      { filter: 'local/+/state', qos: 0 },
      { filter: 'alarm', qos: 1 },
    ]);
    expect(map.remoteSubscriptions).toEqual([
      { filter: 'site/gw-17/commands/#', qos: 1 },
      { filter: 'shared/#', qos: 2 },
      { filter: 'fleet/gw/+/state', qos: 0 },
    ]);
  });

  it('maps names by the first line of the direction that matches; none: undefined', () => {
    expect(map.toRemote('sensors/room1/t')).toBe('site/gw-17/sensors/room1/t');
    expect(map.toRemote('shared/x')).toBe('shared/x');
    expect(map.toRemote('local/pump/state')).toBe('fleet/gw/pump/state');
    expect(map.toRemote('alarm')).toBe('alarms/gw-17');
    expect(map.toRemote('commands/reboot')).toBeUndefined(); // an in line only
    expect(map.toLocal('site/gw-17/commands/reboot')).toBe('commands/reboot');
    expect(map.toLocal('fleet/gw/pump/state')).toBe('local/pump/state');
    expect(map.toLocal('site/gw-17/sensors/t')).toBeUndefined(); // an out line only
    expect(map.toLocal('alarms/gw-17')).toBeUndefined();
  });

  it('property: a topic a line takes out comes back in under the same name, and matches the line on each side', () => {
    const level = fc.stringMatching(/^[a-z0-9]{1,6}$/);
    fc.assert(
      fc.property(fc.array(level, { minLength: 1, maxLength: 4 }), fc.array(level, { maxLength: 2 }), fc.array(level, { maxLength: 2 }), (levels, local, remote) => {
        const localPrefix = local.map((part) => `${part}/`).join('');
        const remotePrefix = remote.map((part) => `${part}/`).join('');
        const both = new TopicMap([{ pattern: `${levels[0]}/#`, direction: 'both', localPrefix, remotePrefix }]);
        const topic = localPrefix + levels.join('/');
        const upstream = both.toRemote(topic);
        expect(upstream).toBe(remotePrefix + levels.join('/'));
        expect(topicMatches(both.remoteSubscriptions[0]!.filter, upstream!)).toBe(true);
        expect(both.toLocal(upstream!)).toBe(topic);
      }),
    );
  });

  it('refuses what cannot work', () => {
    expect(topicLineProblem({ pattern: 'a/#', localPrefix: 'x/+/' })).toEqual({ key: 'local_prefix', message: expect.stringContaining('wildcard') });
    expect(topicLineProblem({ pattern: 'a/#', remotePrefix: '#/' })).toMatchObject({ key: 'remote_prefix' });
    expect(topicLineProblem({ pattern: '' })).toMatchObject({ key: 'pattern', message: expect.stringContaining('both must be given') });
    expect(topicLineProblem({ pattern: '', localPrefix: 'a' })).toMatchObject({ key: 'pattern' });
    expect(topicLineProblem({ pattern: 'a/#/b' })).toMatchObject({ key: 'pattern', message: expect.stringContaining('not a valid topic filter') });
    expect(topicLineProblem({ pattern: 'a+' })).toMatchObject({ key: 'pattern' });
    expect(topicLineProblem({ pattern: '#', localPrefix: 'a' })).toMatchObject({ key: 'pattern', message: expect.stringContaining('with its prefixes') });
    for (const fine of [{ pattern: '#' }, { pattern: '', localPrefix: 'a', remotePrefix: 'b' }, { pattern: '+/x', localPrefix: 'l/', remotePrefix: 'r/' }]) {
      expect(topicLineProblem(fine)).toBeUndefined();
    }
  });
});
