import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type {
  AttentionBackend,
  AttentionGradients,
  AttentionSpec,
  BackwardInputs,
} from '@tessera/core';
import { createCpuBackend, referenceRows } from '@tessera/cpu';
import { describe, expect, it, vi } from 'vitest';
import {
  alibiSlopes,
  type BackwardBenchmarking,
  type BackwardCaseResult,
  backwardFlops,
  buildCases,
  forwardFlops,
  main,
  markdown,
  measureBackward,
  measureCase,
} from '../src/index.js';

/**
 * Gradients of softmax attention written out in f64 over the whole N×N matrix (BHSD), for the
 * bench's dense, causal and causal + learnable ALiBi cases: an independent check of what the
 * harness feeds the backend and compares.
 */
function denseBackward(
  spec: AttentionSpec,
  inputs: BackwardInputs,
  opts: { causal: boolean; slopes?: readonly number[] },
): AttentionGradients {
  const { batch: B, headsQ: H, headsKV: HK, seqQ: N, seqKV: M, headDim: D } = spec;
  const { q, k, v, dOut } = inputs;
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  const dSlopes = new Float64Array(H);
  const qi = (b: number, h: number, i: number) => ((b * H + h) * N + i) * D;
  const ki = (b: number, h: number, j: number) => ((b * HK + h) * M + j) * D;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / (H / HK));
      for (let i = 0; i < N; i++) {
        const s = new Float64Array(M).fill(Number.NEGATIVE_INFINITY);
        for (let j = 0; j < M; j++) {
          if (opts.causal && j > i) continue;
          let dot = 0;
          for (let d = 0; d < D; d++)
            dot += (q[qi(b, h, i) + d] as number) * (k[ki(b, hk, j) + d] as number);
          s[j] = spec.scale * dot - (opts.slopes ? (opts.slopes[h] as number) * (i - j) : 0);
        }
        const max = Math.max(...s);
        let sum = 0;
        for (let j = 0; j < M; j++) sum += Math.exp((s[j] as number) - max);
        const p = s.map((x) => Math.exp(x - max) / sum);
        const dp = new Float64Array(M);
        let rowsum = 0;
        for (let j = 0; j < M; j++) {
          for (let d = 0; d < D; d++)
            dp[j] += (dOut[qi(b, h, i) + d] as number) * (v[ki(b, hk, j) + d] as number);
          rowsum += (p[j] as number) * (dp[j] as number);
        }
        for (let j = 0; j < M; j++) {
          const pj = p[j] as number;
          if (pj === 0) continue;
          const dsMod = pj * ((dp[j] as number) - rowsum);
          dSlopes[h] += dsMod * -(i - j);
          for (let d = 0; d < D; d++) {
            dq[qi(b, h, i) + d] += spec.scale * dsMod * (k[ki(b, hk, j) + d] as number);
            dk[ki(b, hk, j) + d] += spec.scale * dsMod * (q[qi(b, h, i) + d] as number);
            dv[ki(b, hk, j) + d] += pj * (dOut[qi(b, h, i) + d] as number);
          }
        }
      }
    }
  }
  return {
    dq: Float32Array.from(dq),
    dk: Float32Array.from(dk),
    dv: Float32Array.from(dv),
    grads: spec.tensors.map(() => (opts.slopes ? Float32Array.from(dSlopes) : null)),
  };
}

const shape = { batch: 1, heads: 2, headsKV: 1, dim: 8, dtype: 'f32' as const };

describe('the backward FLOP convention', () => {
  it('is 2.5 × 4·B·H·D per pair of the visited 64-blocks, counted here by brute force on a causal mask', () => {
    const seq = 150;
    const [c] = buildCases(['causal'], [seq], { ...shape, heads: 3, headsKV: 3, dim: 16 });
    const spec = c?.build() as AttentionSpec;
    // Every (q-block, kv-block) pair of 64 × 64 tiles holding at least one q ≥ kv is computed whole.
    let pairs = 0;
    for (let qb = 0; qb * 64 < seq; qb++) {
      for (let kb = 0; kb * 64 < seq; kb++) {
        const rows = Math.min(64, seq - qb * 64);
        const cols = Math.min(64, seq - kb * 64);
        const lastQ = qb * 64 + rows - 1;
        if (lastQ >= kb * 64) pairs += rows * cols;
      }
    }
    // 150 tokens: q-blocks of 64, 64, 22 visit 1, 2, 3 kv-blocks.
    expect(pairs).toBe(64 * 64 + 64 * 128 + 22 * 150);
    expect(forwardFlops(spec)).toBe(4 * 1 * 3 * pairs * 16);
    expect(backwardFlops(spec)).toBe(2.5 * 4 * 1 * 3 * pairs * 16);
  });
});

