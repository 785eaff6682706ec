/**
 * Topic names and filters (MQTT 3.1.1 section 4.7). Pure functions, shared by the protocol layer
 * (validation) and routing (matching).
 */

/** Longest topic a client may use: the length prefix of an MQTT string is 16 bits [MQTT-1.5.3]. */
const MAX_TOPIC_BYTES = 65535;

/** A topic name in PUBLISH: at least one character [MQTT-4.7.3-1], no wildcards [MQTT-3.3.2-2], no NUL [MQTT-1.5.3-2]. */
export function isValidTopicName(topic: string): boolean {
  if (topic.length === 0 || Buffer.byteLength(topic) > MAX_TOPIC_BYTES) return false;
  return !/[+#\u0000]/.test(topic);
}

/**
 * A topic filter in SUBSCRIBE/UNSUBSCRIBE: non-empty [MQTT-4.7.3-1]; `#` only alone as the last
 * level [MQTT-4.7.1-2]; `+` only as a whole level [MQTT-4.7.1-3]; no NUL [MQTT-1.5.3-2].
 */
export function isValidTopicFilter(filter: string): boolean {
  if (filter.length === 0 || Buffer.byteLength(filter) > MAX_TOPIC_BYTES || filter.includes('\u0000')) return false;
  const levels = filter.split('/');
  for (let index = 0; index < levels.length; index++) {
    const level = levels[index]!;
    if (level.includes('#') && (level !== '#' || index !== levels.length - 1)) return false;
    if (level.includes('+') && level !== '+') return false;
  }
  return true;
}

/**
 * Whether a topic name matches a filter. A filter starting with a wildcard does not match topics
 * starting with `$` [MQTT-4.7.2-1]; `sport/#` also matches `sport` [MQTT-4.7.1-2].
 */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false;
  const filterLevels = filter.split('/');
  const topicLevels = topic.split('/');
  for (let index = 0; index < filterLevels.length; index++) {
    const level = filterLevels[index]!;
    if (level === '#') return true;
    if (index >= topicLevels.length) return false;
    if (level !== '+' && level !== topicLevels[index]) return false;
  }
  return filterLevels.length === topicLevels.length;
}

/** What a shared subscription's filter `$share/{ShareName}/{filter}` names (MQTT 5.0 4.8.2). */
export interface SharedFilter {
  /** The ShareName. */
  group: string;
  /** The filter its members subscribe to, matched like any other. */
  filter: string;
}

const SHARE_PREFIX = '$share/';

/** Whether a filter is meant as a shared subscription (valid or not): it begins with `$share/`. */
export function isSharedFilter(filter: string): boolean {
  return filter.startsWith(SHARE_PREFIX);
}

/**
 * The group and filter of `$share/{ShareName}/{filter}`, or undefined for a filter that is not
 * shared or is not a valid shared one: the ShareName is at least one character with no `/`, `+`
 * or `#` [MQTT-4.8.2-1], followed by `/` and a valid filter [MQTT-4.8.2-2].
 */
export function parseSharedFilter(filter: string): SharedFilter | undefined {
  if (!isSharedFilter(filter)) return undefined;
  const end = filter.indexOf('/', SHARE_PREFIX.length);
  if (end <= SHARE_PREFIX.length) return undefined;
  const group = filter.slice(SHARE_PREFIX.length, end);
  if (/[+#]/.test(group)) return undefined;
  const inner = filter.slice(end + 1);
  return isValidTopicFilter(inner) ? { group, filter: inner } : undefined;
}
