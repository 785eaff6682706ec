/**
 * The loader bin/ runs the bundle through: chunks and their requires, V8's code cache used only
 * when made for the same source, whole, and (V8's own check) under the same flags; and the cache
 * `npm run build` wrote is the one a start with bin/broker.js's flags accepts.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { BundleLoader } from '../../src/cli/bundle-loader.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const directories: string[] = [];

afterEach(() => {
  for (const directory of directories.splice(0)) rmSync(directory, { recursive: true, force: true });
});

/** Two chunks as rolldown writes them: the entry requires its sibling and a builtin. */
function chunks(answer: string): string {
  const directory = mkdtempSync(join(tmpdir(), 'bundle-loader-'));
  directories.push(directory);
  writeFileSync(join(directory, 'entry.cjs'), `"use strict";\nconst part = require("./part.cjs");\nconst { sep } = require("node:path");\nexports.main = () => part.answer() + sep.length;\nexports.file = __filename;\n`);
  writeFileSync(join(directory, 'part.cjs'), `"use strict";\nexports.answer = () => ${answer};\n`);
  return directory;
}

function loadEntry(directory: string): { loader: BundleLoader; entry: { main(): number; file: string } } {
  const loader = new BundleLoader(directory);
  return { loader, entry: loader.load('entry.cjs') as { main(): number; file: string } };
}

describe('BundleLoader', () => {
  it('runs a chunk with its sibling chunks and packages required, each loaded once', () => {
    const directory = chunks('41');
    const { loader, entry } = loadEntry(directory);
    expect(entry.main()).toBe(42);
    expect(entry.file).toBe(join(directory, 'entry.cjs'));
    expect(loader.load('part.cjs')).toBe(loader.load('part.cjs'));
    expect([...loader.cacheOutcomes()]).toEqual([
      ['entry.cjs', 'missing'],
      ['part.cjs', 'missing'],
    ]);
  });

  it('uses the code cache it wrote for the same chunks', () => {
    const directory = chunks('41');
    const first = loadEntry(directory);
    first.entry.main();
    first.loader.writeCodeCache();
    expect(readdirSync(directory).sort()).toEqual(['entry.cjs', 'entry.cjs.cache', 'part.cjs', 'part.cjs.cache']);

    const again = loadEntry(directory);
    expect(again.entry.main()).toBe(42);
    expect([...again.loader.cacheOutcomes().values()]).toEqual(['accepted', 'accepted']);
  });

  it('ignores a cache made for another source, even of the same length, and runs the new source', () => {
    // V8's own check compares the source's length only: this cache, which holds `answer` compiled
    // (it ran), would pass it and return 41.
    const directory = chunks('41');
    const first = loadEntry(directory);
    first.entry.main();
    first.loader.writeCodeCache();
    writeFileSync(join(directory, 'part.cjs'), readFileSync(join(directory, 'part.cjs'), 'utf8').replace('41', '99'));

    const { loader, entry } = loadEntry(directory);
    expect(entry.main()).toBe(100);
    expect(loader.cacheOutcomes().get('part.cjs')).toBe('stale');
    expect(loader.cacheOutcomes().get('entry.cjs')).toBe('accepted');
  });

  it('ignores a damaged cache file and compiles the chunk as usual', () => {
    const directory = chunks('41');
    loadEntry(directory).loader.writeCodeCache();
    const damaged = join(directory, 'entry.cjs.cache');
    const bytes = readFileSync(damaged);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0xff, bytes.length - 1);
    writeFileSync(damaged, bytes);
    truncateSync(join(directory, 'part.cjs.cache'), 10);

    const { loader, entry } = loadEntry(directory);
    expect(entry.main()).toBe(42);
    expect([...loader.cacheOutcomes().values()]).toEqual(['stale', 'stale']);
  });

  it('leaves it to V8 to refuse a cache made under other V8 flags, and still runs', () => {
    const directory = chunks('41');
    loadEntry(directory).loader.writeCodeCache();
    const script = `import { BundleLoader } from ${JSON.stringify(join(root, 'dist/cli/bundle-loader.js'))};
      const loader = new BundleLoader(${JSON.stringify(directory)});
      const answer = loader.load('entry.cjs').main();
      console.log(JSON.stringify({ answer, outcomes: [...loader.cacheOutcomes().values()] }));`;
    const output = execFileSync(process.execPath, ['--max-semi-space-size=2', '--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(JSON.parse(output)).toEqual({ answer: 42, outcomes: ['rejected', 'rejected'] });
  });
});

describe('the code cache npm run build writes', () => {
  it('is accepted, for every chunk a start loads, under the V8 flags bin/broker.js runs with', () => {
    const shebang = readFileSync(join(root, 'bin/broker.js'), 'utf8').split('\n')[0]!;
    const flags = shebang.replace('#!/usr/bin/env -S node', '').trim().split(/\s+/).filter(Boolean);
    expect(flags).toEqual(['--max-semi-space-size=4']); // what package.json's build script passes
    const script = `import { BundleLoader } from ${JSON.stringify(join(root, 'dist/cli/bundle-loader.js'))};
      const loader = new BundleLoader(${JSON.stringify(join(root, 'dist/bundle'))});
      loader.load('broker-cli.cjs');
      console.log(JSON.stringify([...loader.cacheOutcomes()]));`;
    const outcomes = new Map(JSON.parse(execFileSync(process.execPath, [...flags, '--input-type=module', '-e', script], { encoding: 'utf8' })) as Array<[string, string]>);
    expect(outcomes.size).toBeGreaterThanOrEqual(2);
    for (const [chunk, outcome] of outcomes) expect(`${chunk}: ${outcome}`).toBe(`${chunk}: accepted`);
  });
});

describe('the chunks npm run build writes', () => {
  it('are ASCII only, so V8 holds the source of each (for as long as the broker runs) as one byte a character', () => {
    const directory = join(root, 'dist/bundle');
    const files = readdirSync(directory).filter((file) => file.endsWith('.cjs'));
    expect(files).toContain('broker.cjs');
    for (const file of files) {
      const text = readFileSync(join(directory, file), 'latin1');
      const at = text.search(/[^\x00-\x7f]/);
      expect(at, `${file}: a byte above 0x7F at ${at}: ${JSON.stringify(text.slice(Math.max(0, at - 40), at + 10))}`).toBe(-1);
    }
  });
});
