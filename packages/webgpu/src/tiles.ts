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

/**
 * The run's tile: explicit run options must fit (else ResourceLimitError naming the limit); the
 * spec's tiling hints are used when they fit and ignored otherwise; the default is the first of
 * PREFERENCE that fits, with queries in workgroup memory. Queries in registers and unrolled loops
 * only when asked for: drivers that compile private arrays slowly (Mesa's lavapipe) suffer.
 */
export function chooseFlashTile(
  spec: AttentionSpec,
  limits: GpuLimits,
  request: TileRequest = {},
): FlashTile {
  positive('blockQ', request.blockQ);
  positive('blockKV', request.blockKV);
  positive('rowsPerThread', request.rowsPerThread);
  const rowsPerThread = request.rowsPerThread ?? 1;
  const unroll = request.unroll ?? false;
  const qStage = request.qStage ?? 'shared';
  const capQ = pow2AtLeast(spec.seqQ);
  const capKV = pow2AtLeast(spec.seqKV);

  if (request.blockQ !== undefined || request.blockKV !== undefined) {
    const bq = request.blockQ ?? Math.min(64, capQ);
    const bk = request.blockKV ?? Math.min(32, capKV);
    if (bq % rowsPerThread !== 0)
      throw new SpecError(`blockQ (${bq}) must be a multiple of rowsPerThread (${rowsPerThread})`);
    const tile = { blockQ: bq, blockKV: bk, rowsPerThread, qStage, unroll };
    const problem = tileProblem(spec, tile, limits);
    if (problem !== null) throw new ResourceLimitError(problem);
    return tile;
  }
  // Candidates as (blockQ, blockKV): the spec's hint first, then the preferences scaled by rows.
  const candidates: [number, number][] = [
    ...(spec.tiling.blockQ !== undefined || spec.tiling.blockKV !== undefined
      ? [[spec.tiling.blockQ ?? 64, spec.tiling.blockKV ?? 32] as [number, number]]
      : []),
    ...PREFERENCE.map(([q, k]) => [q * rowsPerThread, k] as [number, number]),
  ];
  let first = '';
  for (const [pq, pk] of candidates) {
    const bq = Math.max(rowsPerThread, Math.min(pq, capQ));
    if (bq % rowsPerThread !== 0) continue;
    const tile = { blockQ: bq, blockKV: Math.min(pk, capKV), rowsPerThread, qStage, unroll };
    const p = tileProblem(spec, tile, limits);
    if (p === null) return tile;
    first ||= p;
  }
  throw new ResourceLimitError(`no fused-kernel tile fits this device: ${first}`);
}

export const tileKey = (t: FlashTile): string =>
  `${t.blockQ}x${t.blockKV}r${t.rowsPerThread}${t.qStage[0]}${t.unroll ? 'u' : ''}`;
