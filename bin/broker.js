#!/usr/bin/env -S node --max-semi-space-size=4
// The code cache that `npm run build` writes is made under these V8 flags; a start under others
// compiles the bundle as usual (src/cli/bundle-loader.ts).
import { fileURLToPath } from 'node:url';
import { BundleLoader } from '../dist/cli/bundle-loader.js';

const { main } = new BundleLoader(fileURLToPath(new URL('../dist/bundle/', import.meta.url))).load('broker-cli.cjs');

await main(process.argv);
