/**
 * The backward plan, decided once per (spec, device limits, options) and passed to the emitters and
 * the launcher: tile, which captured tensors get gradients and where their per-workgroup partials
 * accumulate, launch grids, and the block layout in both directions (row view: the KV blocks each
 * Q block visits, as the forward walks them; column view: the Q blocks that visit each KV block).
 */
import {
  type AttentionSpec,
  type BlockLayout,
  blockLayout,
  ResourceLimitError,
  SpecError,
} from '@tessera/core';
import {
  gradientSlots,
  layoutColumns,
  type ScoreModGradient,
  scoreModGradient,
} from '@tessera/core/backend';
import type { GpuLimits } from '../gpu.js';
import { ceil4 } from '../wgsl/common.js';

/** Rows of one tile: blockQ query rows meet blockKV key rows. */
export interface BackwardTile {
  readonly blockQ: number;
  readonly blockKV: number;
}

export interface BackwardRequest {
  readonly blockQ?: number;
  readonly blockKV?: number;
  /**
   * Where the dQ pass accumulates a workgroup's captured-tensor gradient: workgroup memory (when
   * it fits) or its slice of the global partial buffer. Chosen from the limits when left out.
   */
  readonly gradAccumulator?: 'workgroup' | 'global';
}

/** A captured f32 tensor that receives a gradient, and where it sits in the gradient vector. */
export interface GradTensor {
  readonly slot: number;
  readonly offset: number;
  readonly length: number;
}

export interface BackwardPlan {
  readonly tile: BackwardTile;
  readonly numQBlocks: number;
  readonly numKVBlocks: number;
  /** ∂s'/∂score and the tensor terms; null without a score modification. */
  readonly gradient: ScoreModGradient | null;
  /** Tensors with gradient terms (core's gradientSlots), back to back in one vector of `gradLength`. */
  readonly gradTensors: readonly GradTensor[];
  readonly gradLength: number;
  /** Where dQ workgroups accumulate tensor gradients; null when there are none. */
  readonly accumulator: 'workgroup' | 'global' | null;
  /** dQ workgroups, each writing one partial slice of `gradLength`. */
  readonly partials: number;
  /** Grids (x, y) of the passes. */
  readonly grids: {
    readonly prepass: readonly [number, number];
    readonly dkdv: readonly [number, number];
    readonly dq: readonly [number, number];
    readonly reduce: readonly [number, number];
  };
}

/** Threads of the row-wise pre-pass and of the partial reduction. */
export const ROW_THREADS = 64;

const PREFERENCE: readonly (readonly [number, number])[] = [
  [32, 32],
  [32, 16],
  [16, 16],
  [16, 8],
  [8, 8],
  [8, 4],
  [4, 4],
  [2, 2],
  [1, 1],
];

const pow2AtLeast = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/** Workgroup bytes of the dK/dV pass (staged queries, dOut rows and row statistics). */
export function dkdvWorkgroupBytes(spec: AttentionSpec, tile: BackwardTile): number {
  return tile.blockQ * (4 * (ceil4(spec.headDim) + ceil4(spec.headDimV)) + 8);
}

/** Workgroup bytes of the dQ pass (staged keys and values, tensor-gradient staging). */
export function dqWorkgroupBytes(spec: AttentionSpec, tile: BackwardTile, terms: number): number {
  const kv = tile.blockKV * 4 * (ceil4(spec.headDim) + ceil4(spec.headDimV));
  return kv + terms * tile.blockQ * tile.blockKV * 8;
}

function tileProblem(
  spec: AttentionSpec,
  tile: BackwardTile,
  terms: number,
  limits: GpuLimits,
): string | null {
  const threads = Math.max(tile.blockQ, tile.blockKV);
  const maxThreads = Math.min(
    limits.maxComputeInvocationsPerWorkgroup,
    limits.maxComputeWorkgroupSizeX,
  );
  if (threads > maxThreads)
    return `${threads} threads per workgroup exceed the device's ${maxThreads}`;
  const wg = limits.maxComputeWorkgroupStorageSize;
  const a = dkdvWorkgroupBytes(spec, tile);
  const b = dqWorkgroupBytes(spec, tile, terms);
  const what = `backward tile blockQ ${tile.blockQ} × blockKV ${tile.blockKV} (headDim ${spec.headDim}, headDimV ${spec.headDimV})`;
  if (a > wg)
    return `${what} needs ${a} bytes of workgroup memory in the dK/dV pass, more than maxComputeWorkgroupStorageSize (${wg})`;
  if (b > wg)
    return `${what} needs ${b} bytes of workgroup memory in the dQ pass, more than maxComputeWorkgroupStorageSize (${wg})`;
  return null;
}

function positive(name: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isInteger(v) || v <= 0))
    throw new SpecError(`${name} must be a positive integer (got ${String(v)})`);
}

