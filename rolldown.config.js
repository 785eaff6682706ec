// The broker and broker-admin as two ES modules (plus shared and lazily loaded chunks), built from
// tsc's output in dist/. Node resolves, reads and compiles each module of a program on its own
// before the first line runs: importing our ~100 modules one by one took about twice as long as
// importing them as one file. Dependencies stay external and load as npm laid them out
// (classic-level finds its native binding next to itself; mqtt-packet goes through its loader).
import { defineConfig } from 'rolldown';

export default defineConfig({
  input: {
    'broker-cli': 'dist/cli/broker-cli.js',
    'admin-cli': 'dist/cli/admin-cli.js',
  },
  platform: 'node',
  // Anything not a relative or absolute path is a package or a node: builtin.
  external: /^[^./]/,
  output: {
    // Two levels under the package root, like dist/cli/: version.ts reads ../../package.json.
    dir: 'dist/bundle',
    format: 'esm',
    // Fixed names, and the directory emptied first, so a rebuild leaves no stale chunk behind.
    entryFileNames: '[name].js',
    chunkFileNames: '[name].js',
    cleanDir: true,
    sourcemap: true,
  },
});
