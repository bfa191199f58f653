// Bundles tessera-bench for a GPU machine that has no npm: .device-bundle/bench/ at the repository
// root holds dist/cli.mjs (the CLI and every @tessera package from source, with vega and commander),
// peers/torch_peers.py and the CUDA addon (loaded through $TESSERA_CUDA_ADDON). The webgpu package
// stays out (it carries Dawn; its own bundle measures it): `--backend webgpu` then reports it
// unavailable. Usage: node apps/bench/scripts/device-bundle.mjs
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const appDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repoRoot = resolve(appDir, '..', '..');
const outDir = join(repoRoot, '.device-bundle', 'bench');
const cudaDir = join(repoRoot, 'packages', 'cuda');

function cudaAddon() {
  for (const dir of [
    join(cudaDir, 'prebuilds', `${process.platform}-${process.arch}`),
    join(cudaDir, 'build', 'Release'),
  ]) {
    if (!existsSync(dir)) continue;
    const file = readdirSync(dir).find((f) => f.endsWith('.node'));
    if (file) return join(dir, file);
  }
  throw new Error('no compiled CUDA addon: run `node packages/cuda/scripts/build-addon.mjs` first');
}

rmSync(outDir, { recursive: true, force: true });
mkdirSync(join(outDir, 'peers'), { recursive: true });
await build({
  entryPoints: [join(appDir, 'src', 'cli.ts')],
  outfile: join(outDir, 'dist', 'cli.mjs'),
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  conditions: ['source'],
  external: ['webgpu', 'node-gyp-build'],
  banner: {
    js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
  },
  logLevel: 'warning',
});
// The system conformance runner (every @tessera/variants system vs the CPU) rides along.
await build({
  entryPoints: [join(appDir, 'scripts', 'systems-device.ts')],
  outfile: join(outDir, 'dist', 'systems.mjs'),
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  conditions: ['source'],
  external: ['webgpu', 'node-gyp-build'],
  banner: {
    js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
  },
  logLevel: 'warning',
});
copyFileSync(join(appDir, 'peers', 'torch_peers.py'), join(outDir, 'peers', 'torch_peers.py'));
copyFileSync(cudaAddon(), join(outDir, 'tessera_cuda.node'));
console.log(`[device-bundle] ${outDir}`);
