import { levelRepositoryFactory } from './level-fixture.js';
import { repositoryContract } from './repository.contract.js';

// The model-based property runs in level-repository-model.test.ts, in parallel with these examples.
repositoryContract('LevelRepository', levelRepositoryFactory);
