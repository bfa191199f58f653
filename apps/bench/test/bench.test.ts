import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCpuBackend, referenceRows } from '@tessera/cpu';
import { describe, expect, it, vi } from 'vitest';
import {
  buildCases,
  main,
  measureCase,
  parseSizes,
  runPeers,
  sampleRows,
  summarize,
} from '../src/index.js';

describe('units', () => {
  it('parses sizes with k and m suffixes', () => {
    expect(parseSizes('1k,4k,1000,1m')).toEqual([1024, 4096, 1000, 1048576]);
    expect(() => parseSizes('4x')).toThrow("--seq: '4x' is not a size");
    expect(() => parseSizes('0')).toThrow("--seq: '0' must be a positive whole number of tokens");
    expect(() => parseSizes('1.5')).toThrow('must be a positive whole number');
  });
  it('summarises samples by interpolated percentiles', () => {
    const s = summarize([5, 1, 4, 2, 3]);
    expect(s).toEqual({ median: 3, p10: 1.4, p90: 4.6, n: 5 });
  });
  it('samples rows across batches and heads, first and last included', () => {
    const [c] = buildCases(['dense'], [10], {
      batch: 2,
      heads: 3,
      headsKV: 3,
      dim: 4,
      dtype: 'f32',
    });
    const rows = sampleRows(c?.build() as never, 4);
    expect(rows[0]).toEqual({ b: 0, h: 0, q: 0 });
    expect(rows[3]).toEqual({ b: 1, h: 2, q: 9 });
    expect(new Set(rows.map((r) => `${r.b}${r.h}`)).size).toBeGreaterThan(2);
  });
});

describe('measureCase on the cpu backend', () => {
  const shape = { batch: 1, heads: 2, headsKV: 1, dim: 16, dtype: 'f32' as const };
  it('times tiled and naive and checks them against the reference', async () => {
    const backend = await createCpuBackend();
    for (const c of buildCases(['dense', 'causal'], [70], shape)) {
      const r = await measureCase(backend, c, {
        warmup: 0,
        repeat: 2,
        baseline: true,
        sampleRows: 5,
        reference: referenceRows,
      });
      expect(r.strategies.map((s) => [s.strategy, s.status])).toEqual([
        ['tiled', 'ok'],
        ['naive', 'ok'],
      ]);
      for (const s of r.strategies) {
        expect(s.ms?.n).toBe(2);
        expect(s.relError).toBeLessThan(1e-6);
        expect(s.tflops).toBeGreaterThan(0);
      }
      // Density counts the pairs a tiled kernel computes: whole 64-blocks, so causal at 70 tokens
      // is q-block 0 × kv-block 0 (64 × 64) plus q-block 1 × both kv blocks (6 × 70).
      expect(r.density).toBeCloseTo(c.variant === 'causal' ? (64 * 64 + 6 * 70) / 4900 : 1, 12);
    }
  });
  it('reports a baseline that does not fit instead of failing', async () => {
    const backend = await createCpuBackend({ maxNaiveBytes: 1024 });
    const [c] = buildCases(['dense'], [64], shape);
    const r = await measureCase(backend, c as never, {
      warmup: 0,
      repeat: 1,
      baseline: true,
      sampleRows: 2,
      reference: referenceRows,
    });
    expect(r.strategies[1]?.status).toBe('does-not-fit');
    expect(r.strategies[1]?.message).toMatch(/naive/i);
  });
});

describe('the CLI', () => {
  it('runs a tiny suite on the cpu backend and writes JSON, Markdown and SVG charts', async () => {
    const out = mkdtempSync(join(tmpdir(), 'tessera-bench-'));
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    const err = vi.spyOn(console, 'error').mockImplementation(() => {});
    const code = await main([
      'node',
      'tessera-bench',
      '--backend',
      'cpu',
      '--suite',
      'dense,causal',
      '--seq',
      '48,80',
      '--repeat',
      '1',
      '--warmup',
      '0',
      '--heads',
      '2',
      '--dim',
      '8',
      '--no-progress',
      '--out',
      out,
    ]);
    log.mockRestore();
    err.mockRestore();
    expect(code).toBe(0);
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    expect(report).toMatchObject({ schema: 'tessera-bench', version: 1 });
    expect(report.backends[0].results.map((r: { id: string }) => r.id)).toEqual([
      'dense/48',
      'dense/80',
      'causal/48',
      'causal/80',
    ]);
    expect(readFileSync(join(out, 'report.md'), 'utf8')).toContain('| causal/80 |');
    const svg = readFileSync(join(out, 'time.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('cpu tiled');
    expect(svg).toContain('cpu naive');
  });
  it('exits 2 with a message on bad flags, and names an unavailable backend without a stack trace', async () => {
    const err = vi.spyOn(console, 'error').mockImplementation(() => {});
    const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    expect(await main(['node', 'tessera-bench', '--suite', 'nope'])).toBe(2);
    expect(await main(['node', 'tessera-bench', '--seq', '4q'])).toBe(2);
    const messages = [...err.mock.calls.flat(), ...write.mock.calls.flat()].join('\n');
    expect(messages).toContain("--suite: 'nope' is not one of");
    expect(messages).toContain("'4q' is not a size");
    err.mockClear();
    expect(await main(['node', 'tessera-bench', '--backend', 'cuda', '--no-progress'])).toBe(2);
    expect(err.mock.calls.flat().join('\n')).toMatch(
      /^error: cuda backend is not available here: /,
    );
    err.mockRestore();
    write.mockRestore();
  });
});

describe('peers', () => {
  it('explain a missing python instead of crashing', () => {
    const [c] = buildCases(['causal'], [64], {
      batch: 1,
      heads: 1,
      headsKV: 1,
      dim: 8,
      dtype: 'bf16',
    });
    const r = runPeers([c as never], {
      warmup: 1,
      repeat: 1,
      python: 'python3-that-does-not-exist',
    });
    expect(r.results).toEqual([]);
    expect(r.error).toMatch(/^peers: could not start python3-that-does-not-exist/);
  });
});
