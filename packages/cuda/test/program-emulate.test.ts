// The CUDA program ops run end to end on an emulated device (test/program-emulated-addon.cjs: the
// generated kernels compiled for the host and executed there) against the cpu reference: every
// step alone, whole programs, the selection's entries exactly, memory accounting and typed errors.
// The same cases run on a GPU through `run.mjs --programs` (bench/h100/programs.ts), larger.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  defineAttention,
  defineProgram,
  runProgram,
  type Shape,
  type StepEnv,
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

  it('throws UnsupportedError naming the step when the kernel cannot walk the selection blocks (16-key blocks on the CUDA-core path)', async () => {
    const spec = defineAttention({ batch: 1, headsQ: 2, seqQ: 64, headDim: 8 });
    const program = defineProgram({
      inputs: { q: [1, 2, 64, 8], k: [1, 2, 64, 8], qp: [1, 2, 4, 8], kp: [1, 2, 4, 8] },
      steps: [
        {
          op: 'select',
          out: 's',
          q: 'qp',
          k: 'kp',
          spec,
          blockQ: 16,
          blockKV: 16,
          topK: 1,
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
      /attend 'o' cannot walk selection 's' \(blocks 16×16\)/,
    );
  }, 300_000);
});
