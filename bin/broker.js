#!/usr/bin/env -S node --max-semi-space-size=4
import { main } from '../dist/bundle/broker-cli.js';

await main(process.argv);
