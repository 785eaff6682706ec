import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { BrokerError, ErrorCodes } from '../errors.js';
import { decode, encode } from './codec.js';
import { keepFilesPrivate, makePrivateDirectory } from './file-modes.js';
import { convertFromFormat1 } from './format-migration.js';
import { CHECKED_FORMAT_VERSION, FORMAT_KEY, FORMAT_VERSION, isBrokerKey, isNumber, PREVIOUS_FORMAT_VERSION } from './key-layout.js';
import type { LevelDatabase } from './level-database.js';
import { checkStoreFiles, isStoreDamage } from './store-damage.js';

/**
 * The one way a store is opened, by the broker and by broker-admin alike, so that both judge every
 * store the same: the same damage checks before LevelDB sees the files, the same meaning of an
 * open error, the same reading of the format marker, the same file modes (file-modes.ts). They
 * differ only in what they may do: the broker creates a missing store, writes the marker into an
 * empty one and converts one of the previous format; broker-admin never writes a key (it reads a
 * store of the previous format as it is).
 */

export type OpenPurpose = 'broker' | 'inspect';

export interface OpenOptions {
  purpose: OpenPurpose;
  /** Inspection only: open a store whose format marker is missing or unknown (verify reports it as a problem instead). */
  skipFormatCheck?: boolean;
}

export async function openLevelStore(location: string, options: OpenOptions): Promise<LevelDatabase> {
  const creating = options.purpose === 'broker';
  // Before LevelDB sees the files: damage it would "repair" by dropping data must stop us here.
  checkStoreFiles(location);
  if (creating) {
    makePrivateDirectory(location);
  } else if (!existsSync(join(location, 'CURRENT'))) {
    // LevelDB writes CURRENT when it creates a database: no CURRENT, no database. Checked before
    // LevelDB is asked, so a wrong directory is left exactly as it was.
    throw new BrokerError(ErrorCodes.STORE_NOT_A_BROKER_STORE, `there is no broker store at ${location}`);
  }
  const db: LevelDatabase = new ClassicLevel<string, Uint8Array>(location, {
    keyEncoding: 'utf8',
    valueEncoding: 'view',
    createIfMissing: creating,
  });
  const letGoOfUmask = keepFilesPrivate(db);
  try {
    await db.open();
  } catch (error) {
    letGoOfUmask();
    throw openError(location, error);
  }
  if (options.skipFormatCheck) return db;
  try {
    const format = await readFormat(db);
    if (format.kind === 'new' && creating) {
      await db.put(FORMAT_KEY, encode(FORMAT_VERSION), { sync: true });
    } else if (format.kind === 'previous' && creating) {
      await convertFromFormat1(db);
    } else if (format.kind === 'before-mqtt5' && creating) {
      // Its records are records of this format: only an older broker must now refuse it.
      await db.put(FORMAT_KEY, encode(FORMAT_VERSION), { sync: true });
    } else {
      const problem = formatProblem(format, location);
      if (problem) throw problem;
    }
  } catch (error) {
    await db.close();
    throw error;
  }
  return db;
}

/** What a store's format marker says, and, without one, what the store holds instead. */
export type FormatFinding =
  | { kind: 'current' }
  /** Format 1: the broker converts it when it opens it; broker-admin reads it as it is. */
  | { kind: 'previous' }
  /** Format 2: checked records without MQTT 5 fields; the broker moves its marker to 3, broker-admin reads it as it is. */
  | { kind: 'before-mqtt5' }
  /** No marker and no key at all: a store the broker has just created. */
  | { kind: 'new' }
  /** No marker, and keys of another program. */
  | { kind: 'foreign' }
  /** No marker, but keys of this broker's layout: the marker was lost. */
  | { kind: 'marker-missing' }
  | { kind: 'undecodable'; cause: unknown }
  /** A newer broker's format: not damage, never to be moved aside. */
  | { kind: 'newer'; version: number }
  /** A number no format ever had. */
  | { kind: 'invalid'; version: number };

/** The formats this broker opens: its own and the previous one, which it converts. */
const READABLE_FORMATS = `${PREVIOUS_FORMAT_VERSION}, ${CHECKED_FORMAT_VERSION} or ${FORMAT_VERSION}`;

