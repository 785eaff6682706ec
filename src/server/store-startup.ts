import { basename, dirname } from 'node:path';
import { BrokerError, ErrorCodes } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Distributor } from '../session/distributor.js';
import type { SessionManager } from '../session/session-manager.js';
import type { SessionRepository } from '../store/repository.js';
import { privacyWarnings } from '../store/file-modes.js';
import { damageDetail, isStoreDamage, moveStoreAside } from '../store/store-damage.js';

export type StoreOnCorrupt = 'fail' | 'move-aside';

export interface StoreStartup {
  durable: SessionRepository;
  sessions: SessionManager;
  distributor: Distributor;
  onCorrupt: StoreOnCorrupt;
  log: Logger;
}

/**
 * Opens the durable store and restores sessions and retained messages from it. A damaged store
 * (see store-damage.ts) stops the start with a message that says what is wrong and both ways on,
 * unless the operator chose to have it moved aside: then it is renamed, kept on disk, and the
 * broker starts with an empty store. Never a silent empty start. A data directory or store that
 * other local users can reach is reported (file-modes.ts), one line each.
 */
export async function openStore(startup: StoreStartup): Promise<{ sessions: number; retained: number }> {
  const { durable, onCorrupt, log } = startup;
  // An injected repository without a directory is never moved.
  const location = durable.onDisk?.location;
  if (location !== undefined) for (const warning of privacyWarnings(location)) log.warn(warning);
  try {
    return await openAndRestore(startup);
  } catch (error) {
    if (location === undefined || !isStoreDamage(error)) throw error;
    const problem = error instanceof BrokerError && error.code === ErrorCodes.STORE_CORRUPT ? error.message : `the store at ${location} is damaged: ${damageDetail(error)}`;
    if (onCorrupt !== 'move-aside') {
      const dataDir = dirname(location);
      throw new BrokerError(
        ErrorCodes.STORE_CORRUPT,
        `${problem}.\n` +
          `  Check it:  broker-admin verify --data ${dataDir}\n` +
          `  Or move it aside (it is kept as ${basename(location)}.corrupt-<time>) and start with an empty store: ` +
          `run the broker with --move-corrupt-store-aside (config file: store_on_corrupt: move-aside)`,
        { cause: error },
      );
    }
    const aside = moveStoreAside(location);
    log.warn(`${problem}; moved it aside to ${aside} (--move-corrupt-store-aside) and starting with an empty store`);
    return openAndRestore(startup);
  }
}

async function openAndRestore({ durable, sessions, distributor }: StoreStartup): Promise<{ sessions: number; retained: number }> {
  await durable.open();
  try {
    // Both read before either is applied: a store that turns out damaged half-way leaves nothing
    // behind, so the broker can move it aside and restore from an empty one. Retained messages
    // come without their payloads, which stay in the store.
    const stored = await durable.loadSessions();
    const retained = await durable.loadRetainedIndex();
    const { restored } = await sessions.restore(stored);
    distributor.restoreRetained(retained);
    return { sessions: restored, retained: retained.length };
  } catch (error) {
    await durable.close();
    throw error;
  }
}
