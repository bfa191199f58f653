// The packages as a user gets them: packed by pnpm, checked by publint and attw, accepted by
// `npm publish --dry-run`, installed into scratch apps with npm and pnpm, type-checked with
// skipLibCheck off and run. Needs the built packages (`npm test` builds first) and the npm registry.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkManifest,
  inspectTarball,
  lintAll,
  packAll,
  publishDryRun,
  releasePackages,
  scratchApp,
  unpreservedReferences,
} from '../lib.mjs';

type Packed = ReturnType<typeof packAll>;

const work = mkdtempSync(join(tmpdir(), 'tessera-packed-'));
let packed: Packed = [];

beforeAll(() => {
  packed = packAll(join(work, 'packed'));
}, 120_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('publishable packages', () => {
  it('follow the release rules in their manifests', () => {
    const problems = Object.fromEntries(releasePackages().map((p) => [p.name, checkManifest(p)]));
    expect(problems).toEqual(Object.fromEntries(Object.keys(problems).map((n) => [n, []])));
  });

  it('keep every /// <reference types> in their declarations (preserve="true")', () => {
    expect(unpreservedReferences()).toEqual([]);
  });

  it('pack with a LICENSE, ^ ranges and exports that point at shipped files', () => {
    const problems = Object.fromEntries(packed.map((p) => [p.name, inspectTarball(p)]));
    expect(problems).toEqual(Object.fromEntries(packed.map((p) => [p.name, []])));
  });

  it('pass publint (strict) and attw (ESM-only profile)', async () => {
    const failed = (await lintAll(packed)).filter((r) => !r.ok);
    expect(failed.map((r) => `${r.name}\n${r.output}`).join('\n\n')).toBe('');
  }, 180_000);

  it('are accepted by npm publish --dry-run', async () => {
    const failed = (await publishDryRun(packed)).filter((r) => !r.ok);
    expect(failed.map((r) => `${r.name}\n${r.output}`).join('\n\n')).toBe('');
  }, 120_000);

  for (const pm of ['npm', 'pnpm'] as const)
    it(`install with ${pm} into a Node ESM app that type-checks and runs`, () => {
      const printed = scratchApp(pm, packed, join(work, `scratch-${pm}`));
      expect(JSON.parse(printed)).toEqual({ ok: true, out: 1536, lse: 192 });
    }, 240_000);
});
