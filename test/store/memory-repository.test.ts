import { MemoryRepository } from '../../src/store/memory-repository.js';
import type { RepositoryFactory } from './repository.contract.js';
import { repositoryContract, repositoryModelContract } from './repository.contract.js';

const factory: RepositoryFactory = async (options = {}) => {
  const repository = new MemoryRepository(options);
  await repository.open();
  return { repository, cleanup: () => repository.close() };
};

repositoryContract('MemoryRepository', factory);
repositoryModelContract('MemoryRepository', factory);
