// The JavaScript around the kernels — backend, pool, device tensors, the H100 bench — run end to
// end against a null device (test/fixtures/null-device.cjs: an addon that computes nothing), so
// that a device run is not the first time this code executes.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineAttention, InputError } from '@tessera/core';
import { causal } from '@tessera/patterns';
import { afterAll, describe, expect, it } from 'vitest';

const tmp = mkdtempSync(join(tmpdir(), 'tessera-null-device-'));
process.env.TESSERA_CUDA_ADDON = join(import.meta.dirname, 'fixtures', 'null-device.cjs');
process.env.TESSERA_CUDA_CACHE = join(tmp, 'cache');
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const { createCudaBackend, loadAddon } = await import('../src/index.js');
const calls = (loadAddon() as unknown as { calls: Record<string, number> }).calls;

describe('backend on a null device', () => {
  it('runs specs of every path, checks device tensors, and frees what it allocated', async () => {
    const cuda = await createCudaBackend();
    expect(cuda.device).toBe('Null H100');
    expect(cuda.compiler.compiler).toBe('nvrtc-13.0');
    const spec = defineAttention({
      batch: 1,
      headsQ: 4,
      headsKV: 2,
      seqQ: 100,
      headDim: 64,
      dtype: 'bf16',
      mask: causal(),
    });
    const n = 4 * 100 * 64;
    const x = Float32Array.from({ length: n }, (_, i) => Math.sin(i));
    const kv = x.subarray(0, n / 2);
    const launches = calls.launch as number;
    const { out, lse } = await cuda.run(spec, { q: x, k: kv, v: kv });
    expect(out.length).toBe(n);
    expect(lse.length).toBe(400);
    expect(calls.launch).toBe(launches + 1);
    const linear = defineAttention({
      batch: 1,
      headsQ: 2,
      seqQ: 50,
      headDim: 32,
      kernel: { type: 'linear', featureMap: 'favor+', features: 48 },
    });
    const y = Float32Array.from({ length: 2 * 50 * 32 }, (_, i) => Math.cos(i));
    await cuda.run(linear, { q: y, k: y, v: y });
    expect(calls.launch).toBe(launches + 4); // features(q), features(k), scan
    const q16 = await cuda.tensor(x, 'f16');
    await expect(cuda.run(spec, { q: q16, k: kv, v: kv })).rejects.toThrow(InputError);
    await expect(cuda.run(spec, { q: x.subarray(1), k: kv, v: kv })).rejects.toThrow(
      /q has 25599 elements/,
    );
    q16.dispose();
    expect(cuda.emitSource(spec)).toContain('mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32');
    const bench = await cuda.benchmark(spec, [{ q: x, k: kv, v: kv }], { warmup: 1, repeat: 3 });
    expect(bench.timesMs).toEqual([1.5, 1.5, 1.5]);
    expect(bench.extraDeviceBytes).toBeGreaterThan(0);
    await cuda.dispose();
    expect(calls.free).toBe(calls.alloc);
    await expect(cuda.run(spec, { q: x, k: kv, v: kv })).rejects.toThrow(/after dispose/);
  });

  it('runs the whole quick H100 bench without a script error', async () => {
    const { runAll } = await import('../bench/h100/sections.js');
    const outDir = join(tmp, 'out');
    const log = console.log;
    const lines: string[] = [];
    console.log = (...a: unknown[]) => lines.push(a.join(' '));
    let code: number;
    try {
      code = await runAll({ quick: true, conformanceOnly: false, outDir, here: tmp, python: null });
    } finally {
      console.log = log;
    }
    // A device that computes nothing fails the checks, but every section must run to its end.
    expect(code).toBe(1);
    const json = JSON.parse(readFileSync(join(outDir, 'cuda-bench.json'), 'utf8'));
    const rows = json.rows as { section: string; name: string; status: string }[];
    expect(rows.filter((r) => r.name.startsWith('section '))).toEqual([]);
    expect(new Set(rows.map((r) => r.section))).toEqual(new Set(['a', 'b', 'c', 'd']));
    expect(rows.find((r) => r.section === 'd')?.status).toBe('FAIL'); // zeros are not attention
    expect(lines.join('\n')).toContain('| § | case | ours | peer |');
  }, 300_000);

  it('runs the tensor-core sweep (--sweep) to its table', async () => {
    const { runAll } = await import('../bench/h100/sections.js');
    const { SWEEP_CASES, SWEEP_VARIANTS } = await import('../bench/h100/sweep.js');
    const outDir = join(tmp, 'sweep');
    const log = console.log;
    const lines: string[] = [];
    console.log = (...a: unknown[]) => lines.push(a.join(' '));
    let code: number;
    try {
      code = await runAll({
        quick: false,
        conformanceOnly: false,
        sweep: true,
        outDir,
        here: tmp,
        python: null,
      });
    } finally {
      console.log = log;
    }
    expect(code).toBe(1); // zeros from the null device fail the correctness checks
    const json = JSON.parse(readFileSync(join(outDir, 'cuda-sweep.json'), 'utf8'));
    expect(Object.keys(json.sweep.ms)).toEqual(SWEEP_CASES);
    for (const k of SWEEP_CASES)
      expect(Object.keys(json.sweep.ms[k])).toEqual(SWEEP_VARIANTS.map((v) => v.name));
    const text = lines.join('\n');
    for (const v of SWEEP_VARIANTS) expect(text).toContain(`| ${v.name} |`);
  }, 300_000);
});
