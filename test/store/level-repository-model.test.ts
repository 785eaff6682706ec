import { levelRepositoryFactory } from './level-fixture.js';
import { repositoryModelContract } from './repository.contract.js';

repositoryModelContract('LevelRepository', levelRepositoryFactory);
