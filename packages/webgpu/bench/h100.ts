/**
 * The WebGPU measurement: fused kernel vs the naive 3-pass baseline, f32, B=1, H=16, D=64:
 * dense and causal at N = 1024, 4096, 16384; sliding window 512 (causal) at N = 65536. For each
 * case and each tile config: median ms (GPU timestamps when available), TFLOP/s over the pairs
 * the kernel visits (core's estimateCost), device bytes, and the max error against an f64 CPU
 * reference on sampled rows. Then a quick correctness pass of the conformance catalogue.
 *
 *   node .device-bundle/webgpu/run.mjs [--quick] [--configs 64x32r1,64x16r2u,...] [--repeat 10]
 *        [--cases dense-4096,...] [--no-catalogue] [--catalogue-filter causal] [--unsafe]
 *        [--backward]  (only the backward: its time beside the forward's on dense and causal at
 *                       N = 1024 and 4096, then the gradient catalogue, ci profile, vs the cpu)
 *
 * A config is blockQ x blockKV, r<rows per thread>, then optional flags: u = unrolled loops,
 * p = queries in registers (private) instead of workgroup memory.
 */

import { conformanceCases, gradientCases, runCase, runGradientCase } from '@tessera/conformance';
import {
  type AttentionSpec,
  blockLayout,
  defineAttention,
  elementIndex,
  estimateCost,
  kvHeadOf,
  maskMod,
  ResourceLimitError,
  TesseraError,
} from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { create } from 'webgpu';
import { createWebGpuBackend, type WebGpuBackend, type WebGpuRunOptions } from '../src/index.js';
import { median, timeRuns } from '../src/timing.js';

const args = process.argv.slice(2);
const flag = (name: string): boolean => args.includes(`--${name}`);
const option = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const quick = flag('quick');
const repeat = Number(option('repeat') ?? (quick ? 3 : 10));
const warmup = quick ? 1 : 3;
const sampleRows = Number(option('rows') ?? 8);

function parseConfig(text: string): WebGpuRunOptions & { label: string } {
  const m = /^(\d+)x(\d+)r(\d+)([up]*)$/.exec(text.trim());
  if (!m) throw new Error(`bad config '${text}' (want e.g. 64x32r1, 64x16r2u, 32x32r1p)`);
  return {
    label: text.trim(),
    blockQ: Number(m[1]),
    blockKV: Number(m[2]),
    rowsPerThread: Number(m[3]),
    unroll: (m[4] ?? '').includes('u'),
    qStage: (m[4] ?? '').includes('p') ? 'private' : 'shared',
  };
}
const DEFAULT_CONFIGS = quick
  ? '32x16r1,16x8r2u'
  : '64x32r1,64x16r1,32x32r1,64x32r1u,64x16r2,64x16r2u,64x32r2u,128x16r2,128x16r2u,64x64r1,32x32r1p';
const configs = (option('configs') ?? DEFAULT_CONFIGS).split(',').map(parseConfig);

interface Case {
  name: string;
  spec: AttentionSpec;
}
const H = quick ? 2 : 16;
const D = 64;
const mk = (n: number, mask?: ReturnType<typeof maskMod>) =>
  defineAttention({
    batch: 1,
    headsQ: H,
    seqQ: n,
    headDim: D,
    dtype: 'f32',
    ...(mask ? { mask } : {}),
  });
const causal = maskMod(({ q, kv }) => q.ge(kv), { name: 'causal' });
const window = (w: number) =>
  maskMod(({ q, kv }) => q.ge(kv).and(q.sub(kv).lt(w)), { name: `sliding-window(${w}, causal)` });
const sizes = quick ? [128] : [1024, 4096, 16384];
let cases: Case[] = [
  ...sizes.flatMap((n) => [
    { name: `dense-${n}`, spec: mk(n) },
    { name: `causal-${n}`, spec: mk(n, causal) },
  ]),
  quick
    ? { name: 'window64-512', spec: mk(512, window(64)) }
    : { name: 'window512-65536', spec: mk(65536, window(512)) },
];
const only = option('cases');
if (only) cases = cases.filter((c) => only.split(',').includes(c.name));

