// The generated CUDA C++ of the program kernels, pinned by snapshots (deterministic, readable),
// plus what the generator promises: shapes baked in, one thread/warp per item, the grid covering
// the work. The kernels' behaviour is checked by program-emulate.test.ts.
import {
  defineAttention,
  defineProgram,
  maskMod,
  type SelectStep,
  scoreMod,
  tensor,
} from '@tessera/core';
import { causal } from '@tessera/patterns';
import { describe, expect, it } from 'vitest';
import {
  emitConvert,
  emitDense,
  emitGate,
  emitMerge,
  emitPool,
  emitProject,
  emitSubtract,
  PROGRAM_THREADS,
} from '../src/program/emit.js';
import {
  emitCompressed,
  emitExpandSelection,
  emitSelect,
  emitSelectedRows,
} from '../src/program/emit-attention.js';
import {
  emitGroupedAttend,
  emitGroupRoute,
  emitGroupSort,
  type GroupedAttendShape,
} from '../src/program/emit-group.js';
import { compileWithNvcc, findNvcc } from '../src/runtime/compiler.js';

const spec = defineAttention({
  batch: 2,
  headsQ: 4,
  headsKV: 2,
  seqQ: 75,
  headDim: 16,
  mask: causal(),
});
const program = defineProgram({
  inputs: { qp: [2, 4, 5, 16], kp: [2, 2, 3, 16], q: [2, 4, 75, 16] },
  steps: [
    { op: 'select', out: 's', q: 'qp', k: 'kp', spec, blockQ: 16, blockKV: 32, topK: 2, local: 1 },
    {
      op: 'compressed',
      out: 'o',
      lse: 'l',
      q: 'q',
      k: 'kp',
      v: 'kp',
      block: 32,
      seqKV: 75,
      causal: true,
      scale: 0.25,
      selection: 's',
      selectionMode: 'exclude',
    },
  ],
  outputs: ['o', 'l'],
});
const select = program.steps[0] as SelectStep;
const compressed = program.steps[1] as Extract<
  (typeof program.steps)[number],
  { op: 'compressed' }
>;

const grouped: GroupedAttendShape = {
  batch: 2,
  headsQ: 4,
  headsKV: 2,
  seqQ: 75,
  seqKV: 75,
  headDim: 16,
  headDimV: 40,
  causal: true,
  sizeQ: 16,
  sizeKV: 8,
  scale: 0.25,
  features: null,
};

// A mask and score modification reading captured tensors (document ids, ALiBi slopes).
const docs = tensor(Int32Array.from({ length: 75 }, (_, i) => Math.floor(i / 20)));
const slopes = tensor(Float32Array.from({ length: 4 }, (_, h) => 2 ** -(h + 1)));
const captured = defineAttention({
  batch: 2,
  headsQ: 4,
  headsKV: 2,
  seqQ: 75,
  headDim: 16,
  headDimV: 40,
  mask: maskMod(({ q, kv }) => docs.at(q).eq(docs.at(kv)).and(q.ge(kv)), { name: 'doc-causal' }),
  scoreMod: scoreMod(({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).toFloat())), {
    name: 'alibi',
  }),
});
const noMask = defineAttention({ batch: 1, headsQ: 2, seqQ: 64, headDim: 8 });

const kernels = {
  'pool (weighted)': emitPool([2, 4, 75, 16], 16, true),
  'pool (mean)': emitPool([2, 4, 75, 16], 7, false),
  project: emitProject([2, 2, 75, 16], 12),
  'dense (bias, relu)': emitDense([2, 4, 75, 16], 24, true, true),
  merge: emitMerge([2, 4, 75, 16], 3, true),
  gate: emitGate([2, 4, 75, 16], 16, 2),
  'convert f32 -> bf16': emitConvert('bf16', 1000, true),
  'convert f16 -> f32': emitConvert('f16', 1000, false),
  select: emitSelect(select, { batches: 1, heads: 1 }),
  'compressed (selection: exclude)': emitCompressed(compressed, [2, 4, 75, 16], [2, 2, 3, 16], 16, {
    mode: 'exclude',
    blockQ: 16,
    numQBlocks: 5,
  }),
  'compressed (no selection)': emitCompressed(
    { ...compressed, selection: undefined, selectionMode: undefined, lse: undefined },
    [2, 4, 75, 16],
    [2, 2, 3, 16],
    16,
    null,
  ),
  'compressed (favor+ features, skipOwnBlock, selection: exclude)': emitCompressed(
    {
      ...compressed,
      causal: false,
      skipOwnBlock: true,
      kernel: { featureMap: 'favor+', features: 64, seed: 3 },
    },
    [2, 4, 75, 16],
    [2, 2, 3, 16],
    16,
    { mode: 'exclude', blockQ: 16, numQBlocks: 5 },
    64,
  ),
  'compressed (elu+1 features, causal)': emitCompressed(
    {
      ...compressed,
      selection: undefined,
      selectionMode: undefined,
      kernel: { featureMap: 'elu+1' },
    },
    [2, 4, 75, 16],
    [2, 2, 3, 16],
    16,
    null,
    16,
  ),
  'expand selection (64-key blocks -> 32)': emitExpandSelection(
    { rows: 600, blockKV: 64, seqKV: 160 },
    32,
  ),
  'group: route': emitGroupRoute([2, 4, 75, 16], 5),
  'group: sort': emitGroupSort(75, 5, 8),
  'grouped attend (softmax, causal)': emitGroupedAttend(grouped, true),
  'grouped attend (favor+ features, no mask, no lse)': emitGroupedAttend(
    { ...grouped, causal: false, features: 64, featureMap: 'favor+' },
    false,
  ),
  'grouped attend (softmax, no mask, query grouping over the KV heads)': emitGroupedAttend(
    { ...grouped, causal: false, headsGroupQ: 2, sizeQ: 8 },
    true,
  ),
  'subtract (lse)': emitSubtract([2, 4, 75, 16], true),
  'selected attend per row (8×8 blocks, causal)': emitSelectedRows(spec, {
    blockQ: 8,
    blockKV: 8,
    batches: 2,
    heads: 4,
  }),
  'selected attend per row (4×4 blocks, captured mask and score mod, DV 40)': emitSelectedRows(
    captured,
    { blockQ: 4, blockKV: 4, batches: 2, heads: 4 },
  ),
  'selected attend per row (16×16 blocks, no mask)': emitSelectedRows(noMask, {
    blockQ: 16,
    blockKV: 16,
    batches: 1,
    heads: 2,
  }),
};

