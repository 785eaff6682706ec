// The broker and broker-admin as CommonJS chunks (one per CLI, plus shared and lazily loaded ones),
// built from tsc's output in dist/, with their dependencies inside. Node resolves, reads and
// compiles each module of a program on its own before the first line runs: importing our ~100
// modules one by one took about twice as long as importing them as one file. CommonJS, because
// bin/ loads the chunks through V8's code cache (src/cli/bundle-loader.ts), which Node 20 offers
// for scripts (vm.Script) and not for ES modules; and bin/ is CommonJS itself (bin/package.json):
// an ES module entry makes Node start its ES module loader first.
//
// Left outside: node's builtins; classic-level's binding.js, which finds the native LevelDB
// binding next to itself (the rest of classic-level and abstract-level, about 40 small modules,
// took 15–25 ms of a start to compile); mqtt-packet, which mqtt-packet-loader.ts requires at run
// time with two of its dependencies replaced.
import { defineConfig } from 'rolldown';

/**
 * classic-level's `require('./binding')` (in index.js, chained-batch.js and iterator.js), kept as
 * a require of that file where npm put it.
 */
const classicLevelBinding = {
  name: 'classic-level-binding',
  resolveId(id, importer) {
    if (id === './binding' && importer !== undefined && /[\\/]node_modules[\\/]classic-level[\\/][^\\/]+\.js$/.test(importer)) {
      return { id: 'classic-level/binding.js', external: true };
    }
    return null;
  },
};

export default defineConfig({
  input: {
    'broker-cli': 'dist/cli/broker-cli.js',
    'admin-cli': 'dist/cli/admin-cli.js',
    // What bin/ requires to load the two above; it imports node's builtins only, so it shares no
    // chunk with them.
    'bundle-loader': 'dist/cli/bundle-loader.js',
  },
  platform: 'node',
  plugins: [classicLevelBinding],
  external: /^(node:|mqtt-packet$)/,
  output: {
    // Two levels under the package root, like dist/cli/: version.ts reads ../../package.json.
    dir: 'dist/bundle',
    format: 'cjs',
    // Our code was written as ES modules, which are always strict; as CommonJS it must say so.
    strict: true,
    // Fixed names, and the directory emptied first, so a rebuild leaves no stale chunk (or code
    // cache) behind.
    entryFileNames: '[name].cjs',
    chunkFileNames: '[name].cjs',
    // The YAML parser, loaded only for a .yaml config file, would otherwise be named after its
    // package's folder (dist.cjs).
    codeSplitting: { groups: [{ name: 'yaml', test: /node_modules[\\/]yaml[\\/]/ }] },
    cleanDir: true,
    sourcemap: true,
    // V8 keeps a chunk's source as a string while the broker runs (functions compile lazily from
    // it, so it cannot go), and at start holds a second copy until a full collection. A single
    // non-ASCII character makes such a string take two bytes a character; the doc comments are a
    // fifth of the text and had most of those characters. Without them and with the remaining
    // characters escaped, broker.cjs is 606 KB of one-byte text instead of 774 KB of two-byte
    // text: idle RSS 59.9 -> 57.7 MiB; start unchanged. The source maps still point into src/.
    charset: 'ascii',
    comments: { jsdoc: false, legal: true, annotation: true },
  },
});
