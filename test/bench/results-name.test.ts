import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { resultsBase } from '../../bench/lib/results-name.js';

const dirs: string[] = [];
function emptyDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'bench-results-'));
  dirs.push(dir);
  return dir;
}

afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('bench result file names', () => {
  it('a baseline run never overwrites committed results of the same name: it takes the next free number', () => {
    const dir = emptyDir();
    expect(resultsBase(dir, '2026-12-03', 'baseline-late')).toBe(join(dir, '2026-12-03-baseline-late'));
    writeFileSync(join(dir, '2026-12-03-baseline-late.md'), 'the afternoon run');
    expect(resultsBase(dir, '2026-12-03', 'baseline-late')).toBe(join(dir, '2026-12-03-baseline-late-2'));
    writeFileSync(join(dir, '2026-12-03-baseline-late-2.json'), '{}');
    expect(resultsBase(dir, '2026-12-03', 'baseline-late')).toBe(join(dir, '2026-12-03-baseline-late-3'));
  });

  it('other runs (quick, custom, untagged) replace the day\'s files as before', () => {
    const dir = emptyDir();
    for (const tag of ['quick', 'custom', '']) {
      const name = tag ? `2026-12-03-${tag}` : '2026-12-03';
      writeFileSync(join(dir, `${name}.md`), 'earlier');
      expect(resultsBase(dir, '2026-12-03', tag)).toBe(join(dir, name));
    }
  });
});
