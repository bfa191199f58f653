import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { f32ToF16Bits } from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { describe, expect, it, vi } from 'vitest';
import {
  crossLayerMarkdown,
  loadFixture,
  main,
  measureCrossLayer,
  measureVariants,
  structured,
  variantsMarkdown,
} from '../src/index.js';

/** A fixture header (qkv.json) in the format train_dump.py writes. */
function header(fields: { seq: number; heads: number; headDim: number; layers: number[] }): string {
  return JSON.stringify({
    format: 1,
    dtype: 'f16',
    layout: 'bhsd',
    order: ['q', 'k', 'v'],
    scale: 1 / Math.sqrt(fields.headDim),
    ...fields,
  });
}

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

  it('rejects a fixture whose data does not match its header', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fixture-'));
    writeFileSync(join(dir, 'qkv.json'), header({ seq: 4, heads: 1, headDim: 2, layers: [0] }));
    writeFileSync(join(dir, 'qkv-L0.bin'), new Uint8Array(10));
    await expect(loadFixture(dir)).rejects.toThrow(/10 bytes, expected 48/);
  });

  it('reads a two-layer fixture and measures cross-layer reuse of a compression', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fixture2-'));
    const heads = 2;
    const seq = 96;
    const dim = 8;
    writeFileSync(join(dir, 'qkv.json'), header({ seq, heads, headDim: dim, layers: [4, 5] }));
    for (const [layer, seed] of [
      [4, 3],
      [5, 4],
    ] as const) {
      const { q, k, v } = structured(heads, seq, dim, seed).qkv;
      const bits = new Uint16Array(3 * q.length);
      [q, k, v].forEach((t, i) => {
        for (let j = 0; j < t.length; j++) bits[i * t.length + j] = f32ToF16Bits(t[j] as number);
      });
      writeFileSync(join(dir, `qkv-L${layer}.bin`), new Uint8Array(bits.buffer));
    }
    const l4 = await loadFixture(dir, 4);
    const l5 = await loadFixture(dir);
    expect(l5.source).toBe('fixture-L5');
    const direct = structured(heads, seq, dim, 4).qkv.k;
    let maxDiff = 0;
    for (let i = 0; i < direct.length; i++)
      maxDiff = Math.max(maxDiff, Math.abs((l5.qkv.k[i] as number) - (direct[i] as number)));
    expect(maxDiff).toBeLessThan(2e-3); // f16 rounding only
    const cpu = await createCpuBackend();
    const rows = await measureCrossLayer(cpu, l4, l5, { warmup: 0, repeat: 1 });
    expect(rows.map((r) => r.status)).toEqual(['ok', 'ok']);
    const [own, shared] = rows as [NonNullable<(typeof rows)[0]>, NonNullable<(typeof rows)[0]>];
    expect(own.relError).toBeGreaterThan(0);
    // Another layer's compression is a different approximation of this layer's attention.
    expect(Math.abs((shared.relError as number) - (own.relError as number))).toBeGreaterThan(1e-4);
    expect(crossLayerMarkdown('cpu', rows)).toContain('shared from fixture-L4');
  });
});
