// The package's install step (replaces npm's implicit `node-gyp rebuild` for packages with a
// binding.gyp): keeps a shipped or already-built binary, else tries to build one, and never fails
// the install: without a binary, createCudaBackend() rejects with CudaUnavailableError instead.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dirs = [
  join(pkgDir, 'prebuilds', `${process.platform}-${process.arch}`),
  join(pkgDir, 'build', 'Release'),
];
const built = dirs.some((d) => existsSync(d) && readdirSync(d).some((f) => f.endsWith('.node')));
if (!built) {
  const r = spawnSync(process.execPath, [join(pkgDir, 'scripts', 'build-addon.mjs')], {
    stdio: 'inherit',
  });
  if (r.status !== 0)
    console.warn(
      '[@tessera/cuda] no native addon for this platform: the CUDA backend will be unavailable',
    );
}
