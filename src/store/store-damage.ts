import { existsSync, readdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { BrokerError, ErrorCodes } from '../errors.js';
import { findLogDamage } from './leveldb-log.js';

/**
 * What makes a store damaged, as opposed to unusable for another reason (locked by a running
 * broker, not readable for this user, written by a newer broker): only a damaged store may be
 * moved aside.
 */

/** LevelDB's data files: a directory holding any of them holds a database, whatever else is missing. */
const DATA_FILE = /^\d+\.(log|ldb|sst)$/;

/**
 * Checks a store's files before LevelDB opens it, for the two kinds of damage LevelDB would not
 * report but silently "repair": without CURRENT it creates a new, empty database beside the old
 * files (and later deletes them); a damaged record in the write-ahead log is dropped with the
 * rest of its block. Throws STORE_CORRUPT; an empty or missing directory is a new store.
 */
export function checkStoreFiles(location: string): void {
  if (!existsSync(location)) return;
  const files = readdirSync(location);
  const dataFiles = files.filter((name) => DATA_FILE.test(name));
  if (dataFiles.length === 0) return;
  if (!files.includes('CURRENT')) {
    throw new BrokerError(
      ErrorCodes.STORE_CORRUPT,
      `the store at ${location} is damaged: its CURRENT file is missing although it holds data (${dataFiles.slice(0, 3).join(', ')}${dataFiles.length > 3 ? ', …' : ''})`,
    );
  }
  for (const name of dataFiles.filter((file) => file.endsWith('.log')).sort()) {
    const damage = findLogDamage(join(location, name));
    if (damage) {
      throw new BrokerError(
        ErrorCodes.STORE_CORRUPT,
        `the store at ${location} is damaged: its write-ahead log ${name} is damaged at byte ${damage.offset} (${damage.reason}): LevelDB would drop ${damage.bytes} bytes of stored transitions without a word`,
      );
    }
  }
}

/**
 * Whether a start-up error means the store's contents are damaged. A locked store never is, nor
 * one LevelDB cannot read for a reason outside the store (permissions, a failing disk).
 */
export function isStoreDamage(error: unknown): boolean {
  for (let current = error; current instanceof Error; current = current.cause) {
    const code = (current as { code?: unknown }).code;
    if (code === ErrorCodes.STORE_LOCKED || code === 'LEVEL_LOCKED') return false;
    // Not STORE_NOT_A_BROKER_STORE: a LevelDB of some other program is not ours to move.
    if (code === ErrorCodes.STORE_CORRUPT || code === ErrorCodes.STORE_CORRUPT_RECORD) return true;
    if (code === 'LEVEL_CORRUPTION') return true;
    // A file LevelDB's own records name is gone (a MANIFEST, or CURRENT pointing nowhere) or cut
    // short (a table read past its end): damage. Other I/O errors are about the disk or access.
    if (code === 'LEVEL_IO_ERROR' && /No such file or directory|Invalid argument/.test(current.message)) return true;
  }
  return false;
}

/** What is wrong, in a few words: ours for our errors, LevelDB's for its own. */
export function damageDetail(error: unknown): string {
  if (error instanceof BrokerError) return error.message;
  return `LevelDB reports "${error instanceof Error ? error.message : String(error)}"`;
}

/**
 * Renames the store to `store.corrupt-<ISO time>` beside it (colons made dashes, for every file
 * system), so a new one can start in its place while the old one stays on disk for inspection.
 */
export function moveStoreAside(location: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/:/g, '-');
  let target = `${location}.corrupt-${stamp}`;
  for (let n = 2; existsSync(target); n++) target = `${location}.corrupt-${stamp}-${n}`;
  renameSync(location, target);
  return target;
}
