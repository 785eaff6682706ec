#!/usr/bin/env node
import { main } from '../dist/cli/broker-cli.js';

await main(process.argv);