/** Seeded values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let a = seed >>> 0;
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    out[i] = a / 2147483648 - 1;
  }
  return out;
}

/** f64 reference for one row (b = 0): out row and lse, by the definition. */
function referenceRow(
  spec: AttentionSpec,
  x: { q: Float32Array; k: Float32Array; v: Float32Array },
  h: number,
  i: number,
  isIn: (i: number, j: number) => boolean,
) {
  const { headsQ, headsKV, seqQ, seqKV, headDim, headDimV, layout } = spec;
  const hk = kvHeadOf(spec, h);
  const s = new Float64Array(seqKV).fill(-Infinity);
  let mx = -Infinity;
  for (let j = 0; j < seqKV; j++) {
    if (!isIn(i, j)) continue;
    let dot = 0;
    for (let d = 0; d < headDim; d++)
      dot +=
        (x.q[elementIndex(layout, headsQ, seqQ, headDim, 0, h, i, d)] as number) *
        (x.k[elementIndex(layout, headsKV, seqKV, headDim, 0, hk, j, d)] as number);
    s[j] = dot * spec.scale;
    mx = Math.max(mx, s[j] as number);
  }
  let sum = 0;
  const out = new Float64Array(headDimV);
  for (let j = 0; j < seqKV; j++) {
    if (s[j] === -Infinity) continue;
    const p = Math.exp((s[j] as number) - mx);
    sum += p;
    for (let c = 0; c < headDimV; c++)
      out[c] += p * (x.v[elementIndex(layout, headsKV, seqKV, headDimV, 0, hk, j, c)] as number);
  }
  return { out: Array.from(out, (o) => o / sum), lse: mx + Math.log(sum) };
}

const fmtBytes = (b: number): string =>
  b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / 2 ** 20).toFixed(1)} MiB`;

interface Row {
  case: string;
  kernel: string;
  config: string;
  ms: string;
  tflops: string;
  bytes: string;
  error: string;
}

async function measure(backend: WebGpuBackend, c: Case, rows: Row[]): Promise<void> {
  const { spec } = c;
  const n = spec.seqQ;
  const t0 = performance.now();
  const x = {
    q: values(spec.batch * spec.headsQ * n * D, 1),
    k: values(spec.batch * spec.headsKV * n * D, 2),
    v: values(spec.batch * spec.headsKV * n * D, 3),
  };
  const resident = backend.upload(spec, x);
  const ioBytes = 4 * (x.q.length + x.k.length + x.v.length + x.q.length + spec.headsQ * n);
  const mask = c.name.startsWith('dense')
    ? () => true
    : c.name.startsWith('causal')
      ? (i: number, j: number) => i >= j
      : (i: number, j: number) => i >= j && i - j < Number(/window(\d+)/.exec(c.name)?.[1]);
  const sample: [number, number][] = [];
  for (let r = 0; r < sampleRows; r++)
    sample.push([(r * 7) % spec.headsQ, Math.floor(((r + 0.5) / sampleRows) * n)]);
  const refs = sample.map(([h, i]) => referenceRow(spec, x, h, i, mask));
  console.log(`# ${c.name}: inputs ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const errorOf = async (outputs: { out: GPUBuffer; lse: GPUBuffer; spec: AttentionSpec }) => {
    const got = await backend.readback(outputs);
    let worst = 0;
    sample.forEach(([h, i], r) => {
      const ref = refs[r] as { out: number[]; lse: number };
      for (let c2 = 0; c2 < D; c2++) {
        const g = got.out[elementIndex(spec.layout, spec.headsQ, n, D, 0, h, i, c2)] as number;
        worst = Math.max(worst, Math.abs(g - (ref.out[c2] as number)));
      }
      worst = Math.max(
        worst,
        Math.abs((got.lse[h * n + i] as number) - ref.lse) / Math.max(1, Math.abs(ref.lse)),
      );
    });
    return worst;
  };

  const variants: (WebGpuRunOptions & { label: string })[] = [
    ...configs,
    { label: '-', strategy: 'naive' },
  ];
  for (const v of variants) {
    const kernel = v.strategy === 'naive' ? 'naive 3-pass' : 'fused';
    try {
      const run = await backend.prepare(spec, resident, v);
      const t = await timeRuns(backend.gpuDevice, run, {
        warmup,
        repeat,
        timestamps: backend.capabilities.timestampQuery,
      });
      const ms = median(t.timesMs);
      const cost =
        v.strategy === 'naive'
          ? estimateCost(spec, { strategy: 'naive' })
          : estimateCost(spec, {
              strategy: 'tiled',
              layout: blockLayout(spec, { blockQ: run.tile?.blockQ, blockKV: run.tile?.blockKV }),
            });
      const err = await errorOf(run.outputs);
      rows.push({
        case: c.name,
        kernel,
        config: run.tile ? v.label : '-',
        ms: `${ms.toFixed(3)}${t.timing === 'wall' ? ' (wall)' : ''}`,
        tflops: (cost.flops / (ms * 1e-3) / 1e12).toPrecision(3),
        bytes: fmtBytes(ioBytes + run.extraBytes),
        error: err.toExponential(1),
      });
      console.log(
        `  ${kernel} ${v.label}: ${ms.toFixed(3)} ms, ${(cost.flops / (ms * 1e-3) / 1e12).toPrecision(3)} TFLOP/s, max err ${err.toExponential(1)}`,
      );
      run.dispose();
      backend.release(run.outputs);
    } catch (e) {
      const msg =
        e instanceof ResourceLimitError
          ? `cannot allocate: ${e.message}`
          : `failed: ${(e as Error).message}`;
      console.log(`  ${kernel} ${v.label}: ${msg}`);
      rows.push({
        case: c.name,
        kernel,
        config: v.label,
        ms: e instanceof ResourceLimitError ? 'cannot allocate' : 'failed',
        tflops: '-',
        bytes: '-',
        error: '-',
      });
      if (!(e instanceof TesseraError)) console.log((e as Error).stack);
    }
  }
  backend.release(resident);
}

