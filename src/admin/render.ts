import { EXPIRY_NEVER } from '../session/session-manager.js';
import { printable, quoted } from '../text-escape.js';
import type {
  AdminRecord,
  BridgeRecord,
  CountersRecord,
  MessagePropertyFields,
  MessageRecord,
  PayloadField,
  RetainedRecord,
  SessionRecord,
  SubscriptionField,
  TotalsRecord,
} from './records.js';

/**
 * The readable output of broker-admin: aligned tables, one per run of records of the same kind.
 * Records stream in, so a table is printed every TABLE_ROWS rows (or when the kind changes)
 * rather than once everything is known.
 *
 * Every text a client chose (client ids, topics, filters, user names, payloads) and every text read
 * from the store goes through text-escape.ts: a client id holding an escape sequence or a newline
 * cannot clear the operator's screen or forge a row. `--json` prints the exact strings instead.
 */

const TABLE_ROWS = 200;
const CELL_LIST = 60;

type Row = string[];

interface Table {
  kind: string;
  title?: string;
  header: Row;
  rows: Row[];
}

export class HumanRenderer {
  #out = '';
  #table: Table | undefined;
  readonly #titled = new Set<string>();
  readonly #seen = new Set<string>();
  /** Record types the output should have, with what to say when none came. */
  readonly #expected: Array<[string, string]>;

  constructor(expected: Array<[type: string, none: string]> = []) {
    this.#expected = expected;
  }

  /** The text rendered so far and not yet taken: the caller writes it (and waits for the pipe). */
  take(): string {
    const text = this.#out;
    this.#out = '';
    return text;
  }

  record(record: AdminRecord): void {
    this.#seen.add(record.type);
    switch (record.type) {
      case 'header':
        return;
      case 'session':
        this.#row('session', 'Sessions', SESSION_HEADER, sessionRow(record));
        return;
      case 'bridge':
        this.#row('bridge', 'Bridges', BRIDGE_HEADER, bridgeRow(record));
        return;
      case 'message':
        this.#row(`message:${record.clientId}`, `Queue of ${printable(record.clientId)}`, MESSAGE_HEADER, messageRow(record));
        return;
      case 'retained':
        this.#row('retained', 'Retained messages', RETAINED_HEADER, retainedRow(record));
        return;
      case 'problem':
        this.#row('problem', 'Problems', ['KEY', 'PROBLEM', 'DETAIL'], [printableKey(record.key), printable(record.problem), printable(record.detail)]);
        return;
      case 'totals':
        this.flush();
        this.#sayMissing();
        this.#write(totalsText(record));
        return;
      case 'counters':
        this.flush();
        this.#write(countersText(record));
        return;
      case 'verify':
        this.flush();
        this.#write(
          record.ok
            ? `verify: ok, ${record.keys} keys checked, no problem\n`
            : `verify: ${record.problems} problem${record.problems === 1 ? '' : 's'} in ${record.keys} keys\n`,
        );
        return;
      case 'dropped':
        this.flush();
        this.#write(`dropped the session of ${quoted(record.clientId)}${record.wasConnected ? ' and closed its connection' : ''}\n`);
        return;
      case 'retained-cleared':
        this.flush();
        this.#write(`cleared the retained message of ${quoted(record.topic)}\n`);
        return;
      case 'compacted':
        this.flush();
        this.#write(`compacted: about ${bytes(record.diskBytesBefore)} on disk before, ${bytes(record.diskBytesAfter)} after\n`);
        return;
    }
  }

  /** Prints the table under way. */
  flush(): void {
    const table = this.#table;
    this.#table = undefined;
    if (!table || table.rows.length === 0) return;
    let text = '';
    if (table.title && !this.#titled.has(table.kind)) {
      this.#titled.add(table.kind);
      text += `${table.title}\n`;
    }
    text += align([table.header, ...table.rows]);
    this.#write(`${text}\n`);
  }

  /** Ends the output; says so when a listing came out empty. */
  end(): void {
    this.flush();
    this.#sayMissing();
  }

  #sayMissing(): void {
    for (const [type, none] of this.#expected.splice(0)) {
      if (!this.#seen.has(type)) this.#write(`${none}\n`);
    }
  }

  #write(text: string): void {
    this.#out += text;
  }

  #row(kind: string, title: string, header: Row, row: Row): void {
    if (this.#table && (this.#table.kind !== kind || this.#table.rows.length >= TABLE_ROWS)) this.flush();
    this.#table ??= { kind, title, header, rows: [] };
    this.#table.rows.push(row);
  }
}

