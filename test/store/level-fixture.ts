import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LevelRepository } from '../../src/store/level-repository.js';
import type { RepositoryFactory } from './repository.contract.js';

/** The contract's factory for LevelRepository: a fresh directory per fixture, reopened with the same options. */
export const levelRepositoryFactory: RepositoryFactory = async (options = {}) => {
  const location = fs.mkdtempSync(path.join(os.tmpdir(), 'broker-level-contract-'));
  const open = async (): Promise<LevelRepository> => {
    const repository = new LevelRepository({ location, ...options });
    await repository.open();
    return repository;
  };
  let current = await open();
  return {
    repository: current,
    reopen: async () => {
      await current.close();
      current = await open();
      return current;
    },
    cleanup: async () => {
      await current.close();
      fs.rmSync(location, { recursive: true, force: true });
    },
  };
};
