import type { AttentionInputs, AttentionOutputs } from './inputs.js';
import type { Strategy } from './plan.js';
import type { AttentionSpec } from './spec.js';

export interface RunOptions {
  /** 'tiled' (default): walk the block layout, never an N×N buffer. 'naive': materialise the scores (a baseline). */
  readonly strategy?: Strategy;
  /** Block sizes for this run; default from the spec's tiling hints, then the backend's choice. */
  readonly blockQ?: number;
  readonly blockKV?: number;
}

/** What every backend offers (createCpuBackend, createWebGpuBackend, createCudaBackend). */
export interface AttentionBackend {
  readonly name: string;
  /**
   * Runs `spec` on `inputs` (Float32Array in the spec's layout). Rejects with SpecError,
   * InputError, UnsupportedError or ResourceLimitError before producing any output.
   */
  run(
    spec: AttentionSpec,
    inputs: AttentionInputs,
    options?: RunOptions,
  ): Promise<AttentionOutputs>;
  /** Frees what the backend holds (device memory, compiled kernels). */
  dispose(): Promise<void>;
}
