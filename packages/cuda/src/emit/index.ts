import { type AttentionSpec, type BlockLayout, UnsupportedError } from '@tessera/core';
import { type CudaModuleSource, GENERATOR_VERSION } from './common.js';
import { defaultMmaTiling, emitFlashMma, mmaEligible } from './flash-mma.js';
import { defaultSimtTiling, emitFlashSimt, SIMT_BLOCK_KV } from './flash-simt.js';
import { emitLinear } from './linear.js';

export {
  type CudaModuleSource,
  type CudaPath,
  GENERATOR_VERSION,
  type KernelEntry,
  type ParamField,
  packParams,
} from './common.js';

export interface EmitOptions {
  /** Query rows per block (softmax kernels); must match the block layout the run uses. */
  readonly blockQ?: number;
  /** Keys per block (softmax kernels). */
  readonly blockKV?: number;
  /** Force the CUDA-core path for a 16-bit spec (tests, comparisons). */
  readonly path?: 'mma' | 'simt';
  /** Tensor-core path: 16-row m-tiles per warp (default 2 for head dims ≤ 128, else 1). */
  readonly warpTiles?: 1 | 2;
  /** Tensor-core path: block order, 'lpt' (default: longest rows first, heads fastest) or 'grid'. */
  readonly schedule?: 'grid' | 'lpt';
  /** Tensor-core path: rescale O only when a running max moved (default false). */
  readonly lazyRescale?: boolean;
}

const MAX_SOFTMAX_DIM = 512;

/**
 * Lowers a spec to one CUDA C++ module. Softmax specs get a flash-attention forward kernel
 * (tensor cores for 16-bit inputs whose head dims are multiples of 8 up to 256, CUDA cores
 * otherwise); linear specs get a feature-map kernel and a chunked scan kernel.
 */
export function emitCuda(spec: AttentionSpec, options: EmitOptions = {}): CudaModuleSource {
  if (spec.kernel.type === 'linear') return emitLinear(spec);
  if (Math.max(spec.headDim, spec.headDimV) > MAX_SOFTMAX_DIM) {
    throw new UnsupportedError(
      `cuda: head dims up to ${MAX_SOFTMAX_DIM} are supported (got headDim ${spec.headDim}, headDimV ${spec.headDimV})`,
    );
  }
  const wantMma = options.path !== 'simt' && mmaEligible(spec);
  if (options.path === 'mma' && !wantMma) {
    throw new UnsupportedError(
      `cuda: the tensor-core path needs f16/bf16 and head dims that are multiples of 8 up to 256 (got ${spec.dtype}, ${spec.headDim}/${spec.headDimV})`,
    );
  }
  const name = `tsr_attn_${spec.hash.slice(0, 12)}`;
  // The spec's tiling hints are used when this path can take them; explicit options must fit.
  const hint = (x: number | undefined, ok: (v: number) => boolean) =>
    x !== undefined && ok(x) ? x : undefined;
  if (wantMma) {
    const d = defaultMmaTiling(spec);
    const fits = (v: number) => v % 16 === 0 && v >= 16 && v <= 128;
    const blockQ = options.blockQ ?? hint(spec.tiling.blockQ, fits) ?? d.blockQ;
    const blockKV = options.blockKV ?? hint(spec.tiling.blockKV, fits) ?? d.blockKV;
    const warpTiles = options.warpTiles ?? (blockQ % (16 * d.warpTiles) === 0 ? d.warpTiles : 1);
    if (!fits(blockQ) || !fits(blockKV) || blockQ % (16 * warpTiles) !== 0) {
      throw new UnsupportedError(
        `cuda: the tensor-core kernel takes blockQ and blockKV in 16, 32, ..., 128, blockQ a multiple of 16 × warpTiles (got ${blockQ} × ${blockKV}, warpTiles ${warpTiles})`,
      );
    }
    const schedule = options.schedule ?? 'lpt';
    const t = { blockQ, blockKV, warpTiles, schedule, lazyRescale: options.lazyRescale ?? false };
    const { source, entry } = emitFlashMma(spec, t, name);
    return {
      source,
      path: 'mma',
      schedule,
      blockQ,
      blockKV,
      kernels: [entry],
      generatorVersion: GENERATOR_VERSION,
    };
  }
  const d = defaultSimtTiling(spec);
  const fitsQ = (v: number) => v % 4 === 0 && v >= 4 && v <= 64;
  const t = {
    blockQ: options.blockQ ?? hint(spec.tiling.blockQ, fitsQ) ?? d.blockQ,
    blockKV: options.blockKV ?? SIMT_BLOCK_KV,
  };
  if (t.blockKV !== SIMT_BLOCK_KV || !fitsQ(t.blockQ)) {
    throw new UnsupportedError(
      `cuda: the CUDA-core kernel takes blockKV ${SIMT_BLOCK_KV} and blockQ in 4, 8, ..., 64 (got ${t.blockQ} × ${t.blockKV})`,
    );
  }
  const { source, entry } = emitFlashSimt(spec, t.blockQ, name);
  return {
    source,
    path: 'simt',
    ...t,
    kernels: [entry],
    schedule: 'grid',
    generatorVersion: GENERATOR_VERSION,
  };
}

/**
 * Q-blocks ordered by their number of KV blocks, longest first (the most over all layout slices;
 * ties: the later q-block first, so causal keeps its last-row-first order).
 */
export function qBlockOrder(layout: BlockLayout): Int32Array {
  const n = layout.numQBlocks;
  const len = new Int32Array(n);
  for (let s = 0; s < layout.batches * layout.heads; s++) {
    for (let qb = 0; qb < n; qb++) {
      const r = s * n + qb;
      len[qb] = Math.max(
        len[qb] as number,
        (layout.rowStart[r + 1] as number) - (layout.rowStart[r] as number),
      );
    }
  }
  const order = Array.from({ length: n }, (_, i) => n - 1 - i);
  order.sort((a, b) => (len[b] as number) - (len[a] as number) || b - a);
  return Int32Array.from(order);
}

/** Grid of a softmax module over `layout`, and the q-block order buffer its schedule reads. */
export function launchGeometry(
  spec: AttentionSpec,
  module: CudaModuleSource,
  layout: BlockLayout,
): { grid: readonly [number, number, number]; order: Int32Array | null } {
  if (module.path === 'linear') throw new Error('launchGeometry is for softmax modules');
  if (module.schedule === 'lpt') {
    const blocks = layout.numQBlocks * spec.headsQ * spec.batch;
    if (blocks > 2 ** 31 - 1)
      throw new UnsupportedError(`cuda: ${blocks} blocks exceed the grid's x limit (2^31 - 1)`);
    return { grid: [blocks, 1, 1], order: qBlockOrder(layout) };
  }
  return { grid: [layout.numQBlocks, spec.headsQ, spec.batch], order: null };
}
