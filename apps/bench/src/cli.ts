#!/usr/bin/env node
import { main } from './main.js';

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    console.error(`error: ${(e as Error).message}`);
    process.exitCode = 2;
  },
);
