/// <reference types="@webgpu/types" preserve="true" />
/** One step's command encoder, the buffers it allocates and the temporaries it frees after. */
import type { Shape } from '@tessera/core';
import type { PlanContext } from '../context.js';
import { Usage } from '../gpu.js';
import { gridSize } from './grid.js';
import { elementsOf, type GpuTensor } from './values.js';

const STORAGE = Usage.STORAGE | Usage.COPY_DST | Usage.COPY_SRC;

export class Recording {
  readonly encoder: GPUCommandEncoder;
  /** Released once the step is submitted (later submissions are ordered after it). */
  readonly temps: GPUBuffer[] = [];
  /** Every buffer allocated for the step's results (released too if the step fails). */
  readonly made: GPUBuffer[] = [];

  constructor(readonly plan: PlanContext) {
    this.encoder = plan.ctx.device.createCommandEncoder();
  }

  /** A storage buffer from the pool, checked against the binding limits. */
  buffer(bytes: number, label: string): GPUBuffer {
    this.plan.checkBinding(label, bytes);
    return this.plan.pool.acquire(bytes, STORAGE, label);
  }

  /** A result tensor of `shape`. */
  output(shape: Shape, label: string): GpuTensor {
    const buffer = this.buffer(elementsOf(shape) * 4, label);
    this.made.push(buffer);
    return { kind: 'tensor', shape, buffer };
  }

  /** The tensors back to back in one temporary buffer (bindings are few; branches are many). */
  concat(parts: readonly GpuTensor[], label: string): GPUBuffer {
    if (parts.length === 1) return (parts[0] as GpuTensor).buffer;
    const bytes = elementsOf((parts[0] as GpuTensor).shape) * 4;
    const buf = this.buffer(bytes * parts.length, label);
    this.temps.push(buf);
    parts.forEach((t, i) => {
      this.encoder.copyBufferToBuffer(t.buffer, 0, buf, i * bytes, bytes);
    });
    return buf;
  }

  /** One pass of a grid kernel (emitGridKernel) over `items`, buffers bound in order. */
  async dispatch(code: string, what: string, items: number, buffers: GPUBuffer[]): Promise<void> {
    const limit = this.plan.ctx.limits.maxComputeWorkgroupsPerDimension;
    const [x, y] = gridSize(items, limit, what);
    const pipeline = await this.plan.pipeline(`program|${code}`, code, 'main');
    const bindGroup = this.plan.ctx.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const pass = this.encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, 1);
    pass.end();
  }
}
