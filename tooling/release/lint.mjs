// publint (strict: warnings fail too) and attw (ESM-only profile) on the tarballs named on the
// command line; prints one JSON report per tarball: [{ tarball, ok, output }]. attw runs in this
// process through its CLI's own core and exit-code rule, so TypeScript loads once, not once per
// tarball; a failing tarball is re-run through attw's CLI for its readable report.
import { spawnSync } from 'node:child_process';
import { readFileSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot, run } from './lib.mjs';

// attw's esm-only profile: no node10 resolution and no require() of our entry points.
const esmOnlyProfile = { ignoreResolutions: ['node10', 'node16-cjs'] };

const topLevel = (pkgName) => realpathSync(join(repoRoot, 'node_modules', pkgName, 'package.json'));
const fromCli = createRequire(topLevel('@arethetypeswrong/cli'));
/** A package's file: its exports' subpath (built "default" entry), or its bin. */
function fileOf(pkgName, subpath, manifestPath = fromCli.resolve(`${pkgName}/package.json`)) {
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  const target = subpath === 'bin' ? manifest.bin : manifest.exports[subpath];
  const file = typeof target === 'string' ? target : (target.default ?? Object.values(target)[0]);
  return join(manifestPath, '..', file);
}
const load = (pkgName, subpath) => import(pathToFileURL(fileOf(pkgName, subpath)).href);

const core = await load('@arethetypeswrong/core', '.');
const { getExitCode } = await load('@arethetypeswrong/cli', './internal/getExitCode');
const attwCli = fileOf('@arethetypeswrong/cli', 'bin');
const publintCli = fileOf('publint', 'bin', topLevel('publint'));

const reports = [];
for (const tarball of process.argv.slice(2)) {
  let ok = true;
  let output = '';
  try {
    output += run(process.execPath, [publintCli, 'run', '--strict', tarball]);
  } catch (error) {
    ok = false;
    output += error.message;
  }
  const analysis = await core.checkPackage(
    core.createPackageFromTarballData(new Uint8Array(readFileSync(tarball))),
  );
  // getExitCode passes a package with no types at all; we ship types, so that is a failure.
  if (!analysis.types || getExitCode(analysis, esmOnlyProfile) !== 0) {
    ok = false;
    const args = [
      attwCli,
      tarball,
      '--profile',
      'esm-only',
      '--no-definitely-typed',
      '-f',
      'ascii',
    ];
    const report = spawnSync(process.execPath, args, { encoding: 'utf8' });
    output += `\nattw --profile esm-only:\n${report.stdout}${report.stderr}`;
  } else output += '\nattw --profile esm-only: no problems';
  reports.push({ tarball, ok, output });
}
process.stdout.write(JSON.stringify(reports));
