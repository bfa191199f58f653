// The backward section of the device bench (`run.mjs --backward`): (a) correctness of the device
// backward against the f64 reference on mid shapes; (b) forward + backward timing in bf16, B=1,
// H=32, D=128 (CUDA events, median of 5 after 2 warm-ups), with each kernel of the pass timed
// alone (pre-pass, dK/dV, dQ, tensor-gradient reduction) and a few tile-step variants of the
// tensor-core kernels; (c) the ALiBi slopes' gradient bit-identical across two runs. Prints a
// Markdown table; writes $OUT/cuda-backward.json.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compareGradients, GRADIENT_TOLERANCE } from '@tessera/conformance';
import {
  type AttentionSpec,
  defineAttention,
  roundToDtype,
  scoreMod,
  tensor,
  tensorSizes,
} from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { bigBird, causal, slidingWindow } from '@tessera/patterns';
import type { BackwardPlanOptions } from '../../src/backward/plan.js';
import { type CudaBackend, createCudaBackend } from '../../src/index.js';
import { referenceBackward } from '../../test/backward-reference.js';
import { fillRandom } from './device-data.js';

const log = (s: string) => console.log(`[cuda-backward] ${s}`);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1] as number;
};

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

const alibiSlopes = (h: number) =>
  tensor(Float32Array.from({ length: h }, (_, i) => 2 ** ((-8 * (i + 1)) / h)));
const alibi = (h: number) => {
  const slopes = alibiSlopes(h);
  return scoreMod(({ score, h: hh, q, kv }) => score.sub(slopes.at(hh).mul(q.sub(kv).toFloat())), {
    name: 'alibi-learnable',
  });
};

/**
 * Each kernel of one backward pass timed alone (median of 5): the launches `run` enqueues are
 * recorded once through the context, then replayed one at a time between events.
 */
async function kernelTimes(cuda: CudaBackend, run: () => void): Promise<Record<string, number>> {
  const ctx = cuda.context;
  const launch = ctx.launch;
  const calls: Parameters<typeof launch>[] = [];
  ctx.launch = (...a) => {
    calls.push(a);
    launch.apply(ctx, a);
  };
  try {
    run();
  } finally {
    ctx.launch = launch;
  }
  await cuda.synchronize();
  const times: Record<string, number> = {};
  for (const c of calls) {
    const name = /tsr_bwd_([a-z]+)_/.exec(c[1].name)?.[1] ?? c[1].name;
    const ms: number[] = [];
    for (let i = 0; i < 5; i++) ms.push(await cuda.cuda.time(() => launch.apply(ctx, c)));
    times[name] = median(ms);
  }
  return times;
}

const fmtKernels = (t: Record<string, number>) =>
  Object.entries(t)
    .map(([k, v]) => `${k} ${v.toFixed(3)}`)
    .join(', ');