/** Reads the marker and, without it, the first key. */
export async function readFormat(db: LevelDatabase): Promise<FormatFinding> {
  const bytes = await db.get(FORMAT_KEY);
  if (bytes !== undefined) return judgeMarker(bytes);
  const [firstKey] = await db.keys({ limit: 1 }).all();
  return judgeMissingMarker(firstKey !== undefined, firstKey !== undefined && isBrokerKey(firstKey));
}

export function judgeMarker(bytes: Uint8Array): FormatFinding {
  let version: number;
  try {
    version = decode(bytes, FORMAT_KEY, isNumber);
  } catch (error) {
    return { kind: 'undecodable', cause: error };
  }
  if (version === FORMAT_VERSION) return { kind: 'current' };
  if (version === PREVIOUS_FORMAT_VERSION) return { kind: 'previous' };
  if (version === CHECKED_FORMAT_VERSION) return { kind: 'before-mqtt5' };
  if (Number.isInteger(version) && version > FORMAT_VERSION) return { kind: 'newer', version };
  return { kind: 'invalid', version };
}

/** A store without a marker: new when empty, ours when any of its keys is ours. */
export function judgeMissingMarker(holdsKeys: boolean, holdsBrokerKeys: boolean): FormatFinding {
  if (!holdsKeys) return { kind: 'new' };
  return holdsBrokerKeys ? { kind: 'marker-missing' } : { kind: 'foreign' };
}

/** The error a finding means for opening the store at `location`; undefined: it may be used. */
export function formatProblem(finding: FormatFinding, location: string): BrokerError | undefined {
  switch (finding.kind) {
    case 'current':
    case 'previous':
    case 'before-mqtt5':
      return undefined;
    case 'new':
      return new BrokerError(
        ErrorCodes.STORE_NOT_A_BROKER_STORE,
        `${location} holds an empty LevelDB database, not a broker store yet (no format marker; the broker writes one when it starts on it)`,
      );
    case 'foreign':
      return new BrokerError(ErrorCodes.STORE_NOT_A_BROKER_STORE, `${location} holds a LevelDB database that is not a broker store (no format marker)`);
    case 'marker-missing':
      return new BrokerError(ErrorCodes.STORE_CORRUPT, `the store at ${location} is damaged: ${formatDamage(finding)}`);
    case 'undecodable':
      return new BrokerError(ErrorCodes.STORE_CORRUPT, `the store at ${location} is damaged: ${formatDamage(finding)}`, { cause: finding.cause });
    case 'newer':
      return new BrokerError(ErrorCodes.STORE_UNSUPPORTED_FORMAT, `${location} has store format ${finding.version}; this broker reads format ${READABLE_FORMATS}`);
    case 'invalid':
      return new BrokerError(ErrorCodes.STORE_CORRUPT, `the store at ${location} is damaged: ${formatDamage(finding)}`);
  }
}

/** What is wrong with the marker, in the words both the broker and `verify` use. */
export function formatDamage(finding: FormatFinding): string {
  switch (finding.kind) {
    case 'marker-missing':
      return 'its format marker is missing although it holds broker data';
    case 'undecodable':
      return 'its format marker does not decode';
    case 'invalid':
      return `its format marker holds ${finding.version}, no store format ever had that number`;
    case 'newer':
      return `store format ${finding.version}; this broker reads format ${READABLE_FORMATS}`;
    default:
      return 'no format marker: this is not a broker store';
  }
}

/** What a failed open of the store means for the operator: locked, damaged, or another failure. */
export function openError(location: string, error: unknown): BrokerError {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  if (cause?.code === 'LEVEL_LOCKED') {
    return new BrokerError(
      ErrorCodes.STORE_LOCKED,
      `the data directory ${location} is in use by another process (is another broker running on it?)`,
      { cause: error },
    );
  }
  // LevelDB's own words (a missing MANIFEST, a corrupt table) are in the cause; "Database failed to open" says nothing.
  const detail = cause?.message ?? (error as Error).message ?? String(error);
  if (isStoreDamage(error)) {
    return new BrokerError(ErrorCodes.STORE_CORRUPT, `the store at ${location} is damaged: LevelDB reports "${detail}"`, { cause: error });
  }
  return new BrokerError(
    ErrorCodes.STORE_OPEN_FAILED,
    `cannot open the store at ${location}: ${detail} (broker-admin verify --data <dir> checks a store)`,
    { cause: error },
  );
}
