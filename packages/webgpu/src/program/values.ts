/// <reference types="@webgpu/types" preserve="true" />
/** What the WebGPU program ops hold: f32 tensors, block selections and groupings, all GPU buffers. */
import type { SelectStep, Shape } from '@tessera/core';

export interface GpuTensor {
  readonly kind: 'tensor';
  readonly shape: Shape;
  /** f32 elements in [batch, heads, rows, cols] order (the buffer may be padded). */
  readonly buffer: GPUBuffer;
}

/**
 * A selection: a block layout in the fused kernel's CSR form, `rows + 1` row starts (written by
 * the host: they do not depend on the data) then `kvBlock | full << 31` entries (written by the
 * select kernel, always partial). One row per (batch, query head, query block).
 */
export interface GpuSelection {
  readonly kind: 'selection';
  readonly step: SelectStep;
  readonly buffer: GPUBuffer;
  readonly rows: number;
  readonly numQBlocks: number;
  /** The row starts (host copy; the buffer holds them too). */
  readonly rowStart: Uint32Array;
  /** Total entries (the last row start). */
  readonly entries: number;
}

/**
 * A grouping (a `group` step's result): u32 `rank` of every row, `[batch, heads, rows]` in order,
 * then `order` (the row at each place) at word `batch · heads · rows`. Written by the group
 * kernels; never read back by a program.
 */
export interface GpuGrouping {
  readonly kind: 'grouping';
  readonly buffer: GPUBuffer;
  readonly batch: number;
  readonly heads: number;
  readonly rows: number;
  /** Rows per group (the last group of a slice may be shorter). */
  readonly size: number;
}

export type GpuValue = GpuTensor | GpuSelection | GpuGrouping;

export const elementsOf = (s: Shape): number => s[0] * s[1] * s[2] * s[3];
