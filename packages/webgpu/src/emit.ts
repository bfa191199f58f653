/** emitWgsl: the WGSL of a spec, without a device (limits default to WebGPU's baseline). */
import type { AttentionSpec, Strategy } from '@tessera/core';
import {
  type BackwardModules,
  emitBackward,
  type WebGpuBackwardOptions,
} from './backward/index.js';
import type { GpuLimits } from './gpu.js';
import { chooseFlashTile, type TileRequest } from './tiles.js';
import { emitFlash } from './wgsl/flash.js';
import { emitLinear, linearLayout } from './wgsl/linear.js';
import { emitNaive } from './wgsl/naive.js';

export interface EmitOptions extends TileRequest {
  readonly strategy?: Strategy;
  readonly storage?: 'f32' | 'f16';
  readonly subgroups?: boolean;
  /** Device limits to fit the tile to; WebGPU's default limits when left out. */
  readonly limits?: GpuLimits;
}

/** WebGPU's default limits: what every adapter offers. */
export const DEFAULT_LIMITS: GpuLimits = {
  maxBufferSize: 268435456,
  maxStorageBufferBindingSize: 134217728,
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBuffersPerShaderStage: 8,
  minUniformBufferOffsetAlignment: 256,
};

export function emitWgsl(spec: AttentionSpec, options: EmitOptions = {}): string {
  const storage = options.storage ?? 'f32';
  if (spec.kernel.type === 'linear') return emitLinear(spec, linearLayout(spec), storage);
  if ((options.strategy ?? 'tiled') === 'naive')
    return emitNaive(spec, { storage, subgroups: options.subgroups ?? false, softmaxThreads: 256 });
  const tile = chooseFlashTile(spec, options.limits ?? DEFAULT_LIMITS, options);
  return emitFlash(spec, { tile, storage });
}

export interface BackwardEmitOptions extends WebGpuBackwardOptions {
  readonly storage?: 'f32' | 'f16';
  /** Device limits to fit the tile to; WebGPU's default limits when left out. */
  readonly limits?: GpuLimits;
}

/** The backward's WGSL modules of a spec, without a device (limits default to WebGPU's baseline). */
export function emitBackwardWgsl(
  spec: AttentionSpec,
  options: BackwardEmitOptions = {},
): BackwardModules {
  return emitBackward(spec, options.limits ?? DEFAULT_LIMITS, options.storage ?? 'f32', options);
}
