#!/usr/bin/env node
// CommonJS (bin/package.json), like bin/broker.js.
const { join } = require('node:path');
const { BundleLoader } = require('../dist/bundle/bundle-loader.cjs');

const { main } = new BundleLoader(join(__dirname, '../dist/bundle')).load('admin-cli.cjs');

// A rejection is left unhandled: Node prints it and exits 1.
main(process.argv);
