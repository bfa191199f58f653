// The device bundle (what the lead engineer carries to the H100): it must build, stay small, and
// on a machine without a GPU exit with code 2 and the typed "no CUDA driver/GPU found" message.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const pkgDir = join(import.meta.dirname, '..');
const out = mkdtempSync(join(tmpdir(), 'tessera-device-bundle-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

describe('device bundle', () => {
  it('bundles run.mjs with the addon and the peer script, under 4 MiB', () => {
    const r = spawnSync(
      process.execPath,
      [join(pkgDir, 'scripts', 'device-bundle.mjs'), '--out', out],
      {
        encoding: 'utf8',
      },
    );
    expect(r.status, r.stderr).toBe(0);
    const files = readdirSync(out, { recursive: true }).map(String);
    expect(files).toContain('run.mjs');
    expect(files).toContain('tessera_cuda.node');
    expect(files).toContain(join('peers', 'peers.py'));
    const bytes = files.reduce(
      (s, f) => s + (statSync(join(out, f)).isFile() ? statSync(join(out, f)).size : 0),
      0,
    );
    expect(bytes).toBeLessThan(4 * 2 ** 20);
  }, 60_000);

  it('runs without node_modules and fails clearly without a GPU', () => {
    const r = spawnSync(process.execPath, [join(out, 'run.mjs'), '--quick'], {
      encoding: 'utf8',
      cwd: out,
      env: { ...process.env, OUT: join(out, 'results'), NODE_PATH: '' },
    });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(2);
    expect(r.stderr).toContain('no CUDA driver/GPU found');
    expect(r.stderr).toContain('libcuda.so.1');
  }, 60_000);
});
