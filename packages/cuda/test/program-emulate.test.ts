// What is CUDA's own in running programs, on an emulated device (test/program-emulated-addon.cjs:
// the generated kernels compiled for the host and executed there): the selection expansion into
// 32-key blocks, a grouping's device buffers (bytes, download refused, freed), memory accounting
// and typed errors. Every step's results, the selections and groupings entry for entry, are
// checked against the cpu by the program catalogue (test/program-conformance.test.ts).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { programCases } from '@tessera/conformance';
import {
  defineAttention,
  defineProgram,
  InputError,
  runProgram,
  type Shape,
  UnsupportedError,
} from '@tessera/core';
import type { StepEnv } from '@tessera/core/backend';
import { type CpuValue, createCpuBackend } from '@tessera/cpu';
import { afterAll, describe, expect, it } from 'vitest';

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

  it('a grouping lives in two device buffers: bytes, download refused, freed (and rank/order as the cpu)', async () => {
    // 300 rows: two tiles of the sort kernel's 256 threads; rows 0..9 of every slice copy row 10.
    const C = 5;
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
  }, 300_000);

  it('frees every value it made and reports the peak', async () => {
    const c = programCases().find((x) => x.id === 'program/select-merge-gate/f32/causal-gaps');
    if (!c) throw new Error('no whole-program case');
    const { program, inputs } = c.build();
    const before = cuda.cuda.pool.inUse;
    await runProgram(cuda, program, inputs); // plans and kernels are cached by the first run
    const cached = cuda.cuda.pool.inUse;
    const r = await runProgram(cuda, program, inputs);
    expect(cuda.cuda.pool.inUse).toBe(cached);
    expect(cached).toBeGreaterThanOrEqual(before);
    const inputBytes = Object.values(inputs).reduce((s, x) => s + x.byteLength, 0);
    expect(r.peakBytes).toBeGreaterThan(inputBytes);
  }, 300_000);

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
