/** Choosing the fused kernel's tile from the spec's hints, the run's options and the device's limits. */
import { type AttentionSpec, ResourceLimitError, SpecError } from '@tessera/core';
import type { GpuLimits } from './gpu.js';
import { type FlashTile, flashWorkgroupBytes } from './wgsl/flash.js';

/** Tile knobs a run may set; anything left out is chosen here. */
export interface TileRequest {
  readonly blockQ?: number;
  readonly blockKV?: number;
  readonly rowsPerThread?: number;
  readonly qStage?: 'shared' | 'private';
  readonly unroll?: boolean;
}

/** Preferred (blockQ, blockKV) pairs, largest first; the first that fits the limits wins. */
const PREFERENCE: readonly (readonly [number, number])[] = [
  [64, 32],
  [64, 16],
  [32, 32],
  [32, 16],
  [32, 8],
  [16, 16],
  [16, 8],
  [8, 8],
  [8, 4],
  [4, 4],
  [1, 1],
];

const pow2AtLeast = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

function positive(name: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isInteger(v) || v <= 0))
    throw new SpecError(`${name} must be a positive integer (got ${String(v)})`);
}

/** Why a tile does not fit, naming the limit; null when it fits. */
export function tileProblem(
  spec: AttentionSpec,
  tile: FlashTile,
  limits: GpuLimits,
): string | null {
  const threads = tile.blockQ / tile.rowsPerThread;
  if (threads > limits.maxComputeInvocationsPerWorkgroup)
    return `${threads} threads per workgroup exceed maxComputeInvocationsPerWorkgroup (${limits.maxComputeInvocationsPerWorkgroup})`;
  if (threads > limits.maxComputeWorkgroupSizeX)
    return `${threads} threads per workgroup exceed maxComputeWorkgroupSizeX (${limits.maxComputeWorkgroupSizeX})`;
  const bytes = flashWorkgroupBytes(spec, tile);
  if (bytes > limits.maxComputeWorkgroupStorageSize)
    return `tile blockQ ${tile.blockQ} × blockKV ${tile.blockKV} (headDim ${spec.headDim}, headDimV ${spec.headDimV}) needs ${bytes} bytes of workgroup memory, more than maxComputeWorkgroupStorageSize (${limits.maxComputeWorkgroupStorageSize})`;
  return null;
}

export function chooseFlashTile(
  spec: AttentionSpec,
  limits: GpuLimits,
  request: TileRequest = {},
): FlashTile {
  const blockQ = request.blockQ ?? spec.tiling.blockQ;
  const blockKV = request.blockKV ?? spec.tiling.blockKV;
  positive('blockQ', blockQ);
  positive('blockKV', blockKV);
  positive('rowsPerThread', request.rowsPerThread);
  const rowsPerThread = request.rowsPerThread ?? 1;
  const unroll = request.unroll ?? false;
  const stages: ('shared' | 'private')[] = request.qStage
    ? [request.qStage]
    : ['shared', 'private'];

  if (blockQ !== undefined || blockKV !== undefined) {
    const bq = blockQ ?? Math.min(64, pow2AtLeast(spec.seqQ));
    const bk = blockKV ?? Math.min(32, pow2AtLeast(spec.seqKV));
    if (bq % rowsPerThread !== 0)
      throw new SpecError(`blockQ (${bq}) must be a multiple of rowsPerThread (${rowsPerThread})`);
    let problem = '';
    for (const qStage of stages) {
      const tile = { blockQ: bq, blockKV: bk, rowsPerThread, qStage, unroll };
      const p = tileProblem(spec, tile, limits);
      if (p === null) return tile;
      problem ||= p;
    }
    throw new ResourceLimitError(problem);
  }
  const capQ = pow2AtLeast(spec.seqQ);
  const capKV = pow2AtLeast(spec.seqKV);
  let first = '';
  for (const qStage of stages) {
    for (const [pq, pk] of PREFERENCE) {
      const bq = Math.max(rowsPerThread, Math.min(pq * rowsPerThread, capQ));
      if (bq % rowsPerThread !== 0) continue;
      const tile = { blockQ: bq, blockKV: Math.min(pk, capKV), rowsPerThread, qStage, unroll };
      const p = tileProblem(spec, tile, limits);
      if (p === null) return tile;
      first ||= p;
    }
  }
  throw new ResourceLimitError(`no fused-kernel tile fits this device: ${first}`);
}

export const tileKey = (t: FlashTile): string =>
  `${t.blockQ}x${t.blockKV}r${t.rowsPerThread}${t.qStage[0]}${t.unroll ? 'u' : ''}`;