describe('program kernel sources', () => {
  for (const [name, k] of Object.entries(kernels)) {
    it(name, () => {
      expect(k.source).toMatchSnapshot();
    });
  }

  it('is deterministic and names the kernel it declares', () => {
    expect(emitPool([2, 4, 75, 16], 16, true).source).toBe(kernels['pool (weighted)'].source);
    for (const k of Object.values(kernels)) {
      expect(k.source).toContain(
        `extern "C" __global__ void __launch_bounds__(NTHREADS) ${k.entry.name}(const TsrParams p)`,
      );
      expect(k.entry.threads).toBe(PROGRAM_THREADS);
    }
  });

  it('grids cover the work: one thread per element or row, one warp per select/compressed row', () => {
    expect(kernels['pool (weighted)'].grid[0]).toBe(Math.ceil((2 * 4 * 5 * 16) / 256));
    expect(kernels.merge.grid[0]).toBe(Math.ceil((2 * 4 * 75) / 256));
    expect(kernels.select.grid[0]).toBe(Math.ceil((2 * 4 * 5) / 8));
    expect(kernels['compressed (no selection)'].grid[0]).toBe(Math.ceil((2 * 4 * 75) / 8));
  });

  it('bakes the step into the source: bias/relu, causal, selection mode, lse', () => {
    expect(kernels['dense (bias, relu)'].source).toContain('fmaxf(acc, 0.f)');
    expect(emitDense([1, 1, 4, 4], 4, false, false).source).not.toContain('bias');
    const c = kernels['compressed (selection: exclude)'].source;
    expect(c).toContain('constexpr bool CAUSAL = true;');
    expect(c).toContain('p.lse[row] =');
    expect(kernels['compressed (no selection)'].source).not.toContain('p.lse');
    expect(c).toContain('if (chosen) continue;');
    const only = emitCompressed(
      { ...compressed, selectionMode: 'only' },
      [2, 4, 75, 16],
      [2, 2, 3, 16],
      16,
      {
        mode: 'only',
        blockQ: 16,
        numQBlocks: 5,
      },
    ).source;
    expect(only).toContain('if (!chosen) continue;');
    expect(kernels['compressed (no selection)'].source).not.toContain('sel_blocks');
    // Feature maps read the features the linear module wrote, not q and k; skipOwnBlock is baked in.
    const f = kernels['compressed (favor+ features, skipOwnBlock, selection: exclude)'].source;
    expect(f).toContain('constexpr int F = 64;');
    expect(f).toContain('constexpr int QC = 2,');
    expect(f).toContain('if (j == i / BLOCK) continue;');
    expect(f).toContain('logf(dot) + cq + ck[j]');
    expect(f).not.toMatch(/p\.q\b|p\.k\b|SCALE/);
    expect(c).not.toContain('skipOwnBlock');
    expect(kernels['compressed (elu+1 features, causal)'].source).not.toContain(
      'i / BLOCK) continue',
    );
  });

  it('group: one thread per row routes, one block per (batch, head) sorts; grouped attend: one warp per query row', () => {
    expect(kernels['group: route'].grid[0]).toBe(Math.ceil((2 * 4 * 75) / 256));
    expect(kernels['group: route'].source).toContain('if (s > best)'); // ties to the lower cluster
    const sort = kernels['group: sort'];
    expect(sort.grid).toEqual([8, 1, 1]);
    expect(sort.entry.dynamicSharedBytes).toBe(4 * (5 + 256));
    expect(sort.source).toContain('constexpr int N = 75, C = 5;');
    const g = kernels['grouped attend (softmax, causal)'];
    expect(g.grid[0]).toBe(Math.ceil((2 * 4 * 75) / 8));
    expect(g.entry.dynamicSharedBytes).toBe(8 * 32 * 8);
    expect(g.source).toContain('constexpr int SQ = 16, SKV = 8;');
    expect(g.source).toContain('constexpr bool CAUSAL = true;');
    expect(g.source).toContain('constexpr int VC = 2;');
    expect(g.source).toContain('p.lse[row] =');
    const f = kernels['grouped attend (favor+ features, no mask, no lse)'].source;
    expect(f).toContain('constexpr int F = 64;');
    expect(f).toContain('p.stab_k[kvRow + j]');
    expect(
      emitGroupedAttend({ ...grouped, features: 64, featureMap: 'favor+' }, true).source,
    ).toContain('logf(l) + m + p.stab_q[row]');
    expect(f).not.toContain('p.lse');
    expect(f).not.toMatch(/p\.q\b|p\.k\b|SCALE/);
    // A query grouping over the KV heads: query head h reads its KV head's ranks; over the query
    // heads (the default, or given explicitly) its own.
    const kvq =
      kernels['grouped attend (softmax, no mask, query grouping over the KV heads)'].source;
    expect(kvq).toContain('p.rank_q[(long long)(b * HK + h / GROUP) * N + i] / SQ');
    expect(kvq).not.toContain('p.rank_q[row]');
    expect(g.source).toContain('const int g = p.rank_q[row] / SQ;');
    expect(emitGroupedAttend({ ...grouped, headsGroupQ: 4 }, true).source).toBe(g.source);
    expect(() => emitGroupedAttend({ ...grouped, headsGroupQ: 3 }, true)).toThrow(
      /covers 3 heads; want 4 \(query\) or 2 \(KV\)/,
    );
    expect(kernels['subtract (lse)'].source).toContain('log1pf(-t)');
    expect(emitSubtract([1, 1, 4, 4], false).source).not.toContain('p.lse');
  });

  it('expand: one block; the starts drop the sub-blocks past the keys', () => {
    const k = kernels['expand selection (64-key blocks -> 32)'];
    expect(k.grid).toEqual([1, 1, 1]);
    expect(k.source).toContain('constexpr int ROWS = 600, PER = 3;');
    expect(k.source).toContain('constexpr int PAST = 1;');
    expect(emitExpandSelection({ rows: 8, blockKV: 64, seqKV: 128 }, 32).source).toContain(
      'constexpr int PAST = 0;',
    );
    expect(() => emitExpandSelection({ rows: 8, blockKV: 48, seqKV: 128 }, 32)).toThrow(/split/);
  });

  it('selected attend per row: one warp per query row, with the spec mask and score pipeline baked in', () => {
    const k = kernels['selected attend per row (8×8 blocks, causal)'];
    expect(k.grid[0]).toBe(Math.ceil((2 * 4 * 75) / 8));
    expect(k.source).toContain('constexpr int BQ = 8, BKV = 8, NQB = 10;');
    expect(k.source).toContain('constexpr int LB = 2, LH = 4;');
    expect(k.source).toContain('kv < SKV && tsr_mask(b, h, q, kv, p)');
    expect(k.source).toContain('__device__ __forceinline__ bool tsr_mask(');
    expect(k.source).toContain(`dot * ${String(Math.fround(0.25 * Math.LOG2E))}f`);
    const c = kernels['selected attend per row (4×4 blocks, captured mask and score mod, DV 40)'];
    expect(c.source).toContain('constexpr int VC = 2;');
    expect(c.entry.params.map((f) => f.name)).toEqual([
      'q',
      'k',
      'v',
      'out',
      'lse',
      'sel_start',
      'sel_blocks',
      't0',
      't1',
    ]);
    expect(c.source).toMatch(/p\.t0\[/);
    expect(c.source).toMatch(/p\.t1\[/);
    expect(c.source).toContain("// score modification 'alibi'");
    const n = kernels['selected attend per row (16×16 blocks, no mask)'].source;
    expect(n).not.toContain('tsr_mask');
    expect(n).toContain('if (kv < SKV) {');
    expect(() =>
      emitSelectedRows(
        defineAttention({ batch: 1, headsQ: 1, seqQ: 8, headDim: 8, dtype: 'bf16' }),
        {
          blockQ: 4,
          blockKV: 4,
          batches: 1,
          heads: 1,
        },
      ),
    ).toThrow(/f32/);
  });

  it('every program kernel compiles with nvcc -cubin for sm_80 and sm_90', async () => {
    const nvcc = findNvcc();
    if (!nvcc) throw new Error('nvcc not found (set NVCC or CUDA_HOME): this test needs it');
    // One translation unit: each module in its own namespace (C++ linkage keeps names apart).
    const unit = Object.values(kernels)
      .map((k, i) => `namespace tsr_m${i} {\n${k.source.replaceAll('extern "C" ', '')}}\n`)
      .join('\n');
    for (const arch of ['sm_80', 'sm_90']) {
      const { image } = await compileWithNvcc(unit, { arch, nvcc });
      expect(image.length).toBeGreaterThan(1000);
    }
  }, 300_000);
});
