// Builds the native addon (native/*.cc) into prebuilds/<platform>-<arch>/ with prebuildify (one
// N-API binary that node-gyp-build loads, and that ships in the package for users without a
// compiler). Node's headers come from the local Node installation (never downloaded); if
// prebuildify cannot run, plain `node-gyp rebuild` builds build/Release/ instead. Skips the work
// when the binary is newer than every source. The addon never links CUDA: it dlopens it.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(pkgDir, 'package.json'));
const outDir = join(pkgDir, 'prebuilds', `${process.platform}-${process.arch}`);
const sources = [
  join(pkgDir, 'binding.gyp'),
  ...readdirSync(join(pkgDir, 'native')).map((f) => join(pkgDir, 'native', f)),
];

function newestSource() {
  return Math.max(...sources.map((f) => statSync(f).mtimeMs));
}

function builtBinary() {
  for (const dir of [outDir, join(pkgDir, 'build', 'Release')]) {
    if (!existsSync(dir)) continue;
    const file = readdirSync(dir).find((f) => f.endsWith('.node'));
    if (file) return join(dir, file);
  }
  return null;
}

/** Node's own headers: the npm config's nodedir, else the installation node runs from. */
function nodeDir() {
  const candidates = [
    process.env.npm_config_nodedir,
    process.env.NODEDIR,
    resolve(dirname(process.execPath), '..'),
    '/usr',
    '/usr/local',
  ].filter(Boolean);
  return candidates.find((dir) => existsSync(join(dir, 'include', 'node', 'node_api.h')));
}

function run(script, args, env) {
  const r = spawnSync(process.execPath, [script, ...args], {
    cwd: pkgDir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
    encoding: 'utf8',
  });
  return { ok: r.status === 0, output: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

const force = process.argv.includes('--force');
const existing = builtBinary();
if (!force && existing && statSync(existing).mtimeMs >= newestSource()) {
  console.log(`[cuda] addon up to date: ${existing}`);
  process.exit(0);
}

const dir = nodeDir();
if (!dir) {
  console.error(
    '[cuda] cannot build the addon: Node.js headers (include/node/node_api.h) not found next to ' +
      `${process.execPath}; set npm_config_nodedir to a Node installation or source tree`,
  );
  process.exit(1);
}
const env = { npm_config_nodedir: dir };
const prebuildify = join(dirname(require.resolve('prebuildify/package.json')), 'bin.js');
const first = run(prebuildify, ['--napi', '--strip', '-t', process.versions.node], env);
if (first.ok && builtBinary()) {
  console.log(`[cuda] addon built with prebuildify: ${builtBinary()}`);
  process.exit(0);
}
const nodeGyp = join(dirname(require.resolve('node-gyp/package.json')), 'bin', 'node-gyp.js');
const second = run(nodeGyp, ['rebuild', `--nodedir=${dir}`], env);
if (!second.ok) {
  console.error(first.output);
  console.error(second.output);
  console.error('[cuda] addon build failed (prebuildify and node-gyp, output above)');
  process.exit(1);
}
console.log(`[cuda] addon built with node-gyp: ${builtBinary()}`);
