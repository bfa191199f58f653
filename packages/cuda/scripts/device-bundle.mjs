// Bundles the H100 measurement (bench/h100/run.ts) with esbuild into .device-bundle/cuda/ at the
// repository root: run.mjs (all TypeScript, @tessera/* from source), the compiled addon
// (tessera_cuda.node, loaded through $TESSERA_CUDA_ADDON) and the PyTorch peer script. The folder
// is git-ignored through .git/info/exclude. Usage: node scripts/device-bundle.mjs [--out DIR]
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repoRoot = resolve(pkgDir, '..', '..');
const at = process.argv.indexOf('--out');
const outDir = at > 0 ? resolve(process.argv[at + 1]) : join(repoRoot, '.device-bundle', 'cuda');

function addon() {
  for (const dir of [
    join(pkgDir, 'prebuilds', `${process.platform}-${process.arch}`),
    join(pkgDir, 'build', 'Release'),
  ]) {
    if (!existsSync(dir)) continue;
    const file = readdirSync(dir).find((f) => f.endsWith('.node'));
    if (file) return join(dir, file);
  }
  console.error('[device-bundle] no compiled addon: run `node scripts/build-addon.mjs` first');
  process.exit(1);
}

rmSync(outDir, { recursive: true, force: true });
mkdirSync(join(outDir, 'peers'), { recursive: true });
await build({
  entryPoints: [join(pkgDir, 'bench', 'h100', 'run.ts')],
  outdir: outDir,
  outExtension: { '.js': '.mjs' },
  // '.generated.' keeps the bundled code out of the repository's Biome check (biome.json).
  entryNames: '[name].generated',
  chunkNames: 'chunk-[hash].generated',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  conditions: ['source'],
  // The bundle's own require() for node-gyp-build (never reached: $TESSERA_CUDA_ADDON is set).
  banner: {
    js: "import { createRequire as __tsrCreateRequire } from 'node:module'; const require = __tsrCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
writeFileSync(join(outDir, 'run.mjs'), "import './run.generated.mjs';\n");
copyFileSync(addon(), join(outDir, 'tessera_cuda.node'));
copyFileSync(join(pkgDir, 'bench', 'peers', 'peers.py'), join(outDir, 'peers', 'peers.py'));

const exclude = join(repoRoot, '.git', 'info', 'exclude');
if (
  existsSync(dirname(exclude)) &&
  !readFileSync(exclude, 'utf8').split('\n').includes('/.device-bundle/')
)
  appendFileSync(exclude, '/.device-bundle/\n');

let bytes = 0;
for (const f of readdirSync(outDir, { recursive: true })) {
  const p = join(outDir, String(f));
  if (statSync(p).isFile()) bytes += statSync(p).size;
}
console.log(`[device-bundle] ${outDir}: ${(bytes / 2 ** 20).toFixed(2)} MiB`);
