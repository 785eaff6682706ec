import { decodeFormat1, decodeRecord, type RecordDecoder } from './codec.js';
import {
  FORMAT_KEY,
  RETAINED_TOTALS_KEY,
  isBodyValue,
  isDupMarkValue,
  isInboundValue,
  isNumber,
  isQueueEntryValue,
  isQueueStatsValue,
  isRefCount,
  isReleaseValue,
  isRetainedIndexValue,
  isRetainedTotalsValue,
  isRetainedValue,
  isSessionValue,
  isSubscriptionValue,
  keys,
  parseKey,
} from './key-layout.js';
import { formatDamage, judgeMarker, judgeMissingMarker } from './store-opening.js';

/**
 * `broker-admin verify`: one pass over a snapshot in key order, checking every invariant the key
 * layout (key-layout.ts) implies. Keys sort by kind (`!` < b < c < f < i < m < n < q < r < s < w), so
 * the shared bodies (m) and the queue counters (n) are all known when the queue entries (q) are
 * read. Memory grows with the number of shared bodies and sessions, never with queue lengths, nor
 * with the number of retained messages (each is checked against its index record by a point read).
 *
 * Every value of the current format carries a checksum (codec.ts): one that fails it, or has none,
 * is a corrupt-record, whatever it would decode to. A store of the previous format (values without
 * a check, no retained index) is checked as that format.
 */

/** Stable problem codes (part of the `--json` schema). */
export type ProblemCode =
  | 'format-missing'
  | 'format-unsupported'
  | 'corrupt-record'
  | 'bad-key'
  | 'unknown-key'
  | 'no-session'
  | 'missing-body'
  | 'count-mismatch'
  | 'count-without-body'
  | 'body-without-count'
  | 'unreferenced-body'
  | 'flight-without-entry'
  | 'bad-flight'
  | 'duplicate-packet-id'
  | 'size-mismatch'
  | 'stats-mismatch'
  | 'retained-index-mismatch'
  | 'bad-shared';

export interface StoreProblem {
  kind: 'problem';
  key: string;
  problem: ProblemCode;
  detail: string;
}

export interface VerifySummary {
  kind: 'summary';
  keys: number;
  problems: number;
}

export type VerifyEvent = StoreProblem | VerifySummary;

export interface VerifySource {
  entries(): AsyncIterable<[string, Uint8Array]>;
  get(key: string): Promise<Uint8Array | undefined>;
}

/** How a shared subscription's filter begins (MQTT 5.0 4.8.2). */
const SHARE_PREFIX = '$share/';

