import { blockLayout, defineAttention, maskMod, UnsupportedError } from '@tessera/core';
import { bigBird, causal } from '@tessera/patterns';
import { describe, expect, it } from 'vitest';
import { emitCuda, launchGeometry, packParams, qBlockOrder } from '../src/emit/index.js';
import { generatorCases } from './cases.js';

const spec = (over: Partial<Parameters<typeof defineAttention>[0]> = {}) =>
  defineAttention({ batch: 1, headsQ: 4, seqQ: 256, headDim: 64, dtype: 'bf16', ...over });

describe('emitCuda', () => {
  it('is deterministic and differs between specs', () => {
    for (const s of Object.values(generatorCases))
      expect(emitCuda(s).source).toBe(emitCuda(s).source);
    const sources = new Set(Object.values(generatorCases).map((s) => emitCuda(s).source));
    expect(sources.size).toBe(Object.keys(generatorCases).length);
  });

  it('picks tensor cores for 16-bit specs with head dims in multiples of 8, CUDA cores otherwise', () => {
    expect(emitCuda(spec()).path).toBe('mma');
    expect(emitCuda(spec({ dtype: 'f16', headDim: 256 })).path).toBe('mma');
    expect(emitCuda(spec({ dtype: 'f32' })).path).toBe('simt');
    expect(emitCuda(spec({ headDim: 20 })).path).toBe('simt');
    expect(emitCuda(spec(), { path: 'simt' }).path).toBe('simt');
    expect(emitCuda(generatorCases['linear-elu-causal'] as never).path).toBe('linear');
    expect(() => emitCuda(spec({ dtype: 'f32' }), { path: 'mma' })).toThrow(UnsupportedError);
    expect(() => emitCuda(spec({ headDim: 600 }))).toThrow(/head dims up to 512/);
  });

  it('takes valid block sizes from options and tiling hints, and names invalid ones', () => {
    expect(emitCuda(spec(), { blockQ: 64, blockKV: 32 })).toMatchObject({
      blockQ: 64,
      blockKV: 32,
    });
    expect(emitCuda(spec({ tiling: { blockQ: 32 } }))).toMatchObject({ blockQ: 32, blockKV: 64 });
    // A hint this path cannot take falls back to the default; an explicit option is an error.
    expect(emitCuda(spec({ tiling: { blockQ: 100 } })).blockQ).toBe(128);
    expect(() => emitCuda(spec(), { blockQ: 100 })).toThrow(
      /blockQ and blockKV in 16, 32, ..., 128, blockQ a multiple of 16 × warpTiles \(got 100 × 64, warpTiles 1\)/,
    );
    expect(() => emitCuda(spec({ dtype: 'f32' }), { blockKV: 64 })).toThrow(/blockKV 32/);
  });

  it('inlines the mask only where the spec has one and bounds-checks only a short last block', () => {
    const dense = emitCuda(spec()).source;
    expect(dense).not.toContain('tsr_mask');
    expect(dense).toContain('tsr_logits<false, false>');
    expect(dense).not.toContain('<false, true>');
    const masked = emitCuda(
      spec({ seqQ: 250, mask: maskMod(({ q, kv }) => q.ge(kv).and(q.sub(kv).lt(100))) }),
    ).source;
    expect(masked).toContain('bool tsr_mask(int b, int h, int q, int kv');
    expect(masked).toContain('if (p.full[e])');
    expect(masked).toContain('tsr_logits<true, true>');
    expect(masked).toContain('const bool bounded = j == NKB - 1;');
  });

  it('folds scale · log2(e) into one multiply without a score modification', () => {
    const s = spec({ scale: 0.125 });
    expect(emitCuda(s).source).toContain(`return dot * ${Math.fround(0.125 * Math.LOG2E)}f;`);
  });

  it('emits block sizes the core layout accepts', () => {
    for (const s of Object.values(generatorCases)) {
      const m = emitCuda(s);
      if (m.path === 'linear') continue;
      const layout = blockLayout(s, { blockQ: m.blockQ, blockKV: m.blockKV });
      expect(layout.numQBlocks).toBe(Math.ceil(s.seqQ / m.blockQ));
    }
  });

  it('orders blocks longest row first (lpt) by default, or by grid, and rescales lazily on request', () => {
    const s = spec({ seqQ: 1024, mask: causal() });
    const lpt = emitCuda(s);
    expect(lpt.schedule).toBe('lpt');
    expect(lpt.source).toContain('const int qb = p.q_order[blockIdx.x / (unsigned)(HQ * BATCH)];');
    expect(lpt.kernels[0]?.params.map((f) => f.name)).toContain('q_order');
    const grid = emitCuda(s, { schedule: 'grid' });
    expect(grid.source).toContain('const int qb = NQB - 1 - (int)blockIdx.x;');
    expect(grid.kernels[0]?.params.map((f) => f.name)).not.toContain('q_order');
    expect(lpt.source).not.toContain('if (moved)');
    expect(emitCuda(s, { lazyRescale: true }).source).toContain('if (moved)');
    const layout = blockLayout(s, { blockQ: lpt.blockQ, blockKV: lpt.blockKV });
    expect(launchGeometry(s, lpt, layout)).toEqual({
      grid: [8 * 4, 1, 1],
      order: Int32Array.from([7, 6, 5, 4, 3, 2, 1, 0]),
    });
    expect(launchGeometry(s, grid, layout)).toEqual({ grid: [8, 4, 1], order: null });
  });

  it("puts BigBird's global query block (the longest row) first", () => {
    const s = spec({
      seqQ: 2048,
      mask: bigBird({
        window: 3,
        globalBlocks: 1,
        randomBlocks: 2,
        block: 128,
        seqKV: 2048,
        seed: 1,
      }),
    });
    const layout = blockLayout(s, { blockQ: 128, blockKV: 32 });
    const order = qBlockOrder(layout);
    expect(order[0]).toBe(0);
    expect([...order].sort((a, b) => a - b)).toEqual(Array.from({ length: 16 }, (_, i) => i));
    const len = (qb: number) =>
      (layout.rowStart[qb + 1] as number) - (layout.rowStart[qb] as number);
    for (let i = 1; i < order.length; i++)
      expect(len(order[i - 1] as number)).toBeGreaterThanOrEqual(len(order[i] as number));
  });

  it('matches the stored snapshots', () => {
    const small = { batch: 1, headsQ: 2, headsKV: 1, seqQ: 100, headDim: 32 } as const;
    expect(
      emitCuda(defineAttention({ ...small, dtype: 'bf16', mask: causal() })).source,
    ).toMatchSnapshot('mma causal gqa');
    expect(emitCuda(generatorCases['simt-f32-document'] as never).source).toMatchSnapshot(
      'simt document alibi',
    );
    expect(emitCuda(generatorCases['linear-favor-causal-bshd'] as never).source).toMatchSnapshot(
      'linear favor+ causal',
    );
  });
});

describe('packParams', () => {
  it('packs fields with natural alignment, as the C struct lays them out', () => {
    const bytes = packParams(
      [
        { name: 'p', type: 'ptr', ctype: 'const float*' },
        { name: 'n', type: 'i32', ctype: 'int' },
        { name: 'x', type: 'f32', ctype: 'float' },
        { name: 'm', type: 'i32', ctype: 'int' },
        { name: 'big', type: 'i64', ctype: 'long long' },
      ],
      { p: 0x1122334455667788n, n: -5, x: 1.5, m: 7, big: 2 ** 40 + 3 },
    );
    const view = new DataView(bytes.buffer);
    expect(bytes.length).toBe(32);
    expect(view.getBigUint64(0, true)).toBe(0x1122334455667788n);
    expect(view.getInt32(8, true)).toBe(-5);
    expect(view.getFloat32(12, true)).toBe(1.5);
    expect(view.getInt32(16, true)).toBe(7);
    expect(view.getBigUint64(24, true)).toBe(BigInt(2 ** 40 + 3));
    expect(() => packParams([{ name: 'q', type: 'ptr', ctype: 'float*' }], {})).toThrow(
      /'q' has no value/,
    );
  });
});
