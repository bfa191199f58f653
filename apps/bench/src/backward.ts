import {
  type AttentionBackend,
  type AttentionGradients,
  type AttentionInputs,
  type AttentionSpec,
  type BackwardInputs,
  estimateCost,
  ResourceLimitError,
  roundToDtype,
  tensorSizes,
  UnsupportedError,
} from '@tessera/core';
import { type CaseResult, fillUniform, makeInputs } from './measure.js';
import type { BenchCase } from './suites.js';
import { summarize } from './units.js';

/** FlashAttention's convention: a backward pass costs 2.5 forward passes (5 matmuls against 2). */
export const BACKWARD_FLOP_FACTOR = 2.5;

/**
 * Forward FLOPs exactly as the forward bench counts them (core's cost model, strategy tiled):
 * 2·(D + DV) per computed (q, kv) pair, pairs over whole visited blocks of the block layout
 * (4·B·H·pairs·D when DV = D); for linear kernels the cost model's feature-map count.
 */
export function forwardFlops(spec: AttentionSpec): number {
  return estimateCost(spec, { strategy: 'tiled' }).flops;
}

/** Backward FLOPs: BACKWARD_FLOP_FACTOR × forwardFlops (the recomputed forward is not counted). */
export function backwardFlops(spec: AttentionSpec): number {
  return BACKWARD_FLOP_FACTOR * forwardFlops(spec);
}

/**
 * A backend that times its backward on the device (core's optional `benchmarkBackward`, beside
 * `benchmark` for the forward); without it the bench times `run()` + `backward()` on the host.
 */
export type BackwardBenchmarking = Required<Pick<AttentionBackend, 'benchmarkBackward'>>;

const hasBackwardBenchmark = (b: AttentionBackend): b is AttentionBackend & BackwardBenchmarking =>
  typeof (b as Partial<BackwardBenchmarking>).benchmarkBackward === 'function';

/** The gradients the backend's are compared with: the cpu backend's backward (f64). */
export type GradientReference = (
  spec: AttentionSpec,
  inputs: BackwardInputs,
) => Promise<AttentionGradients>;

export interface BackwardOptions {
  readonly warmup: number;
  readonly repeat: number;
  /** Gradients are checked on the same case at min(seq, checkSeq) tokens (the f64 CPU is O(N²)). */
  readonly checkSeq: number;
  /** Undefined where no reference backward is available (the error is then reported missing). */
  readonly reference?: GradientReference;
  /**
   * Checks already made, by backend and checked case id: cases longer than checkSeq share one
   * check shape (causal/4k and causal/16k are both checked as causal/256), so it runs once.
   */
  readonly checked?: Map<string, GradientErrors>;
}

export interface GradientErrors {
  readonly status: 'ok' | 'no-reference' | 'failed';
  readonly message?: string;
  /** The sequence length the gradients were compared at. */
  readonly seq: number;
  /** Relative L2 error ‖g − ref‖ / ‖ref‖ of each gradient (absolute where ‖ref‖ = 0). */
  readonly dq?: number;
  readonly dk?: number;
  readonly dv?: number;
  /** Per captured-tensor slot; null where neither side returns a gradient. */
  readonly grads?: readonly (number | null)[];
  /** The largest of the above. */
  readonly max?: number;
}

type Summary = ReturnType<typeof summarize>;

export interface BackwardResult {
  readonly status: 'ok' | 'no-backward' | 'unsupported' | 'does-not-fit' | 'failed';
  readonly message?: string;
  /** 'device': the backend's benchmarkBackward and benchmark; 'wall': host clock around run/backward. */
  readonly timing?: 'device' | 'wall';
  /** Forward alone (run), forward then backward, and backward = median(fwd+bwd) − median(fwd). */
  readonly fwdMs?: Summary;
  readonly fwdBwdMs?: Summary;
  readonly bwdMs?: number;
  /** backwardFlops(spec): 2.5 × the forward's FLOPs over visited pairs. */
  readonly flops: number;
  /** flops / bwdMs, in TFLOP/s. */
  readonly tflops?: number;
  /** Device memory beyond inputs, outputs and gradients, where the backend reports it. */
  readonly extraDeviceBytes: number | null;
  readonly peakDeviceBytes: number | null;
  readonly gradError?: GradientErrors;
}

/** A case's forward results and, in backward mode, its backward. */
export type BackwardCaseResult = CaseResult & { readonly backward?: BackwardResult };