async function catalogue(backend: WebGpuBackend): Promise<string> {
  const cpu = await createCpuBackend();
  const only = option('catalogue-filter');
  const list = conformanceCases({ profile: 'ci' })
    .filter((c) => !only || c.id.includes(only))
    .slice(0, quick ? 6 : undefined);
  let pass = 0;
  const failures: string[] = [];
  for (const c of list) {
    try {
      const r = await runCase(backend, c, cpu);
      if (r.pass) pass++;
      else failures.push(`${c.id}: ${r.message}`);
    } catch (e) {
      failures.push(`${c.id}: threw ${(e as Error).message}`);
    }
  }
  await cpu.dispose();
  for (const f of failures) console.log(`  FAIL ${f}`);
  return `catalogue (ci profile) on this device: ${pass}/${list.length} cases pass`;
}

/**
 * The backward beside the forward, one tile (the first of --configs) for both: median ms of each
 * by GPU timestamps, TFLOP/s (backward counted as 2.5 × the forward's FLOPs over visited pairs, as
 * FlashAttention counts it) and their ratio.
 */
async function backwardTimes(backend: WebGpuBackend): Promise<string[]> {
  const lines = [
    '| case | forward ms | forward TFLOP/s | backward ms | backward TFLOP/s | bwd/fwd TFLOP/s | extra bytes |',
    '|---|---|---|---|---|---|---|',
  ];
  const tile = configs[0] as WebGpuRunOptions;
  for (const n of quick ? [256] : [1024, 4096]) {
    for (const [name, spec] of [
      [`dense-${n}`, mk(n)],
      [
        `causal-${n}`,
        mk(
          n,
          maskMod(({ q, kv }) => q.ge(kv)),
        ),
      ],
    ] as const) {
      const x = {
        q: values(spec.headsQ * n * D, 1),
        k: values(spec.headsKV * n * D, 2),
        v: values(spec.headsKV * n * D, 3),
      };
      const resident = backend.upload(spec, x);
      const run = await backend.prepare(spec, resident, tile);
      const fwd = await timeRuns(backend.gpuDevice, run, {
        warmup,
        repeat,
        timestamps: backend.capabilities.timestampQuery,
      });
      const dOut = backend.uploadTensor(values(spec.headsQ * n * D, 4));
      const pb = await backend.prepareBackward(spec, {
        spec,
        inputs: resident,
        outputs: run.outputs,
        dOut,
      });
      const bwd = await timeRuns(backend.gpuDevice, pb, {
        warmup,
        repeat,
        timestamps: backend.capabilities.timestampQuery,
      });
      const flops = estimateCost(spec, {
        strategy: 'tiled',
        layout: blockLayout(spec, { blockQ: run.tile?.blockQ, blockKV: run.tile?.blockKV }),
      }).flops;
      const f = median(fwd.timesMs);
      const b = median(bwd.timesMs);
      const fT = flops / (f * 1e-3) / 1e12;
      const bT = (2.5 * flops) / (b * 1e-3) / 1e12;
      const line = `| ${name} | ${f.toFixed(3)} | ${fT.toPrecision(3)} | ${b.toFixed(3)}${bwd.timing === 'wall' ? ' (wall)' : ''} | ${bT.toPrecision(3)} | ${(bT / fT).toFixed(2)} | ${fmtBytes(pb.extraBytes)} |`;
      console.log(line);
      lines.push(line);
      pb.dispose();
      backend.release(pb.gradients);
      run.dispose();
      backend.release(run.outputs);
      backend.release(resident);
    }
  }
  return lines;
}