async function correctness(cuda: CudaBackend, rows: string[], json: Record<string, unknown>) {
  const cpu = await createCpuBackend();
  const mid = { batch: 1, headsQ: 4, headsKV: 2, seqQ: 384, headDim: 64 } as const;
  const cases: [string, AttentionSpec][] = [
    ['f32 causal GQA 4/2', defineAttention({ ...mid, dtype: 'f32', mask: causal() })],
    ['bf16 causal GQA 4/2', defineAttention({ ...mid, dtype: 'bf16', mask: causal() })],
    [
      'f32 sliding window 64',
      defineAttention({ ...mid, dtype: 'f32', mask: slidingWindow(64, { causal: true }) }),
    ],
    [
      'bf16 sliding window 64, D128',
      defineAttention({
        ...mid,
        headDim: 128,
        dtype: 'bf16',
        mask: slidingWindow(64, { causal: true }),
      }),
    ],
    [
      'f32 causal + ALiBi slopes (grad)',
      defineAttention({ ...mid, dtype: 'f32', mask: causal(), scoreMod: alibi(4) }),
    ],
    [
      'bf16 causal + ALiBi slopes (grad), D128',
      defineAttention({ ...mid, headDim: 128, dtype: 'bf16', mask: causal(), scoreMod: alibi(4) }),
    ],
    [
      'bf16 dense MQA 4/1, seq 300 (tails)',
      defineAttention({ ...mid, headsKV: 1, seqQ: 300, dtype: 'bf16' }),
    ],
  ];
  const results: unknown[] = [];
  for (const [name, spec] of cases) {
    const sz = tensorSizes(spec);
    const r = (x: Float32Array) => roundToDtype(x, spec.dtype);
    const q = r(seeded(sz.q, 1, 2));
    const k = r(seeded(sz.k, 2, 2));
    const v = r(seeded(sz.v, 3));
    const { out, lse } = await cpu.run(spec, { q, k, v });
    const inputs = { q, k, v, out: r(out), lse, dOut: r(seeded(sz.out, 4)) };
    const got = await cuda.backward(spec, inputs);
    const ref = referenceBackward(spec, inputs);
    const cmp = compareGradients(got, ref, GRADIENT_TOLERANCE[spec.dtype], { spec, lse });
    const errs = cmp.errors.map((e) => `${e.name} ${e.relErr.toExponential(1)}`).join(', ');
    log(`${cmp.pass ? 'pass' : 'FAIL'} ${name}: ${errs} ${cmp.message}`);
    rows.push(`| ${name} | ${errs} | ${cmp.pass ? 'pass' : `FAIL ${cmp.message}`} |`);
    results.push({ name, pass: cmp.pass, errors: cmp.errors, message: cmp.message });
  }
  json.correctness = results;
}

