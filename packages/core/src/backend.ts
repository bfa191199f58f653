import type {
  AttentionGradients,
  AttentionInputs,
  AttentionOutputs,
  BackwardInputs,
} from './inputs.js';
import type { Strategy } from './plan.js';
import type { ProgramOps } from './program-run.js';
import type { AttentionSpec } from './spec.js';

export interface RunOptions {
  /** 'tiled' (default): walk the block layout, never an N×N buffer. 'naive': materialise the scores (a baseline). */
  readonly strategy?: Strategy;
  /** Block sizes for this run; default from the spec's tiling hints, then the backend's choice. */
  readonly blockQ?: number;
  readonly blockKV?: number;
}

export interface BenchmarkOptions extends RunOptions {
  /** Untimed runs first (compilation, caches). */
  readonly warmup: number;
  /** Timed runs; input sets are used in turn so caches do not flatter. */
  readonly repeat: number;
}

export interface BenchmarkResult {
  /** One time per timed run, in milliseconds. */
  readonly timesMs: readonly number[];
  /** 'device': GPU timestamps or events around the kernels only; 'wall': host clock around run(). */
  readonly timing: 'device' | 'wall';
  /** Most device memory the backend held at once during the runs, if it tracks it. */
  readonly peakDeviceBytes?: number;
  /** Memory it allocated for this spec beyond inputs and outputs (scores, LSE, index buffers). */
  readonly extraDeviceBytes?: number;
  /** Outputs of the last timed run (in input set `(repeat - 1) % inputSets.length`). */
  readonly outputs: AttentionOutputs;
}

/** What `benchmarkBackward` measures: the backward pass alone, over inputs already on the device. */
export interface BackwardBenchmarkResult {
  /** One time per timed run of backward alone, in milliseconds. */
  readonly timesMs: readonly number[];
  /** 'device': GPU timestamps or events around the kernels only; 'wall': host clock. */
  readonly timing: 'device' | 'wall';
  /** Most device memory the backend held at once during the runs, if it tracks it. */
  readonly peakDeviceBytes?: number;
  /** Device bytes beyond q, k, v, out, lse, dOut and the gradients (row sums, partials, …). */
  readonly extraDeviceBytes?: number;
}

/** What every backend offers (createCpuBackend, createWebGpuBackend, createCudaBackend). */
export interface AttentionBackend {
  readonly name: string;
  /** The device it runs on, for reports (e.g. "NVIDIA H100 80GB HBM3", "llvmpipe"). */
  readonly device?: string;
  /**
   * Optional: times `spec` with inputs uploaded once per set, as precisely as the backend can
   * (device timers where it has them). The bench uses this when present, else times run().
   */
  benchmark?(
    spec: AttentionSpec,
    inputSets: readonly AttentionInputs[],
    options: BenchmarkOptions,
  ): Promise<BenchmarkResult>;
  /**
   * Runs `spec` on `inputs` (Float32Array in the spec's layout). Rejects with SpecError,
   * InputError, UnsupportedError or ResourceLimitError before producing any output.
   */
  run(
    spec: AttentionSpec,
    inputs: AttentionInputs,
    options?: RunOptions,
  ): Promise<AttentionOutputs>;
  /**
   * The backward pass: gradients of q, k, v and of the captured f32 tensors the score
   * modification reads, from the forward's inputs, its `out` and `lse`, and ∂loss/∂out. Probabilities
   * are recomputed from q, k and lse (never an N×N matrix with the default strategy). Rejects with
   * the same typed errors as run(), before any work. Optional while backends add it.
   */
  backward?(
    spec: AttentionSpec,
    inputs: BackwardInputs,
    options?: RunOptions,
  ): Promise<AttentionGradients>;
  /**
   * Optional: times `backward` alone with each input set uploaded once, as precisely as the
   * backend can (the bench uses it when present, else times run() + backward() on the host).
   */
  benchmarkBackward?(
    spec: AttentionSpec,
    inputSets: readonly BackwardInputs[],
    options: BenchmarkOptions,
  ): Promise<BackwardBenchmarkResult>;
  /** Optional: the source this backend generates for `spec` (WGSL, CUDA C++, JS), for `--emit`. */
  emitSource?(spec: AttentionSpec, options?: RunOptions): string;
  /** Optional: the steps of attention programs (`runProgram`), on this backend's device. */
  readonly program?: ProgramOps;
  /** Frees what the backend holds (device memory, compiled kernels). */
  dispose(): Promise<void>;
}