/** The gradient catalogue (ci profile) on this device against the cpu backend's backward. */
async function gradientCatalogue(backend: WebGpuBackend): Promise<string> {
  const cpu = await createCpuBackend();
  const list = gradientCases({ profile: 'ci' }).slice(0, quick ? 6 : undefined);
  let pass = 0;
  for (const c of list) {
    try {
      const r = await runGradientCase(backend, c, cpu);
      if (r.pass) pass++;
      else console.log(`  FAIL ${c.id}: ${r.message}`);
    } catch (e) {
      console.log(`  FAIL ${c.id}: threw ${(e as Error).message}`);
    }
  }
  await cpu.dispose();
  return `gradient catalogue (ci profile) on this device: ${pass}/${list.length} cases pass`;
}

async function main(): Promise<void> {
  const flags = ['disable-dawn-features=timestamp_quantization'];
  if (flag('unsafe')) flags.push('enable-dawn-features=disable_robustness,skip_validation');
  const gpu = create(flags);
  const backend = await createWebGpuBackend({ gpu });
  const caps = backend.capabilities;
  console.log(
    `adapter: ${backend.device}; features: ${[caps.f16 && 'shader-f16', caps.subgroups && 'subgroups', caps.timestampQuery && 'timestamp-query'].filter(Boolean).join(', ')}`,
  );
  console.log(
    `limits: workgroup storage ${caps.limits.maxComputeWorkgroupStorageSize} B, storage binding ${caps.limits.maxStorageBufferBindingSize} B, buffer ${caps.limits.maxBufferSize} B`,
  );
  if (flag('backward')) {
    const table = await backwardTimes(backend);
    const summary = await gradientCatalogue(backend);
    console.log(`\n${table.join('\n')}\n\n${summary}`);
    await backend.dispose();
    void gpu;
    return;
  }
  const rows: Row[] = [];
  for (const c of cases) await measure(backend, c, rows);
  const summary = flag('no-catalogue') ? '' : await catalogue(backend);
  console.log('\n| case | kernel | tile | ms (median) | TFLOP/s | device bytes | max error |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows)
    console.log(
      `| ${r.case} | ${r.kernel} | ${r.config} | ${r.ms} | ${r.tflops} | ${r.bytes} | ${r.error} |`,
    );
  if (summary) console.log(`\n${summary}`);
  await backend.dispose();
  void gpu;
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