export function planBackward(
  spec: AttentionSpec,
  limits: GpuLimits,
  request: BackwardRequest = {},
): BackwardPlan {
  positive('blockQ', request.blockQ);
  positive('blockKV', request.blockKV);
  const acc = request.gradAccumulator;
  if (acc !== undefined && acc !== 'workgroup' && acc !== 'global')
    throw new SpecError(`gradAccumulator must be 'workgroup' or 'global' (got ${String(acc)})`);
  const gradient = spec.scoreMod
    ? scoreModGradient(
        spec.scoreMod.expr,
        spec.tensors.map((t) => t.dtype),
      )
    : null;
  const terms = gradient?.tensors.length ?? 0;

  let tile: BackwardTile | null = null;
  if (request.blockQ !== undefined || request.blockKV !== undefined) {
    tile = {
      blockQ: request.blockQ ?? Math.min(32, pow2AtLeast(spec.seqQ)),
      blockKV: request.blockKV ?? Math.min(32, pow2AtLeast(spec.seqKV)),
    };
    const p = tileProblem(spec, tile, terms, limits);
    if (p) throw new ResourceLimitError(p);
  } else {
    let first = '';
    for (const [q, k] of PREFERENCE) {
      const t = {
        blockQ: Math.min(q, pow2AtLeast(spec.seqQ)),
        blockKV: Math.min(k, pow2AtLeast(spec.seqKV)),
      };
      const p = tileProblem(spec, t, terms, limits);
      if (p === null) {
        tile = t;
        break;
      }
      first ||= p;
    }
    if (!tile) throw new ResourceLimitError(`no backward tile fits this device: ${first}`);
  }

  let offset = 0;
  const gradTensors = (gradient ? gradientSlots(gradient) : []).map((slot) => {
    const length = (spec.tensors[slot] as { length: number }).length;
    const g = { slot, offset, length };
    offset += length;
    return g;
  });
  const gradLength = offset;
  const numQBlocks = Math.ceil(spec.seqQ / tile.blockQ);
  const numKVBlocks = Math.ceil(spec.seqKV / tile.blockKV);
  const bh = spec.batch * spec.headsQ;
  const partials = numQBlocks * bh;

  let accumulator: BackwardPlan['accumulator'] = null;
  if (terms > 0) {
    const room = limits.maxComputeWorkgroupStorageSize - dqWorkgroupBytes(spec, tile, terms);
    const fits = gradLength * 4 <= room;
    if (acc === 'workgroup' && !fits)
      throw new ResourceLimitError(
        `the captured-tensor gradients (${gradLength} f32) do not fit the dQ pass's remaining workgroup memory (${room} bytes)`,
      );
    accumulator = acc ?? (fits ? 'workgroup' : 'global');
  }
  if (gradLength > 0) {
    const bytes = partials * gradLength * 4;
    const max = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
    if (bytes > max)
      throw new ResourceLimitError(
        `the captured-tensor gradient partials (${partials} dQ workgroups × ${gradLength} f32 = ${bytes} bytes) exceed this device's maxStorageBufferBindingSize (${limits.maxStorageBufferBindingSize})`,
      );
  }

  const grids = {
    prepass: [Math.ceil(spec.seqQ / ROW_THREADS), bh] as const,
    dkdv: [numKVBlocks, spec.batch * spec.headsKV] as const,
    dq: [numQBlocks, bh] as const,
    reduce: [Math.max(1, Math.ceil(gradLength / ROW_THREADS)), 1] as const,
  };
  const maxDim = limits.maxComputeWorkgroupsPerDimension;
  for (const [name, [x, y]] of Object.entries(grids)) {
    if (Math.max(x, y) > maxDim)
      throw new ResourceLimitError(
        `the backward ${name} grid ${x}×${y} exceeds maxComputeWorkgroupsPerDimension (${maxDim})`,
      );
  }
  return {
    tile,
    numQBlocks,
    numKVBlocks,
    gradient,
    gradTensors,
    gradLength,
    accumulator,
    partials,
    grids,
  };
}

/** Offsets (in u32 words of the aux buffer) of the layout's two views. */
export interface LayoutWords {
  readonly words: Uint32Array;
  readonly batches: number;
  readonly heads: number;
  readonly rowStart: number;
  readonly rowEntries: number;
  readonly colStart: number;
  readonly colEntries: number;
}

const entryWord = (block: number, full: number): number => (block | (full << 31)) >>> 0;

/**
 * The column view of a layout (core's `layoutColumns`) as the kernels read it: CSR by (slice, KV
 * block), each entry the visiting Q block with its `full` flag in the top bit.
 */
function columnView(layout: BlockLayout): { start: Int32Array; entries: Uint32Array } {
  const cols = layoutColumns(layout);
  const entries = new Uint32Array(cols.qBlocks.length);
  for (let e = 0; e < entries.length; e++)
    entries[e] = entryWord(cols.qBlocks[e] as number, cols.full[e] as number);
  return { start: cols.colStart, entries };
}

/**
 * The aux buffer's words: the captured tensors (as the forward places them), then the row view,
 * then the column view. One binding serves the score mod, the mask and both walks.
 */
export function layoutWords(spec: AttentionSpec, tile: BackwardTile): LayoutWords {
  const layout = blockLayout(spec, tile);
  const cols = columnView(layout);
  const tensorWords = spec.tensors.reduce((n, t) => n + t.length, 0);
  const rowStart = tensorWords;
  const rowEntries = rowStart + layout.rowStart.length;
  const colStart = rowEntries + layout.kvBlocks.length;
  const colEntries = colStart + cols.start.length;
  const words = new Uint32Array(Math.max(4, colEntries + cols.entries.length));
  let at = 0;
  for (const t of spec.tensors) {
    words.set(new Uint32Array(t.data.buffer, t.data.byteOffset, t.length), at);
    at += t.length;
  }
  words.set(layout.rowStart, rowStart);
  for (let i = 0; i < layout.kvBlocks.length; i++)
    words[rowEntries + i] = entryWord(layout.kvBlocks[i] as number, layout.full[i] as number);
  words.set(cols.start, colStart);
  words.set(cols.entries, colEntries);
  return {
    words,
    batches: layout.batches,
    heads: layout.heads,
    rowStart,
    rowEntries,
    colStart,
    colEntries,
  };
}
