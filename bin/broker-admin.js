#!/usr/bin/env node
import { main } from '../dist/cli/admin-cli.js';

await main(process.argv);
