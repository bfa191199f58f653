// Entry point of the root `test` and `bench` scripts: `node tooling/scripts/run.mjs <task> [args]`.
// Extra arguments go to vitest (test) or to the bench program (bench).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bootstrap } from './bootstrap.mjs';
import { exec, pnpm, repoRoot } from './exec.mjs';

// What `npm run bench` runs: the first of these that exists. When examples/cpu-attention.mjs
// lands, it replaces examples/quickstart.mjs here.
const benchCandidates = ['apps/bench/dist/cli.js', 'examples/quickstart.mjs'];

const tasks = {
  test(args) {
    bootstrap();
    pnpm(['exec', 'vitest', 'run', ...args]);
    pnpm(['exec', 'biome', 'check', '.']);
  },
  bench(args) {
    bootstrap();
    const program = benchCandidates.find((file) => existsSync(join(repoRoot, file)));
    if (!program) {
      console.error('apps/bench not built yet');
      process.exit(1);
    }
    exec(process.execPath, [program, ...args]);
  },
};

const [name, ...args] = process.argv.slice(2);
const task = tasks[name];
if (!task) {
  console.error(`usage: node tooling/scripts/run.mjs <${Object.keys(tasks).join('|')}> [args...]`);
  process.exit(2);
}
task(args);
