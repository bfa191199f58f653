/**
 * What every program step allocates and launches through: device buffers from the pool (refused
 * after dispose), a spec's captured tensors on the device, and one launch for any program kernel
 * (compiled and loaded through the context's module cache, on the default stream). It sits on the
 * CudaContext, below the backend's façade, which it never imports.
 */
import { type AttentionSpec, InputError } from '@tessera/core';
import { packParams } from '../emit/index.js';
import type { CudaContext } from '../runtime/context.js';
import type { DeviceBuffer } from '../runtime/device.js';
import type { ProgramKernel } from './emit.js';
import { type CudaTensorValue, type Env, elementsOf, type Written } from './values.js';

export class ProgramRunner {
  private readonly captured = new Map<AttentionSpec, Promise<DeviceBuffer[]>>();
  private disposed = false;

  constructor(readonly context: CudaContext) {}

  alloc(bytes: number): DeviceBuffer {
    if (this.disposed) throw new InputError('cuda backend used after dispose()');
    return this.context.cuda.pool.alloc(Math.max(4, bytes));
  }

  upload(buffer: DeviceBuffer, data: ArrayBufferView): Promise<void> {
    return this.context.cuda.upload(buffer, data);
  }

  /** A new f32 tensor for `name` (its shape from the program). */
  output(env: Env, name: string): CudaTensorValue {
    const shape = env.shape(name);
    return { kind: 'tensor', shape, buffer: this.alloc(4 * elementsOf(shape)) };
  }

  /**
   * Allocates a step's `out` (and `lse` when it names one), runs `launch` with their pointers,
   * and returns them; on failure frees them. `temps` are freed either way, after the launch on
   * the default stream.
   */
  async withOutputs(
    env: Env,
    step: { readonly out: string; readonly lse?: string },
    temps: DeviceBuffer[],
    launch: (ptrs: Record<string, bigint>) => Promise<void>,
  ): Promise<Written> {
    const out = this.output(env, step.out);
    const lse = step.lse !== undefined ? this.output(env, step.lse) : null;
    try {
      await launch({ out: out.buffer.ptr, ...(lse ? { lse: lse.buffer.ptr } : {}) });
    } catch (e) {
      out.buffer.release();
      lse?.buffer.release();
      throw e;
    } finally {
      for (const t of temps) t.release();
    }
    return { [step.out]: out, ...(lse && step.lse ? { [step.lse]: lse } : {}) };
  }

  /** The spec's captured tensors on the device, uploaded once per spec. */
  capturedOf(spec: AttentionSpec): Promise<DeviceBuffer[]> {
    let c = this.captured.get(spec);
    if (!c) {
      c = (async () => {
        const bs: DeviceBuffer[] = [];
        for (const t of spec.tensors) {
          const b = this.alloc(t.data.byteLength);
          bs.push(b);
          await this.upload(b, t.data);
        }
        return bs;
      })();
      this.captured.set(spec, c);
    }
    return c;
  }

  /** Compiles (cached), loads and launches a program kernel on the default stream. */
  async launch(k: ProgramKernel, values: Record<string, bigint | number>): Promise<void> {
    const { functions } = await this.context.loadModule(
      { source: k.source, kernels: [k.entry] },
      k.entry.name,
    );
    const fn = functions[0] as bigint;
    this.context.launch(fn, k.entry, k.grid, packParams(k.entry.params, values));
  }

  /** Refuses later allocations and frees the captured tensors. */
  async dispose(): Promise<void> {
    this.disposed = true;
    for (const c of this.captured.values()) for (const b of await c.catch(() => [])) b.release();
    this.captured.clear();
  }
}
