import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { openStoreForInspection, type LevelInspector } from '../store/level-inspector.js';
import { LevelRepository } from '../store/level-repository.js';
import { AdminError, AdminErrorCodes } from '../errors.js';
import type { AdminTarget } from './operations.js';

/**
 * The store of a stopped broker, opened by broker-admin itself. Reads never write a key (the
 * store is opened with createIfMissing: false and without LevelRepository, which would write the
 * format marker into an empty store); the two mutations go through LevelRepository transitions,
 * so they keep the store's invariants exactly as the broker would.
 */
export class StoppedTarget implements AdminTarget {
  readonly mode = 'stopped' as const;
  readonly store: string;
  readonly #requireFormat: boolean;
  #inspector: LevelInspector | undefined;

  constructor(dataDir: string, options: { requireFormat?: boolean } = {}) {
    this.store = join(resolve(dataDir), 'store');
    this.#requireFormat = options.requireFormat ?? true;
  }

  /** The data directory must exist: checked before anything else, so nothing is ever created. */
  static checkDataDir(dataDir: string): void {
    const path = resolve(dataDir);
    if (!existsSync(path)) throw new AdminError(AdminErrorCodes.NO_DATA_DIR, `the data directory ${path} does not exist`);
    if (!statSync(path).isDirectory()) throw new AdminError(AdminErrorCodes.NO_DATA_DIR, `${path} is not a directory`);
  }

  async inspector(): Promise<LevelInspector> {
    this.#inspector ??= await openStoreForInspection(this.store, { requireFormat: this.#requireFormat });
    return this.#inspector;
  }

  async dropSession(clientId: string): Promise<void> {
    await this.#withRepository((repository) => repository.destroySession(clientId));
  }

  async clearRetained(topic: string): Promise<void> {
    await this.#withRepository((repository) => repository.clearRetained(topic));
  }

  async close(): Promise<void> {
    const inspector = this.#inspector;
    this.#inspector = undefined;
    await inspector?.close();
  }

  /** LevelDB admits one handle: the inspector's is closed before the repository opens its own. */
  async #withRepository(change: (repository: LevelRepository) => Promise<void>): Promise<void> {
    await this.close();
    const repository = new LevelRepository({ location: this.store });
    await repository.open();
    try {
      await change(repository);
    } finally {
      await repository.close();
    }
  }
}
