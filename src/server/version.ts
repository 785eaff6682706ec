import { readFileSync } from 'node:fs';

/** This package's version, from its package.json (dist/server/ and src/server/ are both two levels down). */
export function packageVersion(): string {
  const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return version;
}
