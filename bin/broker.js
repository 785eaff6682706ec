#!/usr/bin/env node
import { main } from '../dist/bundle/broker-cli.js';

await main(process.argv);