// The MQTT 5 columns come last and are blank where there is nothing of MQTT 5 to show, so a
// 3.1.1 row reads as it did.
const SESSION_HEADER = ['CLIENT', 'SESSION', 'CONNECTED', 'CREATED', 'LAST SEEN', 'SUBSCRIPTIONS', 'QUEUED', 'BYTES', 'DROPPED', 'INFLIGHT', 'INBOUND QOS2', 'OWNER', 'EXPIRY'];
const MESSAGE_HEADER = ['SEQ', 'STATE', 'PACKET', 'QOS', 'RETAIN', 'TOPIC', 'SIZE', 'PAYLOAD', 'EXPIRES', 'PROPERTIES'];
const RETAINED_HEADER = ['TOPIC', 'QOS', 'SIZE', 'PAYLOAD', 'EXPIRES', 'PROPERTIES'];
const BRIDGE_HEADER = ['NAME', 'ADDRESS', 'STATE', 'LAST ERROR', 'QUEUED', 'BYTES', 'DROPPED', 'INFLIGHT', 'FORWARDED', 'RECEIVED', 'SESSION'];

function bridgeRow(record: BridgeRecord): Row {
  const until = record.retryAt === null ? '' : ` until ${record.retryAt}`;
  const state = record.state === 'refused' ? `refused with code ${record.refusedCode ?? '?'}${until}` : record.state === 'waiting' ? `waiting${until}` : record.state;
  return [
    printable(record.name),
    printable(record.address ?? '-'),
    state,
    printable(record.lastError ?? '-'),
    String(record.queued.count),
    String(record.queued.bytes),
    String(record.dropped),
    String(record.inflight),
    String(record.forwarded),
    String(record.received),
    printable(record.session),
  ];
}

function sessionRow(record: SessionRecord): Row {
  return [
    printable(record.clientId),
    record.persistent ? 'persistent' : 'clean',
    record.connected ? 'yes' : 'no',
    printable(record.createdAt ?? '-'),
    printable(record.lastSeen ?? '-'),
    list(record.subscriptions.map(subscriptionText)),
    String(record.queued.count),
    String(record.queued.bytes),
    String(record.dropped),
    list(record.inflight.map(({ packetId, state }) => `#${packetId} ${state}`)),
    list(record.inbound.map(({ packetId }) => `#${packetId}`)),
    record.owner === undefined ? '-' : printable(record.owner),
    sessionExpiryText(record),
  ];
}

/**
 * A filter, its QoS, and its MQTT 5 options where set, short so that a cell shows several:
 * `x/# (1 nl rap rh2 id7)` (No Local, Retain As Published, Retain Handling, identifier; README).
 */
function subscriptionText(subscription: SubscriptionField): string {
  const options = [String(subscription.qos)];
  if (subscription.noLocal) options.push('nl');
  if (subscription.retainAsPublished) options.push('rap');
  if (subscription.retainHandling) options.push(`rh${subscription.retainHandling}`);
  if (subscription.identifier !== undefined) options.push(`id${subscription.identifier}`);
  return `${printable(subscription.filter)} (${options.join(' ')})`;
}

/** Blank for a session without an expiry of its own (3.1.1). */
function sessionExpiryText({ expiry, expiresAt, connected }: SessionRecord): string {
  if (expiry === undefined) return '';
  if (expiry >= EXPIRY_NEVER) return 'never';
  if (expiry === 0) return 'with its connection';
  if (connected || !expiresAt) return `${expiry} s after it disconnects`;
  return `${expiry} s: ${printable(expiresAt)}`;
}

/** When a message expires and what is left: blank for one without expiry. */
function messageExpiryText({ expiresAt, expiresIn }: MessagePropertyFields): string {
  if (expiresAt === undefined) return '';
  return expiresIn === 0 ? `${printable(expiresAt)} (expired)` : `${printable(expiresAt)} (${expiresIn} s left)`;
}