/** q, k, v as the device sees them, and a seeded ∂loss/∂out (also rounded to the dtype). */
export function backwardInputs(
  spec: AttentionSpec,
  seed: number,
): AttentionInputs & { dOut: Float32Array } {
  const { q, k, v } = makeInputs(spec, seed);
  const dOut = fillUniform(new Float32Array(tensorSizes(spec).out), seed * 3 + 1001);
  const r = (x: Float32Array) => (spec.dtype === 'f32' ? x : roundToDtype(x, spec.dtype));
  return { q: r(q), k: r(k), v: r(v), dOut: r(dOut) };
}

/** Relative L2 error in f64; the absolute L2 norm of the difference where the reference is zero. */
export function relL2(got: Float32Array, want: Float32Array): number {
  if (got.length !== want.length)
    throw new Error(`gradient has ${got.length} elements, the reference ${want.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < got.length; i++) {
    const w = want[i] as number;
    num += ((got[i] as number) - w) ** 2;
    den += w * w;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Compares two sets of gradients tensor by tensor. */
export function gradientErrors(
  got: AttentionGradients,
  want: AttentionGradients,
  seq: number,
): GradientErrors {
  const dq = relL2(got.dq, want.dq);
  const dk = relL2(got.dk, want.dk);
  const dv = relL2(got.dv, want.dv);
  const slots = Math.max(got.grads.length, want.grads.length);
  const grads: (number | null)[] = [];
  for (let i = 0; i < slots; i++) {
    const g = got.grads[i] ?? null;
    const w = want.grads[i] ?? null;
    if (g === null && w === null) grads.push(null);
    else if (g === null || w === null)
      throw new Error(
        `captured tensor ${i}: ${g === null ? 'no gradient' : 'a gradient'} where the reference has ${w === null ? 'none' : 'one'}`,
      );
    else grads.push(relL2(g, w));
  }
  const max = Math.max(dq, dk, dv, ...grads.filter((x): x is number => x !== null));
  return { status: 'ok', seq, dq, dk, dv, grads, max };
}

const statusOf = (e: unknown): BackwardResult['status'] =>
  e instanceof ResourceLimitError
    ? 'does-not-fit'
    : e instanceof UnsupportedError
      ? 'unsupported'
      : 'failed';

async function checkGradients(
  backend: AttentionBackend & Required<Pick<AttentionBackend, 'backward'>>,
  c: BenchCase,
  opts: BackwardOptions,
): Promise<GradientErrors> {
  const seq = Math.min(c.seq, opts.checkSeq);
  if (!opts.reference)
    return {
      status: 'no-reference',
      seq,
      message: 'no reference backward (the cpu backend has none)',
    };
  const checkCase = seq === c.seq ? c : c.atSeq(seq);
  const key = `${backend.name} ${checkCase.id}`;
  const known = opts.checked?.get(key);
  if (known) return known;
  const errors = await compareWithReference(backend, checkCase, opts.reference);
  opts.checked?.set(key, errors);
  return errors;
}

async function compareWithReference(
  backend: AttentionBackend & Required<Pick<AttentionBackend, 'backward'>>,
  c: BenchCase,
  reference: GradientReference,
): Promise<GradientErrors> {
  const seq = c.seq;
  try {
    const spec = c.build();
    const { dOut, ...qkv } = backwardInputs(spec, 3);
    const fwd = await backend.run(spec, qkv);
    const inputs: BackwardInputs = { ...qkv, out: fwd.out, lse: fwd.lse, dOut };
    const got = await backend.backward(spec, inputs);
    const want = await reference(spec, inputs);
    return gradientErrors(got, want, seq);
  } catch (e) {
    return { status: 'failed', seq, message: (e as Error).message };
  }
}

/**
 * Measures the backward of one case on one backend: forward, forward + backward and their
 * difference, TFLOP/s under the 2.5× convention, extra device memory where reported, and the
 * gradients' error against the reference at min(seq, checkSeq). A backend without `backward`
 * gives status 'no-backward'.
 */
export async function measureBackward(
  backend: AttentionBackend,
  c: BenchCase,
  opts: BackwardOptions,
): Promise<BackwardResult> {
  const spec = c.build();
  const flops = backwardFlops(spec);
  const none = { flops, extraDeviceBytes: null, peakDeviceBytes: null } as const;
  if (typeof backend.backward !== 'function')
    return { status: 'no-backward', message: `${backend.name} has no backward()`, ...none };
  const withBackward = backend as AttentionBackend & Required<Pick<AttentionBackend, 'backward'>>;
  let timed: Omit<BackwardResult, 'gradError' | 'flops' | 'status'>;
  try {
    const sets = [backwardInputs(spec, 1), backwardInputs(spec, 2)];
    timed = hasBackwardBenchmark(backend)
      ? await timeOnDevice(backend, spec, sets, opts)
      : await timeWithHostClock(withBackward, spec, sets, opts);
  } catch (e) {
    return { status: statusOf(e), message: (e as Error).message, ...none };
  }
  const gradError = await checkGradients(withBackward, c, opts);
  const bwdMs = timed.bwdMs as number;
  return {
    status: 'ok',
    ...timed,
    flops,
    ...(bwdMs > 0 ? { tflops: flops / (bwdMs * 1e-3) / 1e12 } : {}),
    gradError,
  };
}

type Sets = readonly (AttentionInputs & { dOut: Float32Array })[];

async function timeWithHostClock(
  backend: AttentionBackend & Required<Pick<AttentionBackend, 'backward'>>,
  spec: AttentionSpec,
  sets: Sets,
  opts: BackwardOptions,
): Promise<Omit<BackwardResult, 'gradError' | 'flops' | 'status'>> {
  const once = async (i: number) => {
    const { dOut, ...qkv } = sets[i % sets.length] as Sets[number];
    const t0 = performance.now();
    const o = await backend.run(spec, qkv);
    const t1 = performance.now();
    await backend.backward(spec, { ...qkv, out: o.out, lse: o.lse, dOut });
    const t2 = performance.now();
    return { fwd: t1 - t0, fwdBwd: t2 - t0 };
  };
  for (let i = 0; i < opts.warmup; i++) await once(i);
  const fwd: number[] = [];
  const fwdBwd: number[] = [];
  for (let i = 0; i < opts.repeat; i++) {
    const r = await once(i);
    fwd.push(r.fwd);
    fwdBwd.push(r.fwdBwd);
  }
  const fwdMs = summarize(fwd);
  const fwdBwdMs = summarize(fwdBwd);
  return {
    timing: 'wall',
    fwdMs,
    fwdBwdMs,
    bwdMs: fwdBwdMs.median - fwdMs.median,
    extraDeviceBytes: null,
    peakDeviceBytes: null,
  };
}

async function timeOnDevice(
  backend: AttentionBackend & BackwardBenchmarking,
  spec: AttentionSpec,
  sets: Sets,
  opts: BackwardOptions,
): Promise<Omit<BackwardResult, 'gradError' | 'flops' | 'status'>> {
  const qkvs = sets.map(({ dOut: _, ...qkv }) => qkv);
  const bench = { warmup: opts.warmup, repeat: opts.repeat };
  let fwdTimes: readonly number[];
  let fwdTiming: 'device' | 'wall';
  if (backend.benchmark) {
    const r = await backend.benchmark(spec, qkvs, bench);
    fwdTimes = r.timesMs;
    fwdTiming = r.timing;
  } else {
    const t: number[] = [];
    for (let i = 0; i < opts.warmup + opts.repeat; i++) {
      const t0 = performance.now();
      await backend.run(spec, qkvs[i % qkvs.length] as AttentionInputs);
      if (i >= opts.warmup) t.push(performance.now() - t0);
    }
    fwdTimes = t;
    fwdTiming = 'wall';
  }
  const backwardSets: BackwardInputs[] = [];
  for (const s of sets) {
    const { dOut, ...qkv } = s;
    const o = await backend.run(spec, qkv);
    backwardSets.push({ ...qkv, out: o.out, lse: o.lse, dOut });
  }
  const r = await backend.benchmarkBackward(spec, backwardSets, bench);
  const fwdMs = summarize(fwdTimes);
  const bwd = summarize(r.timesMs);
  // The sum of two medians: forward and backward are timed apart on the device.
  const fwdBwdMs = summarize(r.timesMs.map((t) => t + fwdMs.median));
  return {
    timing: fwdTiming === 'device' && r.timing === 'device' ? 'device' : 'wall',
    fwdMs,
    fwdBwdMs,
    bwdMs: bwd.median,
    extraDeviceBytes: r.extraDeviceBytes ?? null,
    peakDeviceBytes: r.peakDeviceBytes ?? null,
  };
}
