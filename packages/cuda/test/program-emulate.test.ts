// The CUDA program ops run end to end on an emulated device (test/program-emulated-addon.cjs: the
// generated kernels compiled for the host and executed there) against the cpu reference: every
// step alone, whole programs, the selection's entries and the grouping's rank/order exactly, memory
// accounting and typed errors.
// The same cases run on a GPU through `run.mjs --programs` (bench/h100/programs.ts), larger.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  defineAttention,
  defineProgram,
  InputError,
  type Mask,
  maskMod,
  runProgram,
  type ScoreMod,
  type Shape,
  type StepEnv,
  scoreMod,
  tensor,
  UnsupportedError,
} from '@tessera/core';
import { type CpuValue, createCpuBackend } from '@tessera/cpu';
import { causal } from '@tessera/patterns';
import { afterAll, describe, expect, it } from 'vitest';
import { checkProgram, programCases } from '../bench/h100/programs.js';

const tmp = mkdtempSync(join(tmpdir(), 'tessera-program-emu-'));
process.env.TESSERA_CUDA_ADDON = join(import.meta.dirname, 'program-emulated-addon.cjs');
process.env.TESSERA_CUDA_CACHE = join(tmp, 'cache');
process.env.TESSERA_EMU_DIR = join(tmp, 'emu');
const { createCudaBackend } = await import('../src/index.js');
const { packParams } = await import('../src/emit/index.js');
const { emitExpandSelection } = await import('../src/program/emit-attention.js');
const cuda = await createCudaBackend();
const cpu = await createCpuBackend();
afterAll(async () => {
  await cuda.dispose();
  rmSync(tmp, { recursive: true, force: true });
});

function seeded(n: number, seed: number, amp = 1): Float32Array {
  let s = (seed * 2654435761) >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = ((s / 4294967296) * 2 - 1) * amp;
  }
  return out;
}

