import {
  type AttentionBackend,
  type AttentionInputs,
  type AttentionOutputs,
  type AttentionSpec,
  type BlockLayout,
  compileJs,
  estimateCost,
  featureDim,
  hashSpec,
  InputError,
  isCausalExpr,
  type ProgramBackend,
  ResourceLimitError,
  type RunOptions,
  roundToDtype,
  SpecError,
  type Strategy,
  blockLayout as specBlockLayout,
  UnsupportedError,
  validateInputs,
} from '@tessera/core';
import { type LinearKernel, linearKernel, linearNaive, linearPrefix } from './linear.js';
import type { Prepared } from './prepared.js';
import { cpuProgramOps } from './program.js';
import { softmaxNaive, softmaxTiled } from './softmax.js';

export interface CpuBackendOptions {
  /**
   * Most memory the 'naive' strategy may allocate for its materialised matrices, in bytes
   * (default 2 GiB). Above it, run() throws ResourceLimitError before allocating anything.
   */
  readonly maxNaiveBytes?: number;
}

export const DEFAULT_MAX_NAIVE_BYTES = 2 * 1024 ** 3;

/** What is compiled once per spec: the mask and score closures, the linear feature map. */
interface Compiled {
  readonly mask: Prepared['mask'];
  readonly scoreMod: Prepared['scoreMod'];
  readonly linear: LinearKernel | null;
}

const compiledSpecs = new WeakMap<AttentionSpec, Compiled>();

/** Checks that `spec` is an untouched spec from defineAttention and compiles it (cached). */
function compile(spec: AttentionSpec): Compiled {
  const hit = compiledSpecs.get(spec);
  if (hit) return hit;
  if (typeof spec !== 'object' || spec === null || spec.version !== 1) {
    throw new SpecError(`run() needs a spec from defineAttention() (got ${describeValue(spec)})`);
  }
  const { hash, ...body } = spec;
  if (typeof hash !== 'string' || hashSpec(body) !== hash) {
    throw new SpecError(
      `spec hash ${String(hash)} does not match its contents: build specs with defineAttention() and do not edit them`,
    );
  }
  const kernel = spec.kernel;
  if (kernel.type !== 'softmax' && kernel.type !== 'linear') {
    throw new UnsupportedError(
      `the cpu backend runs kernels 'softmax' and 'linear' (got '${String((kernel as { type: unknown }).type)}')`,
    );
  }
  if (kernel.type === 'linear' && spec.mask !== null && !isCausalExpr(spec.mask.expr)) {
    throw new SpecError(
      `kernel 'linear' supports no mask or a causal mask only (got mask '${spec.mask.name}')`,
    );
  }
  const tensors = spec.tensors.map((t) => t.data);
  const compiled: Compiled = {
    mask: spec.mask && kernel.type === 'softmax' ? compileJs(spec.mask.expr, tensors) : null,
    scoreMod: spec.scoreMod ? compileJs(spec.scoreMod.expr, tensors) : null,
    linear: kernel.type === 'linear' ? linearKernel(spec) : null,
  };
  compiledSpecs.set(spec, compiled);
  return compiled;
}

/**
 * Runs a checked spec on validated inputs: rounds them to the spec's dtype and picks the kernel.
 * `layout` gives the block layout the tiled softmax walks (the spec's, or a program's selection).
 */
export function attendCpu(
  spec: AttentionSpec,
  inputs: AttentionInputs,
  strategy: Strategy,
  layout: (spec: AttentionSpec) => BlockLayout,
): AttentionOutputs {
  const compiled = compile(spec);
  const rounded =
    spec.dtype === 'f32'
      ? inputs
      : {
          q: roundToDtype(inputs.q, spec.dtype),
          k: roundToDtype(inputs.k, spec.dtype),
          v: roundToDtype(inputs.v, spec.dtype),
        };
  const p: Prepared = { spec, inputs: rounded, mask: compiled.mask, scoreMod: compiled.scoreMod };
  if (compiled.linear) {
    return strategy === 'naive'
      ? linearNaive(p, compiled.linear)
      : linearPrefix(p, compiled.linear);
  }
  if (strategy === 'naive') return softmaxNaive(p);
  return softmaxTiled(p, layout(spec));
}