describe('measureBackward on the cpu backend', () => {
  it('times forward + backward and checks every gradient, the ALiBi slopes included', async () => {
    const backend = await createCpuBackend();
    const cases = buildCases(['dense', 'causal'], [40], shape, { backward: true });
    expect(cases.map((c) => c.variant)).toEqual(['dense', 'causal', 'causal-alibi-learned']);
    const results: BackwardCaseResult[] = [];
    for (const c of cases) {
      const opts = {
        causal: c.variant !== 'dense',
        ...(c.variant === 'causal-alibi-learned' ? { slopes: alibiSlopes(shape.heads) } : {}),
      };
      const r = await measureBackward(backend, c, {
        warmup: 0,
        repeat: 2,
        checkSeq: 64,
        reference: async (spec, inputs) => denseBackward(spec, inputs, opts),
      });
      expect(r.status, r.message).toBe('ok');
      expect(r.timing).toBe('wall');
      expect(r.fwdBwdMs?.n).toBe(2);
      expect(r.bwdMs).toBeCloseTo((r.fwdBwdMs?.median ?? 0) - (r.fwdMs?.median ?? 0), 9);
      expect(r.flops).toBe(backwardFlops(c.build()));
      expect(r.gradError?.status, r.gradError?.message).toBe('ok');
      expect(r.gradError?.seq).toBe(40);
      for (const x of [r.gradError?.dq, r.gradError?.dk, r.gradError?.dv])
        expect(x).toBeLessThan(1e-5);
      if (c.variant === 'causal-alibi-learned') {
        expect(r.gradError?.grads).toHaveLength(1);
        expect(r.gradError?.grads?.[0]).toBeLessThan(1e-5);
      } else expect(r.gradError?.grads).toEqual([]);
      const forward = await measureCase(backend, c, {
        warmup: 0,
        repeat: 1,
        baseline: false,
        sampleRows: 2,
        reference: referenceRows,
      });
      results.push({ ...forward, backward: r });
    }
    const md = markdown({
      schema: 'tessera-bench',
      version: 1,
      createdAt: '',
      command: 'test',
      machine: { node: '', platform: '', cpus: 1 },
      backends: [{ name: 'cpu', results }],
      peers: [
        {
          caseId: 'causal/40',
          variant: 'causal',
          seq: 40,
          peer: 'flex',
          mode: 'backward',
          status: 'ok',
          ms: 2,
        },
        {
          caseId: 'causal-alibi-learned/40',
          variant: 'causal-alibi-learned',
          seq: 40,
          peer: 'flex',
          mode: 'backward',
          status: 'ok',
          ms: 1400,
        },
      ],
    });
    expect(md).toContain('#### backward');
    expect(md).toMatch(/\| causal-alibi-learned\/40 \|.*\| [\d.]+× causal \|/);
    expect(md).toContain('= 700.0× its causal');
  });

  it('checks big cases on the same case at the check length', async () => {
    const backend = await createCpuBackend();
    const [c] = buildCases(['patterns'], [96], shape, { backward: true });
    const seen: number[] = [];
    const r = await measureBackward(backend, c as never, {
      warmup: 0,
      repeat: 1,
      checkSeq: 48,
      reference: async (spec, inputs) => {
        seen.push(spec.seqQ);
        // A deliberately wrong reference: dq off by 1 everywhere, so the error cannot be 0.
        const g = await (backend.backward as NonNullable<AttentionBackend['backward']>)(
          spec,
          inputs,
        );
        return { ...g, dq: g.dq.map((x) => x + 1) };
      },
    });
    expect(seen).toEqual([48]);
    expect(r.gradError?.seq).toBe(48);
    expect(r.gradError?.dq).toBeGreaterThan(0.1);
    expect(r.gradError?.dk).toBe(0);
  });

  it("uses a backend's device timing for backward where it offers one, and checks each shape once", async () => {
    const cpu = await createCpuBackend();
    const calls: number[] = [];
    const device: AttentionBackend & BackwardBenchmarking = {
      name: 'timed',
      run: (spec, inputs, options) => cpu.run(spec, inputs, options),
      backward: (spec, inputs, options) =>
        (cpu.backward as NonNullable<AttentionBackend['backward']>)(spec, inputs, options),
      benchmark: async (spec, sets, options) => ({
        timesMs: Array.from({ length: options.repeat }, () => 2),
        timing: 'device',
        outputs: await cpu.run(spec, sets[0] as (typeof sets)[number]),
      }),
      benchmarkBackward: async (_spec, sets, options) => {
        calls.push(sets.length);
        return {
          timesMs: [5, 7, 6].slice(0, options.repeat),
          timing: 'device',
          extraDeviceBytes: 4096,
        };
      },
      dispose: async () => {},
    };
    const checked = new Map();
    let references = 0;
    const reference = async (spec: AttentionSpec, inputs: BackwardInputs) => {
      references++;
      return (cpu.backward as NonNullable<AttentionBackend['backward']>)(spec, inputs);
    };
    const results = [];
    for (const c of buildCases(['causal'], [64, 96], shape))
      results.push(
        await measureBackward(device, c, {
          warmup: 0,
          repeat: 3,
          checkSeq: 32,
          reference,
          checked,
        }),
      );
    expect(calls).toEqual([2, 2]);
    expect(references).toBe(1);
    for (const r of results) {
      expect(r.timing).toBe('device');
      expect(r.bwdMs).toBe(6);
      expect(r.fwdMs?.median).toBe(2);
      expect(r.fwdBwdMs?.median).toBe(8);
      expect(r.extraDeviceBytes).toBe(4096);
      expect(r.tflops).toBeCloseTo(r.flops / 6e-3 / 1e12, 12);
      expect(r.gradError?.seq).toBe(32);
    }
  });

  it('reports a backend without backward, and a missing reference, instead of failing', async () => {
    const cpu = await createCpuBackend();
    const forwardOnly: AttentionBackend = {
      name: 'forward-only',
      run: (spec, inputs, options) => cpu.run(spec, inputs, options),
      dispose: async () => {},
    };
    const [c] = buildCases(['causal'], [32], shape);
    const r = await measureBackward(forwardOnly, c as never, {
      warmup: 0,
      repeat: 1,
      checkSeq: 32,
    });
    expect(r.status).toBe('no-backward');
    expect(r.message).toBe('forward-only has no backward()');
    const noRef = await measureBackward(cpu, c as never, { warmup: 0, repeat: 1, checkSeq: 32 });
    expect(noRef.status).toBe('ok');
    expect(noRef.gradError?.status).toBe('no-reference');
  });
});

