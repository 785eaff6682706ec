import { existsSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Where a run's results go: `<dir>/<date>[-<tag>]`, to which `.json` and `.md` are added. A
 * `baseline*` tag names results that are committed (README's figures cite them), so an existing
 * pair is never overwritten: the run gets `-2`, `-3`, … instead. Other runs (quick, custom,
 * git-ignored) replace the day's files as before.
 */
export function resultsBase(dir: string, date: string, tag: string): string {
  const base = join(dir, `${date}${tag ? `-${tag}` : ''}`);
  if (!tag.startsWith('baseline')) return base;
  const taken = (candidate: string) => existsSync(`${candidate}.json`) || existsSync(`${candidate}.md`);
  if (!taken(base)) return base;
  for (let suffix = 2; ; suffix++) {
    if (!taken(`${base}-${suffix}`)) return `${base}-${suffix}`;
  }
}
