// Builds the workspace package in the current directory (run as its `build` script):
// esbuild bundles the entry points to dist/*.js (ESM + source maps), then tsc emits dist/*.d.ts
// from the package's tsconfig.build.json.
//
// package.json may say, under "tessera":
//   "entries": ["src/worker.ts", ...]   extra entry points besides src/index.ts
//   "platform": "node"                   bundle for Node instead of the default "neutral"
//   "splitting": true                    share the modules several entries import (dist/chunk-*.js),
//                                        so every entry sees one copy of each class and registry
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { build } from 'esbuild';

const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
const options = pkg.tessera ?? {};
const entryPoints = ['src/index.ts', ...(options.entries ?? [])];

// Dependencies stay imports; only the package's own code goes into dist.
const dependencies = Object.keys({
  ...pkg.dependencies,
  ...pkg.peerDependencies,
  ...pkg.optionalDependencies,
});
const external = ['node:*', ...dependencies.flatMap((name) => [name, `${name}/*`])];

rmSync('dist', { recursive: true, force: true });

try {
  await build({
    entryPoints,
    outbase: 'src',
    outdir: 'dist',
    bundle: true,
    format: 'esm',
    platform: options.platform ?? 'neutral',
    target: 'es2022',
    sourcemap: true,
    splitting: options.splitting === true,
    external,
    logLevel: 'warning',
  });
} catch {
  process.exit(1); // esbuild has already printed what went wrong
}

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const result = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], {
  stdio: 'inherit',
});
if (result.status !== 0) {
  console.error(`${pkg.name}: declaration emit failed`);
  process.exit(result.status ?? 1);
}