describe('program ops on the emulated device vs cpu', () => {
  // Concurrent: one case's launches run while another's kernels compile (launches are atomic).
  for (const c of programCases('small')) {
    it.concurrent(c.name, async () => {
      const r = await checkProgram(cuda, cpu, c);
      expect(r.message).toMatch(/^worst/);
      expect(r.pass).toBe(true);
    }, 300_000);
  }

  it('select writes exactly the cpu reference blocks (GQA, ragged, causal, local + top-k)', async () => {
    const spec = defineAttention({
      batch: 2,
      headsQ: 4,
      headsKV: 2,
      seqQ: 150,
      headDim: 8,
      mask: causal(),
    });
    const nq = Math.ceil(150 / 16);
    const nk = Math.ceil(150 / 32);
    const program = defineProgram({
      inputs: { qp: [2, 4, nq, 8], kp: [2, 2, nk, 8] },
      steps: [
        {
          op: 'select',
          out: 's',
          q: 'qp',
          k: 'kp',
          spec,
          blockQ: 16,
          blockKV: 32,
          topK: 3,
          local: 1,
        },
      ],
      outputs: ['qp'],
    });
    // Ties on purpose: in batch 0 every key summary of a head is the same, so every unforced
    // candidate ties and the lower blocks must win; batch 1 is random.
    const kp = seeded(2 * 2 * nk * 8, 7, 2);
    for (let hk = 0; hk < 2; hk++)
      for (let j = 1; j < nk; j++) kp.copyWithin((hk * nk + j) * 8, hk * nk * 8, (hk * nk + 1) * 8);
    const data = { qp: seeded(2 * 4 * nq * 8, 5, 2), kp };
    const env = <T>(values: Map<string, T>): StepEnv<T> => ({
      get: (n) => values.get(n) as T,
      shape: (n) => program.shapes[n] as Shape,
    });
    const step = program.steps[0] as Parameters<typeof cuda.program.step>[0];
    const dv = new Map(
      await Promise.all(
        Object.entries(data).map(
          async ([n, x]) => [n, await cuda.program.upload(x, program.shapes[n] as Shape)] as const,
        ),
      ),
    );
    const got = (await cuda.program.step(step, env(dv))).s;
    const cv = new Map<string, CpuValue>(
      await Promise.all(
        Object.entries(data).map(
          async ([n, x]) =>
            [n, (await cpu.program?.upload(x, program.shapes[n] as Shape)) as CpuValue] as const,
        ),
      ),
    );
    const want = (await cpu.program?.step(step, env(cv)))?.s as CpuValue;
    if (got?.kind !== 'selection' || want.kind !== 'selection') throw new Error('not selections');
    expect(Array.from(got.layout.rowStart)).toEqual(Array.from(want.layout.rowStart));
    const entries = new Int32Array(want.layout.kvBlocks.length);
    await cuda.cuda.download(got.kvBlocks, entries);
    expect(Array.from(entries)).toEqual(Array.from(want.layout.kvBlocks));
    const full = new Uint8Array(want.layout.full.length);
    await cuda.cuda.download(got.full, full);
    expect(Array.from(full)).toEqual(Array.from(want.layout.full));
    expect(got.layout.batches).toBe(2);
    expect(got.layout.heads).toBe(4);
    expect(cuda.program.bytes(got)).toBeGreaterThanOrEqual(4 * (nq * 8 + 1) + 5 * entries.length);
    cuda.program.free(got);
    for (const v of dv.values()) cuda.program.free(v);
  }, 300_000);

  it('expands a selection into 32-key blocks on the device: sub-blocks in order, none past the keys', async () => {
    // 600 rows (several per thread, so the drop counts of earlier threads must be added up);
    // 160 keys: 64-key blocks 0..2, 32-key blocks 0..4, so block 2 loses its second half.
    const rows = 600;
    const starts = [0];
    const entries: number[] = [];
    const pick = seeded(rows * 3, 11);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < 3; j++) if ((pick[r * 3 + j] as number) > 0) entries.push(j);
      starts.push(entries.length);
    }
    const wantStarts = [0];
    const wantEntries: number[] = [];
    for (let r = 0; r < rows; r++) {
      for (const j of entries.slice(starts[r], starts[r + 1]))
        for (const s of [2 * j, 2 * j + 1]) if (s * 32 < 160) wantEntries.push(s);
      wantStarts.push(wantEntries.length);
    }
    expect(wantEntries.length).toBeLessThan(2 * entries.length); // some rows drop a sub-block
    const k = emitExpandSelection({ rows, blockKV: 64, seqKV: 160 }, 32);
    const put = async (a: Int32Array) => {
      const b = cuda.cuda.pool.alloc(Math.max(4, a.byteLength));
      await cuda.cuda.upload(b, a);
      return b;
    };
    const selStart = await put(Int32Array.from(starts));
    const selBlocks = await put(Int32Array.from(entries));
    const drops = cuda.cuda.pool.alloc(4 * 256);
    const outStart = cuda.cuda.pool.alloc(4 * (rows + 1));
    const outBlocks = cuda.cuda.pool.alloc(4 * 2 * entries.length);
    const { functions } = await cuda.loadModule({ source: k.source, kernels: [k.entry] }, 'expand');
    const params = packParams(k.entry.params, {
      sel_start: selStart.ptr,
      sel_blocks: selBlocks.ptr,
      drops: drops.ptr,
      out_start: outStart.ptr,
      out_blocks: outBlocks.ptr,
    });
    expect(k.grid).toEqual([1, 1, 1]);
    cuda.cuda.addon.launch(functions[0] as bigint, k.grid, [256, 1, 1], 0, 0n, params);
    const gotStarts = new Int32Array(rows + 1);
    await cuda.cuda.download(outStart, gotStarts);
    const gotEntries = new Int32Array(wantEntries.length);
    await cuda.cuda.download(outBlocks, gotEntries);
    expect(Array.from(gotStarts)).toEqual(wantStarts);
    expect(Array.from(gotEntries)).toEqual(wantEntries);
    for (const b of [selStart, selBlocks, drops, outStart, outBlocks]) b.release();
  }, 300_000);

  /** Runs one step on both backends with `data` uploaded; returns both results and a cleanup. */
  async function stepBoth(
    program: ReturnType<typeof defineProgram>,
    data: Record<string, Float32Array>,
    index = 0,
  ) {
    const env = <T>(values: Map<string, T>): StepEnv<T> => ({
      get: (n) => values.get(n) as T,
      shape: (n) => program.shapes[n] as Shape,
    });
    const step = program.steps[index] as Parameters<typeof cuda.program.step>[0];
    const dv = new Map<string, Awaited<ReturnType<typeof cuda.program.upload>>>();
    const cv = new Map<string, CpuValue>();
    for (const [n, x] of Object.entries(data)) {
      dv.set(n, await cuda.program.upload(x, program.shapes[n] as Shape));
      cv.set(n, (await cpu.program?.upload(x, program.shapes[n] as Shape)) as CpuValue);
    }
    const got = await cuda.program.step(step, env(dv));
    const want = (await cpu.program?.step(step, env(cv))) as Record<string, CpuValue>;
    const free = () => {
      for (const v of [...dv.values(), ...Object.values(got)]) cuda.program.free(v);
    };
    return { got, want, free };
  }

  it('group writes exactly the cpu reference rank and order (several tiles, ragged, empty clusters, ties)', async () => {
    // 300 rows: two tiles of the sort kernel's 256 threads. 5 clusters, and 400 (most stay
    // empty). Rows 0..9 of every slice are copies of row 10, so equal rows must keep row order.
    for (const C of [5, 400]) {
      const program = defineProgram({
        inputs: { x: [2, 3, 300, 8], c: [1, 3, C, 8] },
        steps: [{ op: 'group', out: 'g', x: 'x', centroids: 'c', size: 7 }],
        outputs: ['x'],
      });
      const x = seeded(2 * 3 * 300 * 8, 21 + C);
      for (let s = 0; s < 6; s++)
        for (let t = 0; t < 10; t++)
          x.copyWithin((s * 300 + t) * 8, (s * 300 + 10) * 8, (s * 300 + 11) * 8);
      const { got, want, free } = await stepBoth(program, { x, c: seeded(3 * C * 8, 22 + C) });
      const g = got.g;
      const w = want.g;
      if (g?.kind !== 'grouping' || w?.kind !== 'grouping') throw new Error('not groupings');
      const rank = new Int32Array(2 * 3 * 300);
      const order = new Int32Array(2 * 3 * 300);
      await cuda.cuda.download(g.rank, rank);
      await cuda.cuda.download(g.order, order);
      expect(Array.from(rank)).toEqual(Array.from(w.grouping.rank));
      expect(Array.from(order)).toEqual(Array.from(w.grouping.order));
      expect(g.size).toBe(7);
      expect(cuda.program.bytes(g)).toBe(2 * 4 * 2 * 3 * 300);
      await expect(cuda.program.download(g)).rejects.toThrow(InputError);
      await expect(cuda.program.download(g)).rejects.toThrow(/grouping cannot be downloaded/);
      const before = cuda.cuda.pool.inUse;
      free();
      expect(cuda.cuda.pool.inUse).toBeLessThan(before);
    }
  }, 300_000);

  // One grouping of the keys (over the KV heads) passed as both groupQ and groupKV under GQA 4/2:
  // query head h reads the ranks of its KV head h / 2. 45 rows in groups of 6 (ragged: the last
  // group holds 3). Tolerance: |got − want| ≤ 2e-4·(1 + |want|), −∞ exactly.
  for (const isCausal of [true, false]) {
    it(`one grouping of the keys serves queries too (GQA 4/2, ragged, ${isCausal ? 'causal: no empty row' : 'no mask'}) vs cpu`, async () => {
      const [B, H, HK, N, D, C, size] = [2, 4, 2, 45, 8, 3, 6];
      const spec = defineAttention({
        batch: B,
        headsQ: H,
        headsKV: HK,
        seqQ: N,
        headDim: D,
        ...(isCausal ? { mask: causal() } : {}),
      });
      const program = defineProgram({
        inputs: { q: [B, H, N, D], k: [B, HK, N, D], v: [B, HK, N, D], c: [1, HK, C, D] },
        steps: [
          { op: 'group', out: 'g', x: 'k', centroids: 'c', size },
          {
            op: 'attend',
            out: 'o',
            lse: 'l',
            spec,
            q: 'q',
            k: 'k',
            v: 'v',
            groupQ: 'g',
            groupKV: 'g',
          },
        ],
        outputs: ['o', 'l'],
      });
      const inputs = {
        q: seeded(B * H * N * D, 41, 2),
        k: seeded(B * HK * N * D, 42, 2),
        v: seeded(B * HK * N * D, 43),
        c: seeded(HK * C * D, 44),
      };
      const got = await runProgram(cuda, program, inputs);
      const want = await runProgram(cpu, program, inputs);
      const [o, l, wo, wl] = [got.outputs.o, got.outputs.l, want.outputs.o, want.outputs.l].map(
        (x) => x as Float32Array,
      ) as [Float32Array, Float32Array, Float32Array, Float32Array];
      let empty = 0;
      for (let r = 0; r < B * H * N; r++) {
        const w = wl[r] as number;
        if (w === -Infinity) empty++;
        if (w === -Infinity || l[r] === -Infinity) expect(l[r]).toBe(w);
        else expect(Math.abs((l[r] as number) - w)).toBeLessThanOrEqual(2e-4 * (1 + Math.abs(w)));
      }
      for (let i = 0; i < wo.length; i++) {
        const w = wo[i] as number;
        expect(Math.abs((o[i] as number) - w)).toBeLessThanOrEqual(2e-4 * (1 + Math.abs(w)));
      }
      // Every token's own key is in its group, so no row is empty (causal or not).
      expect(empty).toBe(0);
      expect(l.every((x) => Number.isFinite(x))).toBe(true);
    }, 300_000);
  }

  it('subtract: empty whole, empty part, part = whole and normal rows vs cpu (−∞ exactly)', async () => {
    const program = defineProgram({
      inputs: { ow: [1, 2, 40, 8], lw: [1, 2, 40, 1], op: [1, 2, 40, 8], lp: [1, 2, 40, 1] },
      steps: [
        {
          op: 'subtract',
          out: 'o',
          lse: 'l',
          whole: { out: 'ow', lse: 'lw' },
          part: { out: 'op', lse: 'lp' },
        },
      ],
      outputs: ['o', 'l'],
    });
    const lw = seeded(80, 31, 3);
    const lp = seeded(80, 32, 3).map((x, r) => {
      const l = lw[r] as number;
      return [-Infinity, l, l - 0.1 - Math.abs(x), l + Math.abs(x)][r % 4] as number;
    });
    for (let r = 4; r < 80; r += 9) lw[r] = -Infinity; // empty wholes (some with an empty part)
    const { got, want, free } = await stepBoth(program, {
      ow: seeded(640, 33),
      lw,
      op: seeded(640, 34),
      lp,
    });
    const download = async (v: (typeof got)[string]) => cuda.program.download(v as never);
    const o = await download(got.o);
    const l = await download(got.l);
    const wo = want.o as Extract<CpuValue, { kind: 'tensor' }>;
    const wl = want.l as Extract<CpuValue, { kind: 'tensor' }>;
    let empty = 0;
    for (let r = 0; r < 80; r++) {
      const wantL = wl.data[r] as number;
      if (wantL === -Infinity) {
        empty++;
        expect(l[r]).toBe(-Infinity);
      } else expect(Math.abs((l[r] as number) - wantL)).toBeLessThan(1e-5 * (1 + Math.abs(wantL)));
    }
    expect(empty).toBeGreaterThan(30); // t = 1, t > 1 and the empty wholes
    for (let i = 0; i < 640; i++) {
      const w = wo.data[i] as number;
      expect(Math.abs((o[i] as number) - w)).toBeLessThan(1e-4 * (1 + Math.abs(w)));
    }
    free();
  }, 300_000);

  it('frees every value it made and reports the peak', async () => {
    const c = programCases('small').find((x) => x.name.startsWith('program: pool'));
    if (!c) throw new Error('no whole-program case');
    const before = cuda.cuda.pool.inUse;
    await runProgram(cuda, c.program, c.inputs); // plans and kernels are cached by the first run
    const cached = cuda.cuda.pool.inUse;
    const r = await runProgram(cuda, c.program, c.inputs);
    expect(cuda.cuda.pool.inUse).toBe(cached);
    expect(cached).toBeGreaterThanOrEqual(before);
    const inputBytes = Object.values(c.inputs).reduce((s, x) => s + x.byteLength, 0);
    expect(r.peakBytes).toBeGreaterThan(inputBytes);
  }, 300_000);

  // Selections whose key blocks the flash kernel cannot take (fewer than 32 keys, or not a multiple
  // of 32) run the per-row kernel: select (on random block summaries) → attend(selection) vs the
  // cpu reference, out and
  // lse. Ragged sequences (the last block short), GQA 4/2, causal and not, blockQ ≠ blockKV, a
  // mask that empties whole rows (earlier blocks: query block 0 has no candidate), a sliding
  // window, and a captured-tensor mask + score modification (document ids, ALiBi slopes).
  // Tolerance: |got − want| ≤ 2e-4·(1 + |want|); −∞ exactly.
  const slopes = tensor(Float32Array.from({ length: 4 }, (_, h) => 2 ** -(h + 1)));
  const docs = tensor(Int32Array.from({ length: 45 }, (_, i) => Math.floor(i / 13)));
  const smallBlocks: {
    name: string;
    S: number;
    bq: number;
    bkv: number;
    topK: number;
    local: number;
    H?: number;
    HK?: number;
    DV?: number;
    mask?: Mask;
    scoreMod?: ScoreMod;
    /** Rows the mask leaves without a key in every selection (−∞ lse). */
    empty?: number;
  }[] = [
    { name: '4×4, causal', S: 45, bq: 4, bkv: 4, topK: 3, local: 1, mask: causal() },
    { name: '8×8, no mask', S: 45, bq: 8, bkv: 8, topK: 2, local: 0 },
    { name: '8×8, causal, DV 40', S: 45, bq: 8, bkv: 8, topK: 3, local: 1, DV: 40, mask: causal() },
    {
      name: '8×4 (blockQ ≠ blockKV), causal',
      S: 45,
      bq: 8,
      bkv: 4,
      topK: 4,
      local: 1,
      mask: causal(),
    },
    { name: '4×8 (blockQ ≠ blockKV), no mask', S: 45, bq: 4, bkv: 8, topK: 2, local: 0 },
    {
      name: '16×48 (not a multiple of 32), causal',
      S: 100,
      bq: 16,
      bkv: 48,
      topK: 2,
      local: 1,
      mask: causal(),
    },
    { name: '16×16, no mask, MHA', S: 64, bq: 16, bkv: 16, topK: 1, local: 0, H: 2, HK: 2 },
    {
      name: '8×8, earlier blocks (empty first block)',
      S: 45,
      bq: 8,
      bkv: 8,
      topK: 2,
      local: 0,
      mask: maskMod(({ q, kv }) => kv.lt(q.div(8).mul(8)), { name: 'earlier-blocks(8)' }),
      empty: 2 * 4 * 8,
    },
    {
      name: '4×4, sliding window 6',
      S: 45,
      bq: 4,
      bkv: 4,
      topK: 2,
      local: 1,
      mask: maskMod(({ q, kv }) => q.ge(kv).and(q.sub(kv).lt(6)), { name: 'window-6' }),
    },
    {
      name: '4×4, document-causal (captured ids) + ALiBi (captured slopes)',
      S: 45,
      bq: 4,
      bkv: 4,
      topK: 3,
      local: 1,
      mask: maskMod(({ q, kv }) => docs.at(q).eq(docs.at(kv)).and(q.ge(kv)), { name: 'doc' }),
      scoreMod: scoreMod(
        ({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).toFloat())),
        {
          name: 'alibi',
        },
      ),
    },
  ];
  for (const c of smallBlocks) {
    it.concurrent(`attend on a selection of ${c.name}${c.H === c.HK && c.H !== undefined ? '' : ', GQA 4/2'}, S=${c.S}: per-row kernel vs cpu`, async () => {
      const [B, H, HK, N, D, DV] = [2, c.H ?? 4, c.HK ?? 2, c.S, 8, c.DV ?? 8];
      const spec = defineAttention({
        batch: B,
        headsQ: H,
        headsKV: HK,
        seqQ: N,
        headDim: D,
        headDimV: DV,
        ...(c.mask ? { mask: c.mask } : {}),
        ...(c.scoreMod ? { scoreMod: c.scoreMod } : {}),
      });
      const program = defineProgram({
        inputs: {
          q: [B, H, N, D],
          k: [B, HK, N, D],
          v: [B, HK, N, DV],
          qp: [B, H, Math.ceil(N / c.bq), D],
          kp: [B, HK, Math.ceil(N / c.bkv), D],
        },
        steps: [
          {
            op: 'select',
            out: 's',
            q: 'qp',
            k: 'kp',
            spec,
            blockQ: c.bq,
            blockKV: c.bkv,
            topK: c.topK,
            local: c.local,
          },
          { op: 'attend', out: 'o', lse: 'l', spec, q: 'q', k: 'k', v: 'v', selection: 's' },
        ],
        outputs: ['o', 'l'],
      });
      const inputs = {
        q: seeded(B * H * N * D, 61, 2),
        k: seeded(B * HK * N * D, 62, 2),
        v: seeded(B * HK * N * DV, 63),
        qp: seeded(B * H * Math.ceil(N / c.bq) * D, 64),
        kp: seeded(B * HK * Math.ceil(N / c.bkv) * D, 65),
      };
      const got = await runProgram(cuda, program, inputs);
      const want = await runProgram(cpu, program, inputs);
      const [o, l, wo, wl] = [got.outputs.o, got.outputs.l, want.outputs.o, want.outputs.l].map(
        (x) => x as Float32Array,
      ) as [Float32Array, Float32Array, Float32Array, Float32Array];
      expect(o.length).toBe(B * H * N * DV);
      let empty = 0;
      for (let r = 0; r < B * H * N; r++) {
        const w = wl[r] as number;
        if (w === -Infinity) empty++;
        if (w === -Infinity || l[r] === -Infinity) expect(l[r]).toBe(w);
        else expect(Math.abs((l[r] as number) - w)).toBeLessThanOrEqual(2e-4 * (1 + Math.abs(w)));
      }
      for (let i = 0; i < wo.length; i++) {
        const w = wo[i] as number;
        expect(Math.abs((o[i] as number) - w)).toBeLessThanOrEqual(2e-4 * (1 + Math.abs(w)));
      }
      expect(empty).toBe(c.empty ?? 0);
      // The selection leaves keys out: the result differs from attending to every key.
      const dense = defineProgram({
        inputs: {
          q: program.inputs.q as Shape,
          k: program.inputs.k as Shape,
          v: program.inputs.v as Shape,
        },
        steps: [{ op: 'attend', out: 'o', lse: 'l', spec, q: 'q', k: 'k', v: 'v' }],
        outputs: ['l'],
      });
      const { q, k, v } = inputs;
      const all = (await runProgram(cpu, dense, { q, k, v })).outputs.l as Float32Array;
      expect(all.some((x, r) => Math.abs(x - (wl[r] as number)) > 1e-3)).toBe(true);
    }, 300_000);
  }

  it('refuses a 16-bit spec on a selection of 8-key blocks (UnsupportedError naming the dtype)', async () => {
    const spec = defineAttention({ batch: 1, headsQ: 2, seqQ: 64, headDim: 8, dtype: 'bf16' });
    const program = defineProgram({
      inputs: { q: [1, 2, 64, 8], k: [1, 2, 64, 8], qp: [1, 2, 8, 8], kp: [1, 2, 8, 8] },
      steps: [
        {
          op: 'select',
          out: 's',
          q: 'qp',
          k: 'kp',
          spec,
          blockQ: 8,
          blockKV: 8,
          topK: 2,
          local: 0,
        },
        { op: 'attend', out: 'o', spec, q: 'q', k: 'k', v: 'k', selection: 's' },
      ],
      outputs: ['o'],
    });
    const inputs = Object.fromEntries(
      Object.entries(program.inputs).map(([n, s], i) => [
        n,
        seeded(s[0] * s[1] * s[2] * s[3], i + 1),
      ]),
    );
    await expect(runProgram(cuda, program, inputs)).rejects.toThrow(UnsupportedError);
    await expect(runProgram(cuda, program, inputs)).rejects.toThrow(
      /attend 'o' cannot walk selection 's' \(blocks 8×8\).*f32 specs only \(got dtype 'bf16'\)/,
    );
  }, 300_000);
});