/** MQTT 5 properties, identifiers and shared subscriptions of a message, each text escaped; blank for none. */
function propertiesText(fields: MessagePropertyFields & { subscriptionIds?: number[]; shared?: string[] }): string {
  const items: string[] = [];
  const properties = fields.properties;
  if (properties?.payloadFormat === 1) items.push('utf-8');
  if (properties?.contentType !== undefined) items.push(`content type ${quoted(properties.contentType)}`);
  if (properties?.responseTopic !== undefined) items.push(`response topic ${quoted(properties.responseTopic)}`);
  if (properties?.correlationData !== undefined) items.push(`correlation ${payloadText(properties.correlationData)}`);
  for (const [name, value] of properties?.userProperties ?? []) items.push(`${quoted(name)}=${quoted(value)}`);
  if (fields.subscriptionIds) items.push(`ids ${fields.subscriptionIds.join(' ')}`);
  for (const filter of fields.shared ?? []) items.push(`shared ${printable(filter)}`);
  return items.length === 0 ? '' : items.join(', ');
}

function messageRow(record: MessageRecord): Row {
  return [
    String(record.seq),
    record.state,
    record.packetId === null ? '-' : `#${record.packetId}`,
    String(record.qos),
    record.retain ? 'yes' : 'no',
    printable(record.topic),
    String(record.payload.size),
    payloadText(record.payload),
    messageExpiryText(record),
    propertiesText(record),
  ];
}

function retainedRow(record: RetainedRecord): Row {
  return [printable(record.topic), String(record.qos), String(record.payload.size), payloadText(record.payload), messageExpiryText(record), propertiesText(record)];
}

function totalsText(totals: TotalsRecord): string {
  const lines: Array<[string, string]> = [
    ['sessions', String(totals.sessions)],
    ['subscriptions', String(totals.subscriptions)],
    ['queued messages', `${totals.queued} (${bytes(totals.queuedBytes)} of payload)`],
    ['in flight', String(totals.inflight)],
    ['inbound QoS 2 awaiting PUBREL', String(totals.inbound)],
    ['shared message bodies', String(totals.sharedBodies)],
    ['retained messages', `${totals.retained} (${bytes(totals.retainedBytes)} of payload)`],
    ['store keys', `${totals.keys} (${bytes(totals.keyBytes)} of keys, ${bytes(totals.valueBytes)} of values)`],
    ['on disk (estimate)', bytes(totals.diskBytes)],
  ];
  const width = Math.max(...lines.map(([label]) => label.length));
  return `Totals\n${lines.map(([label, value]) => `  ${label.padEnd(width)}  ${value}`).join('\n')}\n`;
}

function countersText(counters: CountersRecord): string {
  const lines: Array<[string, string]> = [
    ['PUBLISHes refused by the ACL', String(counters.publishesRefused)],
    ['connections refused (max_connections)', String(counters.connectionsRefused)],
    ['packets over max_packet_size', String(counters.packetsTooLarge)],
    ['QoS 0 dropped (client not reading)', String(counters.qos0Dropped)],
    ['not sent: over an MQTT 5 client\'s maximum packet size', String(counters.publishesOverClientMaximum)],
  ];
  const width = Math.max(...lines.map(([label]) => label.length));
  return `Since the broker started\n${lines.map(([label, value]) => `  ${label.padEnd(width)}  ${value}`).join('\n')}\n`;
}

/** Text payloads in JSON quotes (escapes show what is invisible), others as hex. */
export function payloadText(payload: PayloadField): string {
  const shown = payload.encoding === 'utf8' ? quoted(payload.data) : `hex:${Buffer.from(payload.data, 'base64').toString('hex')}`;
  return payload.truncated ? `${shown}…` : shown;
}

/** A raw store key with its NUL separators made visible (the rest of it escaped like any text). */
export function printableKey(key: string): string {
  return key
    .split('\u0000')
    .map((part) => printable(part))
    .join('␀');
}

function list(items: string[]): string {
  if (items.length === 0) return '-';
  let text = '';
  for (let index = 0; index < items.length; index++) {
    const next = text === '' ? items[index]! : `${text}, ${items[index]!}`;
    if (next.length > CELL_LIST && index > 0) return `${text}, … (+${items.length - index})`;
    text = next;
  }
  return text;
}

function bytes(count: number): string {
  if (count < 1024) return `${count} B`;
  if (count < 1024 * 1024) return `${(count / 1024).toFixed(1)} KiB`;
  return `${(count / 1024 / 1024).toFixed(1)} MiB`;
}

function align(rows: Row[]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => [...(row[column] ?? '')].length)));
  return rows
    .map((row) =>
      row
        .map((cell, column) => (column === row.length - 1 ? cell : cell + ' '.repeat(widths[column]! - [...cell].length)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
