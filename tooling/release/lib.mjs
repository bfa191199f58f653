// What a release is checked with, shared by tooling/scripts/release-check.mjs and the packed-tarball
// test: the manifest rules every publishable package follows, `pnpm pack` (which rewrites
// `workspace:` ranges and applies publishConfig), publint and attw on each tarball, and scratch
// apps that install the tarballs from disk (third-party dependencies from the npm registry).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const repoRoot = resolve(import.meta.dirname, '../..');
export const metadata = JSON.parse(
  readFileSync(join(import.meta.dirname, 'metadata.json'), 'utf8'),
);

/** Runs a command; throws with its output when it fails. Returns stdout + stderr. */
export function run(command, args, options = {}) {
  const result = spawnSync(command, args, {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    ...options,
    env: { ...process.env, ...options.env },
  });
  const output = `${result.stdout ?? ''}${result.stderr ?? ''}`;
  if (result.error) throw result.error;
  if (result.status !== 0) {
    const where = options.cwd ? ` (in ${options.cwd})` : '';
    throw new Error(`${command} ${args.join(' ')}${where} exited ${result.status}\n${output}`);
  }
  return output;
}

const pnpm = (args, options) => run('corepack', ['pnpm', ...args], options);

/** A devDependency's command-line entry, run with this Node. */
function binOf(pkgName, binName) {
  const manifestPath = join(repoRoot, 'node_modules', pkgName, 'package.json');
  const { bin } = JSON.parse(readFileSync(manifestPath, 'utf8'));
  const rel = typeof bin === 'string' ? bin : bin[binName];
  return join(manifestPath, '..', rel);
}

/** The publishable packages, in dependency order, with their manifests. */
export function releasePackages() {
  return metadata.packages.map((dir) => {
    const manifest = JSON.parse(readFileSync(join(repoRoot, dir, 'package.json'), 'utf8'));
    return { dir, name: manifest.name, manifest };
  });
}

const isInternal = (name) => name.startsWith('@tessera/');

function withoutSource(exportsMap) {
  return Object.fromEntries(
    Object.entries(exportsMap).map(([path, conditions]) => [
      path,
      Object.fromEntries(Object.entries(conditions).filter(([c]) => c !== 'source')),
    ]),
  );
}

/** What is wrong with a publishable package's manifest in the repo (empty when nothing). */
export function checkManifest({ dir, manifest: m }) {
  const problems = [];
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  if (m.private) problems.push('is private');
  if (m.license !== metadata.license) problems.push(`license is not ${metadata.license}`);
  if (!same(m.repository, { ...metadata.repository, directory: dir }))
    problems.push('repository is not the shared one with this directory');
  if (!same(m.bugs, metadata.bugs)) problems.push('bugs is not the shared one');
  if (typeof m.homepage !== 'string' || !m.homepage.startsWith(metadata.homepage.split('#')[0]))
    problems.push('homepage is not under the shared one');
  if (!same(m.engines, metadata.engines)) problems.push('engines differ from the shared ones');
  if (!m.description) problems.push('no description');
  if (!Array.isArray(m.keywords) || m.keywords.length === 0) problems.push('no keywords');
  if (typeof m.sideEffects !== 'boolean' && !Array.isArray(m.sideEffects))
    problems.push('no sideEffects');
  if (!Array.isArray(m.files) || m.files.length === 0) problems.push('no files');
  if (m.type !== 'module') problems.push('type is not module');
  for (const field of ['dependencies', 'devDependencies', 'peerDependencies'])
    for (const [name, range] of Object.entries(m[field] ?? {}))
      if (isInternal(name) && range !== 'workspace:^')
        problems.push(`${field}.${name} is ${range}, not workspace:^`);
  for (const [path, conditions] of Object.entries(m.exports ?? {})) {
    const names = Object.keys(conditions).filter((c) => c !== 'source');
    if (names[0] !== 'types') problems.push(`exports["${path}"]: types is not the first condition`);
    if (!names.includes('import')) problems.push(`exports["${path}"]: no import condition`);
    if (names.includes('require')) problems.push(`exports["${path}"]: require (we are ESM-only)`);
  }
  if (m.publishConfig?.access !== 'public') problems.push('publishConfig.access is not public');
  if (!same(m.publishConfig?.exports, withoutSource(m.exports ?? {})))
    problems.push('publishConfig.exports is not exports without the repo-only source condition');
  return problems;
}

