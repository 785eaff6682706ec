#!/usr/bin/env node
import { fileURLToPath } from 'node:url';
import { BundleLoader } from '../dist/cli/bundle-loader.js';

const { main } = new BundleLoader(fileURLToPath(new URL('../dist/bundle/', import.meta.url))).load('admin-cli.cjs');

await main(process.argv);
