import { isValidTopicFilter, isValidTopicName, topicMatches } from '../routing/topic.js';
import type { QoS, Subscription } from '../store/repository.js';

export type TopicDirection = 'out' | 'in' | 'both';

/**
 * One `topics` line of a bridge, as Mosquitto's `topic` line means it: `pattern` is matched on both
 * sides under each side's prefix. Locally the bridge subscribes to `local_prefix + pattern`, and a
 * local topic `local_prefix + X` goes upstream as `remote_prefix + X`; upstream it subscribes to
 * `remote_prefix + pattern`, and `remote_prefix + X` comes in as `local_prefix + X`. An empty
 * pattern maps one topic: `local_prefix` itself to `remote_prefix` itself.
 */
export interface TopicLine {
  pattern: string;
  /** out: local → upstream; in: upstream → local; both. Default out, as in Mosquitto. */
  direction?: TopicDirection;
  /** The highest QoS forwarded on this line: a message goes at the lower of its own and this. Default 1. */
  qos?: QoS;
  localPrefix?: string;
  remotePrefix?: string;
}

export const DEFAULT_TOPIC_QOS: QoS = 1;

/** What is wrong with a topic line, and which of its keys: undefined if nothing. */
export function topicLineProblem(line: TopicLine): { key: string; message: string } | undefined {
  const { pattern, localPrefix = '', remotePrefix = '' } = line;
  for (const [key, prefix] of [
    ['local_prefix', localPrefix],
    ['remote_prefix', remotePrefix],
  ] as const) {
    if (/[+#\u0000]/.test(prefix)) return { key, message: `a prefix cannot hold a wildcard (+ or #) or U+0000, got ${JSON.stringify(prefix)}` };
  }
  if (pattern === '') {
    // The prefixes are then the whole topic names, on each side.
    if (localPrefix === '' || remotePrefix === '') {
      return { key: 'pattern', message: 'an empty pattern maps local_prefix to remote_prefix as whole topics: both must be given' };
    }
    if (!isValidTopicName(localPrefix) || !isValidTopicName(remotePrefix)) {
      return { key: 'pattern', message: 'with an empty pattern, both prefixes must be valid topic names' };
    }
    return undefined;
  }
  if (!isValidTopicFilter(pattern)) return { key: 'pattern', message: `not a valid topic filter: ${JSON.stringify(pattern)}` };
  if (!isValidTopicFilter(localPrefix + pattern) || !isValidTopicFilter(remotePrefix + pattern)) {
    const filters = `${JSON.stringify(localPrefix + pattern)}, ${JSON.stringify(remotePrefix + pattern)}`;
    return { key: 'pattern', message: `with its prefixes it is not a valid topic filter (${filters})` };
  }
  return undefined;
}

interface Side {
  filter: string;
  prefix: string;
  /** The other side's prefix. */
  otherPrefix: string;
  qos: QoS;
}

/** Maps topic names between the local broker and the upstream, by the bridge's topic lines. */
export class TopicMap {
  readonly #out: Side[] = [];
  readonly #in: Side[] = [];

  constructor(lines: readonly TopicLine[]) {
    for (const line of lines) {
      const direction = line.direction ?? 'out';
      const localPrefix = line.localPrefix ?? '';
      const remotePrefix = line.remotePrefix ?? '';
      const qos = line.qos ?? DEFAULT_TOPIC_QOS;
      if (direction !== 'in') this.#out.push({ filter: localPrefix + line.pattern, prefix: localPrefix, otherPrefix: remotePrefix, qos });
      if (direction !== 'out') this.#in.push({ filter: remotePrefix + line.pattern, prefix: remotePrefix, otherPrefix: localPrefix, qos });
    }
  }

  /** The bridge session's local subscriptions: what goes upstream. */
  get localSubscriptions(): Subscription[] {
    return merged(this.#out);
  }

  /** What the bridge subscribes to upstream: what comes in. */
  get remoteSubscriptions(): Subscription[] {
    return merged(this.#in);
  }

  /**
   * The upstream name of a local topic: by the first `out`/`both` line that matches it (lines
   * that overlap map by the first). undefined when none does.
   */
  toRemote(localTopic: string): string | undefined {
    return translate(this.#out, localTopic);
  }

  /** The local name of an upstream topic, by the first `in`/`both` line that matches it. */
  toLocal(remoteTopic: string): string | undefined {
    return translate(this.#in, remoteTopic);
  }
}

function translate(sides: Side[], topic: string): string | undefined {
  for (const side of sides) {
    if (topicMatches(side.filter, topic) && topic.startsWith(side.prefix)) return side.otherPrefix + topic.slice(side.prefix.length);
  }
  return undefined;
}

/** One subscription per filter: two lines with the same filter subscribe once, at the higher QoS. */
function merged(sides: Side[]): Subscription[] {
  const byFilter = new Map<string, QoS>();
  for (const { filter, qos } of sides) byFilter.set(filter, Math.max(qos, byFilter.get(filter) ?? 0) as QoS);
  return [...byFilter].map(([filter, qos]) => ({ filter, qos }));
}
