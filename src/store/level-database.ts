import type { ClassicLevel } from 'classic-level';

/** The LevelDB database under the store: string keys (key-layout.ts), msgpack values as bytes. */
export type LevelDatabase = ClassicLevel<string, Uint8Array>;

/** One write of a batch, in the form classic-level's binding takes as it is. */
export type BatchOperation = { type: 'put'; key: string; value: Uint8Array } | { type: 'del'; key: string };