/**
 * `/// <reference types=...>` directives in the publishable packages' sources that lack
 * preserve="true": TypeScript >= 5.5 drops those from emitted declarations, and a consumer's tsc
 * then no longer knows the referenced globals (GPUBuffer, ...). As "file:line".
 */
export function unpreservedReferences() {
  const found = [];
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (/\.(ts|mts|cts)$/.test(entry.name) && !entry.name.endsWith('.d.ts'))
        readFileSync(path, 'utf8')
          .split('\n')
          .forEach((line, i) => {
            if (/^\/\/\/\s*<reference\s+types=/.test(line) && !/preserve="true"/.test(line))
              found.push(`${path.slice(repoRoot.length + 1)}:${i + 1}`);
          });
    }
  };
  for (const dir of metadata.packages)
    if (existsSync(join(repoRoot, dir, 'src'))) walk(join(repoRoot, dir, 'src'));
  return found;
}

/** Packs every publishable package into dest with pnpm; returns them with their tarball path. */
export function packAll(dest) {
  rmSync(dest, { recursive: true, force: true });
  mkdirSync(dest, { recursive: true });
  const packages = releasePackages();
  for (const pkg of packages)
    if (!existsSync(join(repoRoot, pkg.dir, 'dist', 'index.js')))
      throw new Error(`${pkg.name} is not built (no dist/index.js): run the build first`);
  const filters = packages.flatMap((pkg) => ['--filter', pkg.name]);
  pnpm(['--recursive', ...filters, 'pack', '--pack-destination', dest], { cwd: repoRoot });
  return packages.map((pkg) => {
    const base = pkg.name.replace('@', '').replace('/', '-');
    const tarball = join(dest, `${base}-${pkg.manifest.version}.tgz`);
    if (!existsSync(tarball)) throw new Error(`pnpm pack left no ${tarball}`);
    return { ...pkg, tarball };
  });
}

