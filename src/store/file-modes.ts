import { chmodSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { LevelDatabase } from './level-database.js';

/**
 * The store holds every queued and retained payload: it is the broker user's alone, whatever the
 * umask the broker was started with. Directories the broker creates get 0700. Files are created by
 * LevelDB itself (0644 less the umask), at open and later, from its own threads, as it switches
 * logs and compacts tables: only the process umask reaches those, so while a store is open the
 * umask also withholds every group and other permission, and its files get 0600. A store or data
 * directory that already exists keeps its modes (an operator may have chosen them); wider ones
 * are reported at start.
 */

const GROUP_AND_OTHERS = 0o077;
const PRIVATE_DIRECTORY = 0o700;

/** Creates `path` and its missing parents with mode 0700, whatever the umask. */
export function makePrivateDirectory(path: string): void {
  const first = mkdirSync(path, { recursive: true, mode: PRIVATE_DIRECTORY });
  if (first === undefined) return;
  // mkdir applies the umask; chmod does not.
  for (let directory = path; ; directory = dirname(directory)) {
    chmodSync(directory, PRIVATE_DIRECTORY);
    if (directory === first || dirname(directory) === directory) break;
  }
}

let holders = 0;
let umaskBefore: number | undefined;

/**
 * Makes the process umask withhold group and other permissions until the returned function is
 * called; shared by every store open in the process, restored when the last one closes. A worker
 * thread cannot change the umask: there the files keep LevelDB's modes (and the directory's 0700
 * still keeps other users out).
 */
function holdPrivateUmask(): () => void {
  if (holders++ === 0) {
    try {
      // process.umask() without an argument is deprecated: read it by setting it.
      const current = process.umask(GROUP_AND_OTHERS);
      process.umask(current | GROUP_AND_OTHERS);
      umaskBefore = current;
    } catch {
      umaskBefore = undefined;
    }
  }
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    if (--holders === 0 && umaskBefore !== undefined) {
      process.umask(umaskBefore);
      umaskBefore = undefined;
    }
  };
}

/**
 * Keeps the private umask while `db` is open, reopens included (a failed write reopens the store).
 * Call it before `db.open()`; the function it returns lets go after a failed open, which LevelDB
 * does not announce.
 */
export function keepFilesPrivate(db: LevelDatabase): () => void {
  let release: (() => void) | undefined;
  const letGo = () => {
    release?.();
    release = undefined;
  };
  db.on('opening', () => {
    release ??= holdPrivateUmask();
  });
  db.on('closed', letGo);
  return letGo;
}

/**
 * One line per path that other local users can reach: the data directory, the store, and the
 * store's files (one line for all of them). Checked before the store is opened.
 */
export function privacyWarnings(location: string): string[] {
  const warnings: string[] = [];
  const dataDir = dirname(location);
  const wide = (path: string): number | undefined => {
    try {
      const mode = statSync(path).mode & 0o777;
      return mode & GROUP_AND_OTHERS ? mode : undefined;
    } catch {
      return undefined;
    }
  };
  const dataDirMode = wide(dataDir);
  if (dataDirMode !== undefined) {
    warnings.push(`the data directory ${dataDir} has mode ${octal(dataDirMode)}: other local users can reach it (chmod 700 ${dataDir} makes it private)`);
  }
  const storeMode = wide(location);
  if (storeMode !== undefined) {
    warnings.push(`the store ${location} has mode ${octal(storeMode)}: other local users can reach it (chmod 700 ${location} makes it private)`);
  }
  let files: string[] = [];
  try {
    files = readdirSync(location);
  } catch {
    // No store yet: the broker creates it private.
  }
  const open = files.flatMap((name) => {
    const mode = wide(join(location, name));
    return mode === undefined ? [] : [`${name} ${octal(mode)}`];
  });
  if (open.length > 0) {
    const shown = open.slice(0, 3).join(', ') + (open.length > 3 ? `, and ${open.length - 3} more` : '');
    warnings.push(`files of the store ${location} are open to other local users (${shown}): chmod 600 ${join(location, '*')} makes them private`);
  }
  return warnings;
}

function octal(mode: number): string {
  return `0${mode.toString(8).padStart(3, '0')}`;
}
