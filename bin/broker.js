#!/usr/bin/env -S node --max-semi-space-size=4
// CommonJS (bin/package.json), like the chunks it loads: an ES module here would start Node's ES
// module loader, about 20 ms of a start. The code cache `npm run build` writes is made under the
// V8 flags above; a start under others compiles the bundle as usual (src/cli/bundle-loader.ts).
const { join } = require('node:path');
const { BundleLoader } = require('../dist/bundle/bundle-loader.cjs');

const { main } = new BundleLoader(join(__dirname, '../dist/bundle')).load('broker-cli.cjs');

// A rejection is left unhandled: Node prints it and exits 1.
main(process.argv);
