import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LevelRepository } from '../../src/store/level-repository.js';
import { repositoryContract } from './repository.contract.js';

repositoryContract('LevelRepository', async () => {
  const location = fs.mkdtempSync(path.join(os.tmpdir(), 'broker-level-contract-'));
  let current = new LevelRepository({ location });
  await current.open();
  return {
    repository: current,
    reopen: async () => {
      await current.close();
      current = new LevelRepository({ location });
      await current.open();
      return current;
    },
    cleanup: async () => {
      await current.close();
      fs.rmSync(location, { recursive: true, force: true });
    },
  };
});