function readTarball(tarball) {
  const files = run('tar', ['-tzf', tarball]).split('\n').filter(Boolean);
  const manifest = JSON.parse(run('tar', ['-xOzf', tarball, 'package/package.json']));
  return { files: new Set(files.map((f) => f.replace(/^package\//, ''))), manifest };
}

/** What is wrong with a packed tarball that publint and attw do not look at. */
export function inspectTarball({ tarball, manifest: repoManifest }) {
  const { files, manifest } = readTarball(tarball);
  const problems = [];
  for (const file of ['LICENSE', 'README.md', 'package.json'])
    if (!files.has(file)) problems.push(`${file} is not in the tarball`);
  for (const field of ['dependencies', 'peerDependencies', 'optionalDependencies'])
    for (const [name, range] of Object.entries(manifest[field] ?? {})) {
      if (range.startsWith('workspace:')) problems.push(`${field}.${name} is still ${range}`);
      if (isInternal(name) && range !== `^${repoManifest.version}`)
        problems.push(`${field}.${name} is ${range}, not ^${repoManifest.version}`);
    }
  for (const [path, conditions] of Object.entries(manifest.exports ?? {}))
    for (const [condition, target] of Object.entries(conditions)) {
      if (condition === 'source') problems.push(`exports["${path}"] still has source`);
      if (!files.has(target.replace(/^\.\//, '')))
        problems.push(`exports["${path}"].${condition} points at unshipped ${target}`);
    }
  return problems;
}

/**
 * publint (strict: warnings fail too) and attw (ESM-only profile) on every tarball, in one plain
 * Node process (tooling/release/lint.mjs): TypeScript loads once, and the caller's resolution
 * conditions (vitest's "development" sends attw's core to its sources) stay out. Returns one
 * report per tarball: { name, ok, output }.
 */
export function lintAll(packed) {
  const script = join(import.meta.dirname, 'lint.mjs');
  const reports = JSON.parse(run(process.execPath, [script, ...packed.map((p) => p.tarball)]));
  return reports.map((r, i) => ({ ...r, name: packed[i].name }));
}

/** Runs a command without blocking; resolves to { ok, output }. */
function runAsync(command, args, options = {}) {
  return new Promise((resolvePromise) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const collect = (chunk) => {
      output += chunk;
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', (error) =>
      resolvePromise({ ok: false, output: `${output}${error.message}` }),
    );
    child.on('close', (code) => resolvePromise({ ok: code === 0, output }));
  });
}

/**
 * `npm publish --dry-run` of every tarball, side by side (mostly waiting on the registry, which
 * it asks but needs no login for). Resolves to one report per tarball: { name, ok, output }.
 */
export function publishDryRun(packed) {
  return Promise.all(
    packed.map(async ({ name, tarball }) => {
      const args = ['publish', '--dry-run', '--tag', 'next', tarball];
      return { name, ...(await runAsync('npm', args, { cwd: repoRoot })) };
    }),
  );
}

// The scratch app: a consumer's own code, as a user would write it from the READMEs.
const typedSample = `import { type AttentionBackend, defineAttention } from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { causal, slidingWindow, union } from '@tessera/patterns';
import { standardSystems } from '@tessera/variants';
import type { Fixture } from '@tessera/variants/fixtures';

const spec = defineAttention({
  batch: 1, headsQ: 4, headsKV: 2, seqQ: 64, seqKV: 64, headDim: 16, dtype: 'f32',
  mask: union(slidingWindow(8, { causal: true }), causal()),
});
const backend: AttentionBackend = await createCpuBackend();
const n = 64 * 16;
const { out, lse } = await backend.run(spec, {
  q: new Float32Array(4 * n), k: new Float32Array(2 * n), v: new Float32Array(2 * n),
});
export const sizes: number[] = [out.length, lse.length, Object.keys(standardSystems).length];
export type Layer = Fixture['layer'];
`;

// Types only: a Node app has no GPU here; GPUBuffer must come with @tessera/webgpu's declarations.
const gpuSample = `import { createWebGpuBackend, type WebGpuBackendOptions } from '@tessera/webgpu';

export const options: WebGpuBackendOptions = { powerPreference: 'high-performance' };
export const start = () => createWebGpuBackend(options);
export const bytes = (buffer: GPUBuffer): number => buffer.size;
`;

const runnableSample = `import { defineAttention } from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { slidingWindow } from '@tessera/patterns';

const [headsQ, headsKV, seq, headDim] = [4, 2, 48, 8];
const spec = defineAttention({
  batch: 1, headsQ, headsKV, seqQ: seq, seqKV: seq, headDim, dtype: 'f32',
  mask: slidingWindow(16, { causal: true }),
});
const fill = (n, s) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * s));
const backend = await createCpuBackend();
const { out, lse } = await backend.run(spec, {
  q: fill(headsQ * seq * headDim, 0.37), k: fill(headsKV * seq * headDim, 0.11),
  v: fill(headsKV * seq * headDim, 0.53),
});
if (out.length !== headsQ * seq * headDim || !out.every(Number.isFinite)) throw new Error('bad out');
if (lse.length !== headsQ * seq || !lse.every(Number.isFinite)) throw new Error('bad lse');
// Importable in Node without Dawn: the webgpu package is an optional peer, loaded on first use.
const webgpu = await import('@tessera/webgpu');
if (typeof webgpu.createWebGpuBackend !== 'function') throw new Error('no createWebGpuBackend');
console.log(JSON.stringify({ ok: true, out: out.length, lse: lse.length }));
`;

// Each config type-checks its files with skipLibCheck off and no ambient @types.
const tsconfigs = {
  // A Node app: NodeNext resolution, no DOM: core, patterns, cpu and variants need neither DOM
  // nor Node's types.
  'tsconfig.node.json': {
    files: ['sample.ts'],
    options: { module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2022'] },
  },
  // @webgpu/types (which @tessera/webgpu's declarations reference) is written against the DOM lib.
  'tsconfig.node-webgpu.json': {
    files: ['sample.ts', 'gpu-sample.ts'],
    options: { module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2022', 'DOM'] },
  },
  // A bundled app (Vite, esbuild).
  'tsconfig.bundler.json': {
    files: ['sample.ts', 'gpu-sample.ts'],
    options: { module: 'ESNext', moduleResolution: 'Bundler', lib: ['ES2022', 'DOM'] },
  },
};

// What the scratch apps install. Not @tessera/cuda: without a prebuild for the platform its install
// builds the addon with node-gyp, which needs the CUDA toolkit and Node's headers from the network.
export const scratchPackages = [
  '@tessera/core',
  '@tessera/patterns',
  '@tessera/cpu',
  '@tessera/webgpu',
  '@tessera/variants',
];

/**
 * Installs the tarballs into a fresh ESM app in dir with npm or pnpm (only third-party
 * dependencies come from the registry), type-checks a sample under NodeNext and bundler resolution
 * with skipLibCheck off, and runs a cpu sample with Node. Returns what the sample printed.
 */
export function scratchApp(pm, packed, dir) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const used = packed.filter((p) => scratchPackages.includes(p.name));
  const fileSpec = Object.fromEntries(used.map((p) => [p.name, `file:${p.tarball}`]));
  const manifest = {
    name: `tessera-scratch-${pm}`,
    private: true,
    type: 'module',
    dependencies: fileSpec,
  };
  // The tarballs depend on each other by ^version, which no registry has yet: point those at
  // the tarballs too, as a user testing a release candidate would.
  if (pm === 'npm')
    manifest.overrides = Object.fromEntries(used.map((p) => [p.name, `$${p.name}`]));
  else {
    manifest.packageManager = JSON.parse(
      readFileSync(join(repoRoot, 'package.json'), 'utf8'),
    ).packageManager;
    manifest.pnpm = { overrides: fileSpec };
  }
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  writeFileSync(join(dir, 'sample.ts'), typedSample);
  writeFileSync(join(dir, 'gpu-sample.ts'), gpuSample);
  writeFileSync(join(dir, 'run.mjs'), runnableSample);
  for (const [file, { files, options }] of Object.entries(tsconfigs)) {
    const compilerOptions = {
      target: 'ES2022',
      ...options,
      strict: true,
      skipLibCheck: false,
      noEmit: true,
      types: [],
    };
    const tsconfig = { compilerOptions, files };
    writeFileSync(join(dir, file), `${JSON.stringify(tsconfig, null, 2)}\n`);
  }

  const quiet = { cwd: dir, env: { npm_config_update_notifier: 'false' } };
  if (pm === 'npm') run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], quiet);
  else pnpm(['install', '--ignore-workspace', '--no-frozen-lockfile'], quiet);

  // Browser apps never need Dawn (every platform's binary, ~130 MB): an optional peer is not
  // installed unless the app asks for it (npm hoists to node_modules/, pnpm keeps it in .pnpm/).
  const store = join(dir, 'node_modules', '.pnpm');
  const dawn =
    existsSync(join(dir, 'node_modules', 'webgpu')) ||
    (existsSync(store) && readdirSync(store).some((entry) => entry.startsWith('webgpu@')));
  if (dawn) throw new Error(`${pm} installed the optional webgpu peer (Dawn) though nothing asked`);
  const tsc = binOf('typescript', 'tsc');
  for (const file of Object.keys(tsconfigs)) run(process.execPath, [tsc, '-p', file], quiet);
  return run(process.execPath, ['run.mjs'], quiet).trim();
}
