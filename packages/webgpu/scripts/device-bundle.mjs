// Bundles bench/h100.ts for the GPU machine (no Node modules there): .device-bundle/webgpu/ gets
// bench.mjs (esbuild, everything inlined but Dawn's addon), dawn.node.br (the addon, brotli) and
// run.mjs, which unpacks the addon where the inlined `webgpu` loader looks for it, then runs.
//   node packages/webgpu/scripts/device-bundle.mjs      (from the repo root)
//   on the device: source .device/preamble.sh && node .device-bundle/webgpu/run.mjs [--quick]
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, constants } from 'node:zlib';
import { build } from 'esbuild';

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const root = resolve(pkg, '../..');
const out = join(root, '.device-bundle', 'webgpu');
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

await build({
  entryPoints: [join(pkg, 'bench/h100.ts')],
  outfile: join(out, 'bench.mjs'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  conditions: ['source'],
  banner: {
    js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
  },
  logLevel: 'warning',
});

const require = createRequire(join(pkg, 'package.json'));
const webgpuDir = dirname(require.resolve('webgpu/package.json'));
const addon = readFileSync(join(webgpuDir, 'dist', 'linux-x64', 'dawn.node'));
writeFileSync(
  join(out, 'dawn.node.br'),
  brotliCompressSync(addon, { params: { [constants.BROTLI_PARAM_QUALITY]: 7 } }),
);
writeFileSync(
  join(out, 'run.mjs'),
  `// Unpacks Dawn's addon next to the bundle (where the inlined 'webgpu' loader looks), then runs the bench.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliDecompressSync } from 'node:zlib';
const here = dirname(fileURLToPath(import.meta.url));
const addon = join(here, 'dist', 'linux-x64', 'dawn.node');
if (!existsSync(addon)) {
  mkdirSync(dirname(addon), { recursive: true });
  writeFileSync(addon, brotliDecompressSync(readFileSync(join(here, 'dawn.node.br'))));
}
await import('./bench.mjs');
`,
);

// .device-bundle/ is a build output: keep it out of git without touching the shared .gitignore.
const exclude = join(root, '.git', 'info', 'exclude');
if (existsSync(dirname(exclude))) {
  const text = existsSync(exclude) ? readFileSync(exclude, 'utf8') : '';
  if (!text.split('\n').includes('/.device-bundle/'))
    appendFileSync(exclude, '\n/.device-bundle/\n');
}
console.log(`wrote ${out}`);