describe('the CLI in backward mode', () => {
  it('writes the backward columns and gradient errors against the cpu reference', async () => {
    const out = mkdtempSync(join(tmpdir(), 'tessera-bench-bwd-'));
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    const err = vi.spyOn(console, 'error').mockImplementation(() => {});
    const code = await main(
      'node tessera-bench --backend cpu --suite causal,patterns --seq 48 --repeat 1 --warmup 0 --heads 2 --kv-heads 1 --dim 8 --no-baseline --no-progress --backward --grad-check-seq 32 --out'
        .split(' ')
        .concat(out),
    );
    log.mockRestore();
    err.mockRestore();
    expect(code).toBe(0);
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    const results = report.backends[0].results as BackwardCaseResult[];
    expect(results.map((r) => r.id)).toEqual([
      'causal/48',
      'causal-alibi-learned/48',
      'sliding-window-12/48',
      'bigbird/48',
    ]);
    for (const r of results) {
      expect(r.backward?.status).toBe('ok');
      expect(r.backward?.tflops).toBeGreaterThan(0);
      expect(r.backward?.gradError?.seq).toBe(32);
      expect(r.backward?.gradError?.max).toBeLessThan(1e-6);
    }
    expect(results[1]?.backward?.gradError?.grads).toHaveLength(1);
    const md = readFileSync(join(out, 'report.md'), 'utf8');
    expect(md).toContain('| bwd TFLOP/s |');
    expect(md).toContain('@32');
  });
  it('--only keeps the named variants, and says so when it keeps none', async () => {
    const out = mkdtempSync(join(tmpdir(), 'tessera-bench-only-'));
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    const err = vi.spyOn(console, 'error').mockImplementation(() => {});
    const args =
      'node tessera-bench --backend cpu --suite causal --seq 32 --repeat 1 --warmup 0 --heads 1 --dim 4 --no-baseline --no-progress --backward'.split(
        ' ',
      );
    expect(await main([...args, '--only', 'causal', '--out', out])).toBe(0);
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    expect(report.backends[0].results.map((r: { id: string }) => r.id)).toEqual(['causal/32']);
    expect(await main([...args, '--only', 'nope'])).toBe(2);
    expect(err.mock.calls.flat().join('\n')).toContain(
      'error: --only nope keeps no case (variants here: causal, causal-alibi-learned)',
    );
    log.mockRestore();
    err.mockRestore();
  });
});
