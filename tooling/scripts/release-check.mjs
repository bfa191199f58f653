// Checks that every publishable package is ready to publish, as CI's packed-tarball test does, and
// says what is wrong: `node tooling/scripts/release-check.mjs [--no-build] [--no-scratch] [--keep DIR]`
//   builds (unless --no-build), checks the manifests, packs each package with pnpm (workspace:
//   ranges rewritten, publishConfig applied), checks each tarball, runs publint and attw (ESM-only
//   profile) on it and `npm publish --dry-run`, then installs the tarballs into scratch apps with
//   npm and pnpm, type-checks a sample with skipLibCheck off and runs it (unless --no-scratch).
// Needs the npm registry for third-party dependencies and the dry run; exits 1 on any problem.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  checkManifest,
  inspectTarball,
  lintAll,
  packAll,
  publishDryRun,
  releasePackages,
  scratchApp,
  unpreservedReferences,
} from '../release/lib.mjs';
import { bootstrap } from './bootstrap.mjs';

const { values } = parseArgs({
  options: {
    'no-build': { type: 'boolean' },
    'no-scratch': { type: 'boolean' },
    keep: { type: 'string' },
  },
});

const work = values.keep ? resolve(values.keep) : mkdtempSync(join(tmpdir(), 'tessera-release-'));
let failures = 0;
function report(step, name, problems) {
  if (problems.length === 0) return console.log(`ok   ${step}: ${name}`);
  failures += 1;
  console.log(`FAIL ${step}: ${name}\n${problems.map((p) => `     ${p}`).join('\n')}`);
}

try {
  if (!values['no-build']) bootstrap();
  for (const pkg of releasePackages()) report('manifest', pkg.name, checkManifest(pkg));
  report('declarations', 'reference directives', unpreservedReferences());
  const packed = packAll(join(work, 'packed'));
  for (const pkg of packed) report('tarball', pkg.name, inspectTarball(pkg));
  for (const r of await lintAll(packed)) report('publint+attw', r.name, r.ok ? [] : [r.output]);
  for (const r of await publishDryRun(packed))
    report('publish --dry-run', r.name, r.ok ? [] : [r.output]);
  if (!values['no-scratch'])
    for (const pm of ['npm', 'pnpm']) {
      try {
        const printed = scratchApp(pm, packed, join(work, `scratch-${pm}`));
        report('scratch app', `${pm} (${printed})`, []);
      } catch (error) {
        report('scratch app', pm, [error.message]);
      }
    }
} finally {
  if (!values.keep) rmSync(work, { recursive: true, force: true });
}
if (failures > 0) {
  console.log(`\n${failures} check(s) failed`);
  process.exit(1);
}
console.log('\nready to publish');
