import {
  type AttentionBackend,
  type AttentionGradients,
  type AttentionInputs,
  type AttentionOutputs,
  type AttentionSpec,
  type BackwardInputs,
  estimateCost,
  InputError,
  type ProgramBackend,
  ResourceLimitError,
  type RunOptions,
  type Strategy,
  blockLayout as specBlockLayout,
  UnsupportedError,
  validateBackwardInputs,
  validateInputs,
} from '@tessera/core';
import { featureDim } from '@tessera/core/backend';
import { attendCpu, compile } from './attend.js';
import { backwardCpu, backwardNaiveBytes, toFloat32 } from './backward/index.js';
import { cpuProgramOps } from './program.js';

export interface CpuBackendOptions {
  /**
   * Most memory the 'naive' strategy may allocate for its materialised matrices, in bytes
   * (default 2 GiB). Above it, run() throws ResourceLimitError before allocating anything.
   */
  readonly maxNaiveBytes?: number;
}

export const DEFAULT_MAX_NAIVE_BYTES = 2 * 1024 ** 3;

function checkOptions(
  options: RunOptions,
  method: 'run' | 'backward',
): {
  strategy: Strategy;
  blockQ?: number;
  blockKV?: number;
} {
  if (typeof options !== 'object' || options === null)
    throw new InputError(`${method}() options must be an object { strategy?, blockQ?, blockKV? }`);
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

function checkBackwardNaiveMemory(spec: AttentionSpec, limit: number): void {
  const bytes = backwardNaiveBytes(spec);
  if (bytes <= limit) return;
  throw new ResourceLimitError(
    `backward with strategy 'naive' would allocate ${gb(bytes)} GB (two ${spec.seqQ} × ${spec.seqKV} f64 matrices per (batch, head)) but the cpu backend's maxNaiveBytes is ${gb(limit)} GB: use strategy 'tiled', or raise maxNaiveBytes`,
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
    const { strategy, blockQ, blockKV } = checkOptions(runOptions, 'run');
    if (strategy === 'naive') checkNaiveMemory(spec, maxNaiveBytes);
    return attendCpu(spec, inputs, strategy, (s) => specBlockLayout(s, { blockQ, blockKV }));
  };

  const backward = async (
    spec: AttentionSpec,
    inputs: BackwardInputs,
    runOptions: RunOptions = {},
  ): Promise<AttentionGradients> => {
    if (disposed) throw new UnsupportedError('this cpu backend was disposed');
    compile(spec); // the spec is checked before its inputs
    validateBackwardInputs(spec, inputs);
    const { strategy, blockQ, blockKV } = checkOptions(runOptions, 'backward');
    if (strategy === 'naive') checkBackwardNaiveMemory(spec, maxNaiveBytes);
    const layout = (s: AttentionSpec) => specBlockLayout(s, { blockQ, blockKV });
    return toFloat32(backwardCpu(spec, inputs, strategy, layout));
  };

  return {
    name: 'cpu',
    device: 'CPU (JavaScript, f64 accumulation)',
    run,
    backward,
    program: cpuProgramOps(() => {
      if (disposed) throw new UnsupportedError('this cpu backend was disposed');
    }),
    async dispose() {
      disposed = true;
    },
  };
}
