// Entry point of the root package.json scripts: `node tooling/scripts/run.mjs <task> [args]`.
//   test   install + build, then vitest (extra args go to vitest), then biome
//   bench  install + build, then the bench program (extra args go to it)
//   turbo  install if needed, then turbo with the given args (root `build` and `typecheck`)
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bootstrap, install, turbo } from './bootstrap.mjs';
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
  turbo(args) {
    install();
    turbo(args);
  },
};

const [name, ...args] = process.argv.slice(2);
const task = Object.hasOwn(tasks, name ?? '') ? tasks[name] : undefined;
if (!task) {
  console.error(`usage: node tooling/scripts/run.mjs <${Object.keys(tasks).join('|')}> [args...]`);
  process.exit(2);
}
task(args);
