import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCpuBackend } from '@tessera/cpu';
import { describe, expect, it, vi } from 'vitest';
import { loadFixture, main, measureVariants, structured, variantsMarkdown } from '../src/index.js';

describe('variants suite', () => {
  it('measures every standard system against exact attention on the same backend', async () => {
    const cpu = await createCpuBackend();
    const rows = await measureVariants(cpu, structured(2, 96, 16), {
      causal: true,
      warmup: 0,
      repeat: 1,
    });
    expect(rows[0]?.system).toBe('exact');
    expect(rows.length).toBeGreaterThan(12);
    for (const r of rows) {
      expect(r.status, `${r.system}: ${r.message}`).toBe('ok');
      expect(r.ms).toBeGreaterThan(0);
      expect(r.peakBytes).toBeGreaterThan(0);
    }
    expect(rows[0]?.relError).toBe(0);
    const mqa = rows.find((r) => r.system === 'mqa');
    expect(mqa?.kvState).toBe((rows[0]?.kvState as number) / 2);
    // Sparse projected keeps every selected key exact: its error is below pure pooling's.
    const spa = rows.find((r) => r.system === 'sparse-projected')?.relError as number;
    expect(spa).toBeGreaterThan(0);
    expect(spa).toBeLessThan(
      rows.find((r) => r.system === 'attention-pooling')?.relError as number,
    );
    const md = variantsMarkdown('cpu', rows);
    for (const r of rows) expect(md).toContain(`| ${r.system} |`);
  });

  it('runs from the CLI and writes variants.json and variants.md', async () => {
    const out = mkdtempSync(join(tmpdir(), 'variants-'));
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    const err = vi.spyOn(console, 'error').mockImplementation(() => {});
    const code = await main([
      'node',
      'tessera-bench',
      '--backend',
      'cpu',
      '--suite',
      'variants',
      '--seq',
      '64',
      '--dim',
      '8',
      '--repeat',
      '1',
      '--warmup',
      '0',
      '--no-progress',
      '--systems',
      'mqa,sparse-projected',
      '--out',
      out,
    ]);
    log.mockRestore();
    err.mockRestore();
    expect(code).toBe(0);
    const json = JSON.parse(readFileSync(join(out, 'variants.json'), 'utf8'));
    expect(json.results[0].rows.map((r: { system: string }) => r.system)).toEqual([
      'exact',
      'mqa',
      'sparse-projected',
    ]);
    expect(existsSync(join(out, 'variants.md'))).toBe(true);
  });

  it('rejects a fixture whose data does not match its header', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fixture-'));
    writeFileSync(
      join(dir, 'qkv.json'),
      JSON.stringify({ seq: 4, heads: 1, headDim: 2, layers: [0] }),
    );
    writeFileSync(join(dir, 'qkv-L0.bin'), new Uint8Array(10));
    expect(() => loadFixture(dir)).toThrow(/expected 48 bytes, got 10/);
  });
});
