/// <reference types="@webgpu/types" preserve="true" />
/**
 * What the backend façade and its kernel planners (forward, backward, programs) share: the
 * resident-tensor records, the plan context (device, pool, pipeline cache, limits) and the helpers
 * that launch passes and read buffers back. Lives below backend.ts so planners never import it.
 */
import {
  type AttentionSpec,
  ResourceLimitError,
  type RunOptions,
  TesseraError,
} from '@tessera/core';
import { type GpuContext, MAP_READ_MODE, Usage } from './gpu.js';
import type { BufferPool } from './pool.js';
import type { TileRequest } from './tiles.js';
import type { FlashTile } from './wgsl/flash.js';

export interface WebGpuRunOptions extends RunOptions, TileRequest {}

/** q, k, v uploaded once and reused by many runs of one spec. */
export interface ResidentInputs {
  readonly spec: AttentionSpec;
  readonly q: GPUBuffer;
  readonly k: GPUBuffer;
  readonly v: GPUBuffer;
  readonly storage: 'f32' | 'f16';
}

/** out and lse left on the device; `readback` copies them to the host. */
export interface ResidentOutputs {
  readonly spec: AttentionSpec;
  readonly out: GPUBuffer;
  readonly lse: GPUBuffer;
}

export interface TimestampWrites {
  readonly querySet: GPUQuerySet;
  readonly beginIndex: number;
  readonly endIndex: number;
}

/** Everything one run dispatches, bound to its buffers; encode it as often as wanted. */
export interface PreparedRun {
  readonly spec: AttentionSpec;
  readonly strategy: 'tiled' | 'naive';
  readonly kernel: 'flash' | 'naive' | 'linear';
  readonly tile: FlashTile | null;
  readonly outputs: ResidentOutputs;
  /** Bytes of device memory allocated beyond q, k, v, out and lse (score buffer, layout, states). */
  readonly extraBytes: number;
  readonly passes: number;
  encode(encoder: GPUCommandEncoder, timestamps?: TimestampWrites): void;
  /** Returns the temporaries to the pool; the outputs stay until `release(outputs)`. */
  dispose(): void;
}

/** One compute dispatch, bound. */
export interface Pass {
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  readonly x: number;
  readonly y: number;
  readonly z: number;
}

/** Shared machinery the kernel planners use. */
export interface PlanContext {
  readonly ctx: GpuContext;
  readonly pool: BufferPool;
  pipeline(
    key: string,
    code: string,
    entryPoint: string,
    layout?: GPUPipelineLayout,
  ): Promise<GPUComputePipeline>;
  checkBinding(name: string, bytes: number): void;
  storageFor(spec: AttentionSpec): 'f32' | 'f16';
  /** A storage buffer holding `data`, from the pool. */
  upload(data: ArrayBufferView, label: string, extraUsage?: number): GPUBuffer;
  tensorsBuffer(spec: AttentionSpec): GPUBuffer | null;
}

/** Usage of every storage tensor the backend allocates. */
export const STORAGE = Usage.STORAGE | Usage.COPY_DST | Usage.COPY_SRC;

/** Encodes passes, one compute pass each; timestamps around the first and the last. */
export function encodePasses(
  encoder: GPUCommandEncoder,
  passes: readonly Pass[],
  ts?: TimestampWrites,
): void {
  passes.forEach((p, i) => {
    const timestampWrites: GPUComputePassTimestampWrites | undefined = ts
      ? {
          querySet: ts.querySet,
          ...(i === 0 ? { beginningOfPassWriteIndex: ts.beginIndex } : {}),
          ...(i === passes.length - 1 ? { endOfPassWriteIndex: ts.endIndex } : {}),
        }
      : undefined;
    const pass = encoder.beginComputePass(
      timestampWrites && (i === 0 || i === passes.length - 1) ? { timestampWrites } : undefined,
    );
    pass.setPipeline(p.pipeline);
    pass.setBindGroup(0, p.bindGroup);
    pass.dispatchWorkgroups(p.x, p.y, p.z);
    pass.end();
  });
}

/**
 * Runs `build` inside validation and out-of-memory error scopes: its own failure first, then an
 * out-of-memory as ResourceLimitError, then a validation error.
 */
export async function withErrorScopes<T>(device: GPUDevice, build: () => Promise<T>): Promise<T> {
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  let result: T | undefined;
  let failure: unknown;
  let failed = false;
  try {
    result = await build();
  } catch (e) {
    failure = e;
    failed = true;
  }
  const validation = await device.popErrorScope();
  const oom = await device.popErrorScope();
  if (failed) throw failure;
  if (oom) throw new ResourceLimitError(`the device ran out of memory: ${oom.message}`);
  if (validation)
    throw new TesseraError('ERR_WEBGPU', `WebGPU validation error: ${validation.message}`);
  return result as T;
}

/** Copies `lengths[i]` f32 values from each buffer to the host, in one staging buffer. */
export async function readF32(
  p: PlanContext,
  parts: readonly { buffer: GPUBuffer; length: number }[],
): Promise<Float32Array[]> {
  const offsets: number[] = [];
  let bytes = 0;
  for (const part of parts) {
    offsets.push(bytes);
    bytes += Math.ceil((part.length * 4) / 16) * 16;
  }
  const staging = p.pool.acquire(
    Math.max(16, bytes),
    Usage.MAP_READ | Usage.COPY_DST,
    'tessera readback',
  );
  const enc = p.ctx.device.createCommandEncoder();
  parts.forEach((part, i) => {
    if (part.length > 0)
      enc.copyBufferToBuffer(part.buffer, 0, staging, offsets[i] as number, part.length * 4);
  });
  p.ctx.device.queue.submit([enc.finish()]);
  await staging.mapAsync(MAP_READ_MODE);
  const range = staging.getMappedRange();
  const out = parts.map((part, i) => {
    const at = offsets[i] as number;
    return new Float32Array(range.slice(at, at + part.length * 4));
  });
  staging.unmap();
  p.pool.release(staging);
  return out;
}