function describeValue(x: unknown): string {
  if (x === null) return 'null';
  if (typeof x !== 'object') return typeof x;
  return `an object with version ${JSON.stringify((x as { version?: unknown }).version)}`;
}

function checkOptions(options: RunOptions): {
  strategy: Strategy;
  blockQ?: number;
  blockKV?: number;
} {
  if (typeof options !== 'object' || options === null)
    throw new InputError('run() options must be an object { strategy?, blockQ?, blockKV? }');
  const strategy = options.strategy ?? 'tiled';
  if (strategy !== 'tiled' && strategy !== 'naive') {
    throw new InputError(
      `options.strategy must be 'tiled' or 'naive' (got ${JSON.stringify(strategy)})`,
    );
  }
  for (const key of ['blockQ', 'blockKV'] as const) {
    const v = options[key];
    if (v !== undefined && (!Number.isInteger(v) || v <= 0 || v > 2 ** 31 - 1)) {
      throw new InputError(`options.${key} must be a positive integer (got ${String(v)})`);
    }
  }
  return { strategy, blockQ: options.blockQ, blockKV: options.blockKV };
}

const gb = (bytes: number): string => (bytes / 1e9).toPrecision(3);

/** Bytes the naive strategy allocates beyond inputs and outputs (it reuses them per (b, h)). */
export function naiveBytes(spec: AttentionSpec): number {
  const { batch: B, headsQ: H, seqQ: SQ, seqKV: SK } = spec;
  // estimateCost counts the N×N f32 matrix (+ lse) of every (batch, head) at once; we keep one.
  const matrix = estimateCost(spec, { strategy: 'naive' }).peakExtraBytes / (B * H);
  const rows =
    spec.kernel.type === 'linear' ? 8 * (SQ + SK) * (featureDim(spec) + 1) : 8 * (SQ + SK);
  return matrix + rows;
}

function checkNaiveMemory(spec: AttentionSpec, limit: number): void {
  const bytes = naiveBytes(spec);
  if (bytes <= limit) return;
  const what = spec.kernel.type === 'linear' ? 'kernel' : 'probability';
  throw new ResourceLimitError(
    `strategy 'naive' would allocate ${gb(bytes)} GB (a ${spec.seqQ} × ${spec.seqKV} f32 ${what} matrix per (batch, head), estimateCost) but the cpu backend's maxNaiveBytes is ${gb(limit)} GB: use strategy 'tiled', or raise maxNaiveBytes`,
  );
}

/**
 * The reference backend: every spec of the IR, in JavaScript with f64 accumulation. Strategy
 * 'tiled' (default) walks the block layout and never allocates an N×N buffer; 'naive'
 * materialises the N×N matrix per (batch, head) as a baseline and an independent check.
 */
export async function createCpuBackend(
  options: CpuBackendOptions = {},
): Promise<AttentionBackend & ProgramBackend> {
  if (typeof options !== 'object' || options === null)
    throw new InputError('createCpuBackend() options must be an object { maxNaiveBytes? }');
  const maxNaiveBytes = options.maxNaiveBytes ?? DEFAULT_MAX_NAIVE_BYTES;
  if (typeof maxNaiveBytes !== 'number' || !(maxNaiveBytes > 0)) {
    throw new InputError(
      `maxNaiveBytes must be a positive number of bytes (got ${String(maxNaiveBytes)})`,
    );
  }
  let disposed = false;

  const run = async (
    spec: AttentionSpec,
    inputs: AttentionInputs,
    runOptions: RunOptions = {},
  ): Promise<AttentionOutputs> => {
    if (disposed) throw new UnsupportedError('this cpu backend was disposed');
    compile(spec); // the spec is checked before its inputs
    validateInputs(spec, inputs);
    const { strategy, blockQ, blockKV } = checkOptions(runOptions);
    if (strategy === 'naive') checkNaiveMemory(spec, maxNaiveBytes);
    return attendCpu(spec, inputs, strategy, (s) => specBlockLayout(s, { blockQ, blockKV }));
  };

  return {
    name: 'cpu',
    device: 'CPU (JavaScript, f64 accumulation)',
    run,
    program: cpuProgramOps(() => {
      if (disposed) throw new UnsupportedError('this cpu backend was disposed');
    }),
    async dispose() {
      disposed = true;
    },
  };
}