export async function* verifyStore(source: VerifySource, progress?: (keysRead: number) => void): AsyncGenerator<VerifyEvent> {
  let scanned = 0;
  let problems = 0;
  const problem = (key: string, code: ProblemCode, detail: string): StoreProblem => {
    problems++;
    return { kind: 'problem', key, problem: code, detail };
  };
  /** How values read: checked records, unless the marker says the store has the previous format. */
  let decodeValue: RecordDecoder = decodeRecord;
  let currentFormat = true;
  /** The decoded value, or a corrupt-record problem. */
  const check = <T>(key: string, value: Uint8Array, isValid: (v: unknown) => v is T): { value: T } | { problem: StoreProblem } => {
    try {
      return { value: decodeValue(value, key, isValid) };
    } catch (error) {
      const cause = (error as { cause?: unknown }).cause;
      if (cause) return { problem: problem(key, 'corrupt-record', `does not decode: ${String(cause)}`) };
      // The codec's words: no checksum, a checksum that fails, or an unexpected shape.
      const words = error instanceof Error ? error.message.replace(/^store record ".*?" /s, '') : String(error);
      return { problem: problem(key, 'corrupt-record', words) };
    }
  };

  // Session existence, cached for the last client: keys of one client are contiguous per kind.
  let lastClient: string | undefined;
  let lastExists = false;
  const sessionExists = async (clientId: string): Promise<boolean> => {
    if (clientId !== lastClient) {
      lastClient = clientId;
      lastExists = (await source.get(keys.session(clientId))) !== undefined;
    }
    return lastExists;
  };

  // The DUP mark of the last client asked for: a released entry must be at or below it.
  let dupMarkClient: string | undefined;
  let dupMark: number | undefined;
  const dupMarkOf = async (clientId: string): Promise<number | undefined> => {
    if (clientId !== dupMarkClient) {
      dupMarkClient = clientId;
      const bytes = await source.get(keys.dupMark(clientId));
      dupMark = undefined;
      if (bytes !== undefined) {
        try {
          dupMark = decodeValue(bytes, keys.dupMark(clientId), isDupMarkValue).s;
        } catch {
          // Reported when the scan reaches the DUP mark record.
        }
      }
    }
    return dupMark;
  };

  let formatSeen = false;
  let brokerKeySeen = false;
  const counts = new Map<number, { key: string; count: number }>();
  /** Key and payload size of each shared body (size undefined when the body is corrupt). */
  const bodies = new Map<number, { key: string; size: number | undefined }>();
  /** Stored queue counters per client, checked against the entries when the scan leaves the client's queue. */
  const queueStats = new Map<string, { key: string; messages: number; bytes: number; checked: boolean }>();
  let queueClient: string | undefined;
  let queueCount = { messages: 0, bytes: 0, uncertain: false };
  const statsProblem = (clientId: string, found: { messages: number; bytes: number; uncertain: boolean }): StoreProblem | undefined => {
    const stored = queueStats.get(clientId);
    if (!stored) return undefined;
    stored.checked = true;
    // A corrupt entry, already reported, has no size to add up: the counters cannot be judged.
    if (found.uncertain || stored.messages === found.messages && stored.bytes === found.bytes) return undefined;
    return problem(
      stored.key,
      'stats-mismatch',
      `counters say ${stored.messages} entries / ${stored.bytes} bytes, the queue holds ${found.messages} / ${found.bytes}`,
    );
  };
  const references = new Map<number, number>();
  /** What the index records add up to, and the totals record, compared at the end. */
  const retainedFound = { messages: 0, bytes: 0, uncertain: false };
  let retainedTotals: { key: string; messages: number; bytes: number } | undefined;
  let flightClient: string | undefined;
  let flightPacketIds = new Map<number, string>();

  for await (const [key, value] of source.entries()) {
    scanned++;
    if (scanned % 1000 === 0) progress?.(scanned);
    const parsed = parseKey(key);
    if (parsed.kind !== 'unknown') brokerKeySeen = true;

    if (parsed.kind === 'format') {
      formatSeen = true;
      const format = judgeMarker(value);
      if (format.kind === 'undecodable') {
        yield problem(key, 'corrupt-record', formatDamage(format));
      } else if (format.kind === 'invalid') {
        yield problem(key, 'corrupt-record', formatDamage(format));
      } else if (format.kind === 'newer') {
        yield problem(key, 'format-unsupported', formatDamage(format));
        // Records of another format cannot be judged by this layout.
        break;
      } else if (format.kind === 'previous') {
        decodeValue = decodeFormat1;
        currentFormat = false;
      }
      continue;
    }
    if (queueClient !== undefined && !(parsed.kind === 'queue-entry' && parsed.clientId === queueClient)) {
      const mismatch = statsProblem(queueClient, queueCount);
      if (mismatch) yield mismatch;
      queueClient = undefined;
    }

    switch (parsed.kind) {
      case 'sync-mark': {
        const mark = check(key, value, isNumber);
        if ('problem' in mark) yield mark.problem;
        break;
      }
      case 'session': {
        const result = check(key, value, isSessionValue);
        if ('problem' in result) yield result.problem;
        break;
      }
      case 'subscription': {
        const result = check(key, value, isSubscriptionValue);
        if ('problem' in result) yield result.problem;
        // The broker refuses No Local on a shared subscription [MQTT-3.8.3-4]: stored, it was not the broker's doing.
        if ('value' in result && result.value.n && parsed.filter.startsWith(SHARE_PREFIX)) {
          yield problem(key, 'bad-shared', 'No Local on a shared subscription, which the broker never grants');
        }
        if (!(await sessionExists(parsed.clientId))) {
          yield problem(key, 'no-session', `subscription of ${JSON.stringify(parsed.clientId)}, which has no session record`);
        }
        break;
      }
      case 'ref-count': {
        const result = check(key, value, isRefCount);
        if ('problem' in result) yield result.problem;
        else counts.set(parsed.messageId, { key, count: result.value });
        break;
      }
      case 'body': {
        const result = check(key, value, isBodyValue);
        if ('problem' in result) yield result.problem;
        // Recorded even when corrupt: its references are then not reported a second time as missing.
        bodies.set(parsed.messageId, { key, size: 'value' in result ? result.value.p.byteLength : undefined });
        break;
      }
      case 'queue-stats': {
        const { clientId } = parsed;
        const result = check(key, value, isQueueStatsValue);
        if ('problem' in result) yield result.problem;
        else queueStats.set(clientId, { key, messages: result.value.m, bytes: result.value.b, checked: false });
        if (!(await sessionExists(clientId))) yield problem(key, 'no-session', `queue counters of ${JSON.stringify(clientId)}, which has no session record`);
        break;
      }
      case 'release': {
        const { clientId, seq } = parsed;
        const result = check(key, value, isReleaseValue);
        if ('problem' in result) yield result.problem;
        if (!(await sessionExists(clientId))) yield problem(key, 'no-session', `released state of ${JSON.stringify(clientId)}, which has no session record`);
        const entryKey = keys.queueEntry(clientId, seq);
        const entryBytes = await source.get(entryKey);
        if (entryBytes === undefined) {
          yield problem(key, 'flight-without-entry', `released state for seq ${seq}, which has no queue entry`);
        } else if ('value' in result) {
          const entry = check(entryKey, entryBytes, isQueueEntryValue);
          // A corrupt entry is reported when the scan reaches it.
          if ('value' in entry && entry.value.q !== 2) {
            yield problem(key, 'bad-flight', `released (PUBREC received) but the delivery is QoS ${entry.value.q}`);
          }
          const mark = await dupMarkOf(clientId);
          if (mark === undefined || seq > mark) {
            yield problem(key, 'bad-flight', `released, but seq ${seq} is above the DUP mark (${mark ?? 'none'}), so it was never sent`);
          }
        }
        if ('value' in result) {
          if (clientId !== flightClient) {
            flightClient = clientId;
            flightPacketIds = new Map();
          }
          const other = flightPacketIds.get(result.value.i);
          if (other !== undefined) yield problem(key, 'duplicate-packet-id', `packet id ${result.value.i} is also in flight for ${JSON.stringify(other)}`);
          else flightPacketIds.set(result.value.i, key);
          if (result.value.i === 0) yield problem(key, 'bad-flight', 'packet id 0');
        }
        break;
      }
      case 'inbound': {
        const { clientId, packetId } = parsed;
        if (packetId === 0) yield problem(key, 'bad-key', 'inbound packet id 0');
        const result = check(key, value, isInboundValue);
        if ('problem' in result) yield result.problem;
        if (!(await sessionExists(clientId))) yield problem(key, 'no-session', `inbound QoS 2 state of ${JSON.stringify(clientId)}, which has no session record`);
        break;
      }
      case 'queue-entry': {
        const { clientId } = parsed;
        if (clientId !== queueClient) {
          queueClient = clientId;
          queueCount = { messages: 0, bytes: 0, uncertain: false };
        }
        const result = check(key, value, isQueueEntryValue);
        if ('problem' in result) {
          queueCount.uncertain = true;
          yield result.problem;
        }
        if (!(await sessionExists(clientId))) yield problem(key, 'no-session', `queue entry of ${JSON.stringify(clientId)}, which has no session record`);
        if ('value' in result) {
          queueCount.messages++;
          const entry = result.value;
          const notShared = entry.g?.find((filter) => !filter.startsWith(SHARE_PREFIX));
          if (notShared !== undefined) yield problem(key, 'bad-shared', `delivery made for shared subscription ${JSON.stringify(notShared)}, which is not a $share/ filter`);
          if (entry.m === undefined) {
            queueCount.bytes += entry.p!.byteLength;
          } else {
            const id = entry.m;
            queueCount.bytes += entry.z ?? 0;
            references.set(id, (references.get(id) ?? 0) + 1);
            const body = bodies.get(id);
            if (!body) yield problem(key, 'missing-body', `references shared message ${id}, whose body is not stored`);
            else if (body.size !== undefined && entry.z !== undefined && body.size !== entry.z) {
              yield problem(key, 'size-mismatch', `says the shared payload has ${entry.z} bytes, the body has ${body.size}`);
            }
          }
        }
        break;
      }
      case 'retained': {
        const result = check(key, value, isRetainedValue);
        if ('problem' in result) yield result.problem;
        if (parsed.topic.length === 0) yield problem(key, 'bad-key', 'retained message with an empty topic');
        if (!currentFormat) break;
        const indexKey = keys.retainedIndex(parsed.topic);
        const indexBytes = await source.get(indexKey);
        if (indexBytes === undefined) {
          yield problem(key, 'retained-index-mismatch', 'retained message without an index record: the broker does not know it is there');
        } else if ('value' in result) {
          const index = check(indexKey, indexBytes, isRetainedIndexValue);
          // A corrupt index record is reported when the scan reaches it.
          if ('value' in index && (index.value.o !== result.value.o || index.value.z !== result.value.p.byteLength)) {
            yield problem(
              key,
              'retained-index-mismatch',
              `the index record says QoS ${index.value.o}, ${index.value.z} bytes; the message has QoS ${result.value.o}, ${result.value.p.byteLength} bytes`,
            );
          }
        }
        break;
      }
      case 'retained-index': {
        const result = check(key, value, isRetainedIndexValue);
        if ('problem' in result) {
          retainedFound.uncertain = true;
          yield result.problem;
        } else {
          retainedFound.messages++;
          retainedFound.bytes += result.value.z;
        }
        if ((await source.get(keys.retained(parsed.topic))) === undefined) {
          yield problem(key, 'retained-index-mismatch', 'index record of a retained message that is not stored');
        }
        break;
      }
      case 'retained-totals': {
        const result = check(key, value, isRetainedTotalsValue);
        if ('problem' in result) {
          retainedFound.uncertain = true;
          yield result.problem;
        } else {
          retainedTotals = { key, messages: result.value.m, bytes: result.value.b };
        }
        break;
      }
      case 'dup-mark': {
        const { clientId } = parsed;
        const result = check(key, value, isDupMarkValue);
        if ('problem' in result) yield result.problem;
        else if ((result.value.r ?? 0) > result.value.s) {
          // A PUBREC answers a PUBLISH sent, and every PUBLISH sent is under the DUP mark.
          yield problem(key, 'bad-flight', `released through seq ${result.value.r}, above the DUP mark (${result.value.s}): those entries were never sent`);
        }
        if (!(await sessionExists(clientId))) yield problem(key, 'no-session', `DUP mark of ${JSON.stringify(clientId)}, which has no session record`);
        break;
      }
      case 'malformed':
        yield problem(key, 'bad-key', `key is not ${parsed.expected}`);
        break;
      case 'unknown':
        yield problem(key, 'unknown-key', 'not a key of the broker store layout');
        break;
    }
  }

  if (queueClient !== undefined) {
    const mismatch = statsProblem(queueClient, queueCount);
    if (mismatch) yield mismatch;
  }
  for (const [clientId, stored] of queueStats) {
    if (stored.checked) continue;
    const mismatch = statsProblem(clientId, { messages: 0, bytes: 0, uncertain: false });
    if (mismatch) yield mismatch;
  }
  if (!formatSeen) yield problem(FORMAT_KEY, 'format-missing', formatDamage(judgeMissingMarker(scanned > 0, brokerKeySeen)));
  // A corrupt index or totals record, already reported, leaves nothing to compare.
  if (currentFormat && !retainedFound.uncertain) {
    const totals = retainedTotals ?? { key: RETAINED_TOTALS_KEY, messages: 0, bytes: 0 };
    if (totals.messages !== retainedFound.messages || totals.bytes !== retainedFound.bytes) {
      yield problem(
        totals.key,
        'stats-mismatch',
        `retained totals say ${totals.messages} messages / ${totals.bytes} bytes, the index records hold ${retainedFound.messages} / ${retainedFound.bytes}`,
      );
    }
  }
  for (const [id, { key, count }] of counts) {
    const found = references.get(id) ?? 0;
    if (!bodies.has(id)) yield problem(key, 'count-without-body', `count ${count} for message ${id}, whose body is not stored`);
    else if (found !== count) yield problem(key, 'count-mismatch', `count is ${count} but ${found} queue entries reference message ${id}`);
  }
  for (const [id, { key }] of bodies) {
    const found = references.get(id) ?? 0;
    if (!counts.has(id)) yield problem(key, 'body-without-count', `message body with ${found} references and no reference count`);
    else if (found === 0 && (counts.get(id)?.count ?? 0) === 0) yield problem(key, 'unreferenced-body', 'message body that no queue entry references');
  }
  progress?.(scanned);
  yield { kind: 'summary', keys: scanned, problems };
}
