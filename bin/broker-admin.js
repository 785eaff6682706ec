#!/usr/bin/env node
import { main } from '../dist/bundle/admin-cli.js';

await main(process.argv);
