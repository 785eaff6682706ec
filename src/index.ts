export { createBroker, DEFAULTS, type Broker, type BrokerOptions } from './server/broker.js';
export { BrokerError, ErrorCodes, type ErrorCode } from './errors.js';
export { consoleLogger, silentLogger, type Logger } from './logger.js';
export { LevelRepository, type LevelRepositoryOptions } from './store/level-repository.js';
export { MemoryRepository } from './store/memory-repository.js';
export type * from './store/repository.js';
