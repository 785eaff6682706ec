import { createHash } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, join } from 'node:path';
import { Script } from 'node:vm';

/** How each chunk's code cache fared when the chunk was loaded. */
export type CodeCacheOutcome = 'accepted' | 'rejected' | 'missing' | 'stale';

interface LoadedChunk {
  readonly path: string;
  /** SHA-256 of the chunk's source as loaded: its cache is written for that source only. */
  readonly sourceDigest: Buffer;
  readonly script: Script;
  readonly module: { exports: unknown };
  readonly cache: CodeCacheOutcome;
}

/** The node CommonJS wrapper: what a chunk's free `exports`, `require`, … names refer to. */
type ChunkFunction = (exports: unknown, require: NodeJS.Require, module: { exports: unknown }, filename: string, dirname: string) => void;

const CHECK_BYTES = 32;

/**
 * Loads the CommonJS chunks of dist/bundle (rolldown.config.js) with V8's code cache.
 *
 * At start Node spends more time compiling our bundle and its dependencies than running them.
 * `npm run build` runs the broker once (write-code-cache.ts) and keeps the code V8 compiled by
 * then next to each chunk, as `<chunk>.cache`; a later start deserialises that instead of parsing
 * and compiling again. Node 22 does this itself (module.enableCompileCache); on Node 20 a chunk has
 * to be compiled through vm.Script to hand V8 the cache, hence this loader.
 *
 * A cache is only an accelerator: V8 refuses one made by another Node version or with other V8
 * flags (`rejected`, then the chunk is compiled as usual), and each cache file starts with a
 * SHA-256 over its chunk's source digest and its own bytes, so a cache left over from another
 * build or a damaged file (`stale`) is not even offered to V8, whose own check compares only the
 * source's length and takes damaged bytes as they are.
 */
export class BundleLoader {
  readonly #directory: string;
  readonly #chunks = new Map<string, LoadedChunk>();

  constructor(directory: string) {
    this.#directory = directory;
  }

  /** The exports of `file` (a chunk's file name, e.g. `broker-cli.cjs`), loaded once. */
  load(file: string): unknown {
    const path = join(this.#directory, file);
    const loaded = this.#chunks.get(path);
    if (loaded !== undefined) return loaded.module.exports;

    const source = readFileSync(path);
    const sourceDigest = createHash('sha256').update(source).digest();
    const stored = readCache(path, sourceDigest);
    const cachedData = typeof stored === 'string' ? undefined : stored;
    const script = new Script(wrap(source.toString('utf8')), { filename: path, cachedData });
    const cache: CodeCacheOutcome = typeof stored === 'string' ? stored : script.cachedDataRejected === true ? 'rejected' : 'accepted';
    const module = { exports: {} as unknown };
    this.#chunks.set(path, { path, sourceDigest, script, module, cache });

    const packageRequire = createRequire(path);
    // Chunks import each other as `./name.cjs`; everything else is a package or a builtin.
    const chunkRequire = Object.assign((id: string): unknown => (id.startsWith('./') ? this.load(id.slice(2)) : packageRequire(id)), packageRequire);
    const run = script.runInThisContext() as ChunkFunction;
    run(module.exports, chunkRequire as NodeJS.Require, module, path, this.#directory);
    return module.exports;
  }

  /** Each chunk loaded so far, by file name, with what became of its cache. */
  cacheOutcomes(): Map<string, CodeCacheOutcome> {
    return new Map([...this.#chunks.values()].map((chunk) => [basename(chunk.path), chunk.cache]));
  }

  /**
   * Writes each loaded chunk's cache: the code V8 has compiled for it until now, including the
   * functions that have run, so call it after the work the cache should speed up. Each file is
   * written aside and renamed over the old one: a reader sees the old cache or the new, whole.
   */
  writeCodeCache(): void {
    for (const chunk of this.#chunks.values()) {
      const data = chunk.script.createCachedData();
      const file = `${chunk.path}.cache`;
      writeFileSync(`${file}.tmp`, Buffer.concat([checkOf(chunk.sourceDigest, data), data]));
      renameSync(`${file}.tmp`, file);
    }
  }
}

function wrap(source: string): string {
  // Node's own CommonJS wrapper (Module.wrap), so the chunk sees the names it expects.
  return `(function (exports, require, module, __filename, __dirname) { ${source}\n});`;
}

function checkOf(sourceDigest: Buffer, data: Buffer): Buffer {
  return createHash('sha256').update(sourceDigest).update(data).digest();
}

/** The cache stored for the chunk at `path` if it was made for exactly this source and is whole. */
function readCache(path: string, sourceDigest: Buffer): Buffer | 'missing' | 'stale' {
  let file: Buffer;
  try {
    file = readFileSync(`${path}.cache`);
  } catch {
    return 'missing'; // not built (or unreadable): the chunk compiles as it would without
  }
  const data = file.subarray(CHECK_BYTES);
  return file.length > CHECK_BYTES && checkOf(sourceDigest, data).equals(file.subarray(0, CHECK_BYTES)) ? data : 'stale';
}