async function timing(
  cuda: CudaBackend,
  rows: string[],
  json: Record<string, unknown>,
  quick: boolean,
) {
  const H = 32;
  const D = 128;
  const spec = (n: number, extra: Partial<Parameters<typeof defineAttention>[0]> = {}) =>
    defineAttention({ batch: 1, headsQ: H, seqQ: n, headDim: D, dtype: 'bf16', ...extra });
  const bb = (n: number) =>
    bigBird({ block: 128, window: 3, globalBlocks: 1, randomBlocks: 2, seed: 1, seqKV: n });
  const makeCases = (): [string, AttentionSpec, number][] => [
    ['dense 4k', spec(4096), 4096 * 4096],
    ['causal 4k', spec(4096, { mask: causal() }), (4096 * 4096) / 2],
    ['dense 16k', spec(16384), 16384 * 16384],
    ['causal 16k', spec(16384, { mask: causal() }), (16384 * 16384) / 2],
    [
      'causal 16k + ALiBi slopes (grad)',
      spec(16384, { mask: causal(), scoreMod: alibi(H) }),
      (16384 * 16384) / 2,
    ],
    ['window 1024 16k', spec(16384, { mask: slidingWindow(1024, { causal: true }) }), 16384 * 1024],
    ['BigBird 16k', spec(16384, { mask: bb(16384) }), 0],
    ['window 1024 64k', spec(65536, { mask: slidingWindow(1024, { causal: true }) }), 65536 * 1024],
    ['BigBird 64k', spec(65536, { mask: bb(65536) }), 0],
  ];
  const cases = makeCases();
  const out: unknown[] = [];
  const variants: [string, BackwardPlanOptions][] = [['default', {}]];
  if (!quick)
    variants.push(['dq step 64', { steps: { dq: 64 } }], ['dkdv step 16', { steps: { dkdv: 16 } }]);
  for (const [name, s0, pairs] of quick ? cases.slice(0, 5) : cases) {
    const sz = tensorSizes(s0);
    const q = cuda.empty('bf16', sz.q);
    const k = cuda.empty('bf16', sz.k);
    const v = cuda.empty('bf16', sz.v);
    const dOut = cuda.empty('bf16', sz.out);
    await fillRandom(cuda, q, 11, 2);
    await fillRandom(cuda, k, 12, 2);
    await fillRandom(cuda, v, 13);
    await fillRandom(cuda, dOut, 14);
    const fwd = cuda.outputsFor(s0);
    const pf = await cuda.prepare(s0);
    const f = () => pf.launch(q.ptr, k.ptr, v.ptr, fwd.out.ptr, fwd.lse.ptr);
    f();
    await cuda.synchronize();
    const fwdMs: number[] = [];
    for (let i = 0; i < 5; i++) fwdMs.push(await cuda.cuda.time(f));
    const fm = median(fwdMs);
    // Variants on the dense 4k and causal 16k cases only; a fresh spec object per variant, since
    // prepared passes are cached per spec and path.
    const tried = name === 'dense 4k' || name === 'causal 16k' ? variants : variants.slice(0, 1);
    for (const [variant, opts] of tried) {
      const s = variant === 'default' ? s0 : (makeCases().find((c) => c[0] === name)?.[1] ?? s0);
      const pb = await cuda.prepareBackward(s, opts);
      const g = cuda.gradientsFor(s);
      const bin = { q, k, v, out: fwd.out, lse: fwd.lse, dOut };
      await cuda.launchBackward(s, bin, g, opts); // checks the tensors once
      // The prepared launches enqueue synchronously, so the events bracket exactly the kernels.
      const b = () => pb.launch(bin, g);
      b();
      await cuda.synchronize();
      const bwdMs: number[] = [];
      for (let i = 0; i < 5; i++) bwdMs.push(await cuda.cuda.time(b));
      const kernels = await kernelTimes(cuda, b);
      const bm = median(bwdMs);
      const flops = pairs > 0 ? 4 * pairs * H * D * 2.5 : 0;
      const tflops = flops > 0 ? flops / (bm * 1e-3) / 1e12 : Number.NaN;
      let slopesIdentical: boolean | undefined;
      const tslot = g.grads.findIndex((x) => x !== null);
      if (tslot >= 0) {
        const a = await g.grads[tslot]?.toFloat32Array();
        b();
        const c = await g.grads[tslot]?.toFloat32Array();
        slopesIdentical =
          !!a && !!c && a.length === c.length && a.every((x, i) => Object.is(x, c[i]));
        const d = await g.dq.toFloat32Array();
        if (d.some((x) => !Number.isFinite(x))) log(`FAIL ${name}: non-finite dq`);
      }
      const label = variant === 'default' ? name : `${name} [${variant}]`;
      const line = `| ${label} | ${fm.toFixed(3)} | ${bm.toFixed(3)} | ${(fm + bm).toFixed(3)} | ${Number.isFinite(tflops) ? tflops.toFixed(0) : '–'} | ${fmtKernels(kernels)} | ${slopesIdentical === undefined ? '' : slopesIdentical ? 'slopes grad bit-identical' : 'slopes grad DIFFERS'} |`;
      log(line);
      rows.push(line);
      out.push({
        name,
        variant,
        forwardMs: fwdMs,
        backwardMs: bwdMs,
        kernelMs: kernels,
        backwardTflops: tflops,
        slopesIdentical,
      });
      for (const t of [g.dq, g.dk, g.dv, ...g.grads]) t?.dispose();
    }
    for (const t of [q, k, v, dOut, fwd.out, fwd.lse]) t.dispose();
  }
  json.timing = out;
}

export async function runBackwardBench(opts: {
  quick: boolean;
  outDir: string | null;
}): Promise<number> {
  const cuda = await createCudaBackend();
  const json: Record<string, unknown> = { device: cuda.device };
  const corr: string[] = [];
  const time: string[] = [];
  try {
    await correctness(cuda, corr, json);
    await timing(cuda, time, json, opts.quick);
  } finally {
    if (opts.outDir)
      writeFileSync(join(opts.outDir, 'cuda-backward.json'), JSON.stringify(json, null, 1));
    await cuda.dispose();
  }
  console.log(
    `\n## backward on ${json.device}\n\n| case | errors (rel. L2) | status |\n|---|---|---|\n${corr.join('\n')}`,
  );
  console.log(
    `\n| case (bf16, B=1, H=32, D=128) | forward ms | backward ms | fwd+bwd ms | bwd TFLOP/s (2.5× fwd FLOPs) | kernels alone, ms | |\n|---|---|---|---|---|---|---|\n${time.join('\n')}`,
  );
  return corr.some((r) => r.includes('FAIL')) ? 1 : 0;
}
