/**
 * What the CUDA program ops hold: f32 tensors in [batch, heads, rows, cols] order, block selections
 * and groupings, all device buffers kept on the device between steps.
 */
import { type BlockLayout, InputError, type SelectStep, type Shape } from '@tessera/core';
import type { StepEnv } from '@tessera/core/backend';
import type { DeviceBuffer } from '../runtime/device.js';

export interface CudaTensorValue {
  readonly kind: 'tensor';
  readonly shape: Shape;
  readonly buffer: DeviceBuffer;
}

/**
 * A selection: a CSR block layout in the format the flash kernels walk. `layout` is its host shape
 * and row starts (written by the host: they do not depend on the data); the entries are only on
 * the device (written by the select kernel, always partial).
 */
export interface CudaSelectionValue {
  readonly kind: 'selection';
  readonly step: SelectStep;
  readonly layout: BlockLayout;
  readonly rowStart: DeviceBuffer;
  readonly kvBlocks: DeviceBuffer;
  readonly full: DeviceBuffer;
}

/**
 * A grouping of the `rows` rows of each of `batch × heads` slices into groups of `size`: per slice,
 * `rank` (row → place in the (cluster, row) order) and `order` (place → row), int32, on the device.
 */
export interface CudaGroupingValue {
  readonly kind: 'grouping';
  readonly batch: number;
  readonly heads: number;
  readonly rows: number;
  readonly size: number;
  readonly rank: DeviceBuffer;
  readonly order: DeviceBuffer;
}

export type CudaValue = CudaTensorValue | CudaSelectionValue | CudaGroupingValue;

export type Env = StepEnv<CudaValue>;
export type Written = Record<string, CudaValue>;

export const elementsOf = (s: Shape): number => s[0] * s[1] * s[2] * s[3];

export function tensorOf(env: Env, name: string): CudaTensorValue {
  const v = env.get(name);
  if (v.kind !== 'tensor') throw new InputError(`'${name}' is a ${v.kind}, not a tensor`);
  return v;
}

export function selectionOf(env: Env, name: string): CudaSelectionValue {
  const v = env.get(name);
  if (v.kind !== 'selection') throw new InputError(`'${name}' is not a selection`);
  return v;
}

export function groupingOf(env: Env, name: string): CudaGroupingValue {
  const v = env.get(name);
  if (v.kind !== 'grouping') throw new InputError(`'${name}' is not a grouping`);
  return v;
}
