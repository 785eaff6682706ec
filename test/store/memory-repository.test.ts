import { MemoryRepository } from '../../src/store/memory-repository.js';
import { repositoryContract } from './repository.contract.js';

repositoryContract('MemoryRepository', async () => {
  const repository = new MemoryRepository();
  await repository.open();
  return { repository, cleanup: () => repository.close() };
});
