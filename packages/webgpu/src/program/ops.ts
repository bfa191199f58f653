/// <reference types="@webgpu/types" preserve="true" />
/**
 * The WebGPU backend's ProgramOps: every value (tensor, selection, grouping) is a GPU buffer kept
 * on the device; each step
 * records its copies and dispatches into one command encoder and submits it. Nothing is read back
 * between steps. Steps it cannot run raise UnsupportedError (never a CPU fallback).
 */
import {
  type AttentionSpec,
  type ProgramOps,
  ResourceLimitError,
  SpecError,
  TesseraError,
  UnsupportedError,
} from '@tessera/core';
import type { PlanContext, ResidentInputs, ResidentOutputs } from '../context.js';
import { MAP_READ_MODE, Usage } from '../gpu.js';
import { Recording } from './recording.js';
import { CandidateLayouts } from './select.js';
import { recordStep } from './steps.js';
import { elementsOf, type GpuValue } from './values.js';

/** What the backend lends the program ops. */
export interface ProgramHost {
  readonly plan: PlanContext;
  /** Throws once the backend is disposed or its device lost. */
  alive(): void;
  runResident(spec: AttentionSpec, inputs: ResidentInputs): Promise<ResidentOutputs>;
}

/** A selection's layout as read back from the device (tests compare it with the CPU's). */
export interface SelectionLayout {
  readonly rowStart: Int32Array;
  readonly kvBlocks: Int32Array;
  readonly full: Uint8Array;
}

/** A grouping as read back from the device: per (batch, head) slice, `rows` entries each. */
export interface GroupingArrays {
  readonly rank: Int32Array;
  readonly order: Int32Array;
}

export interface WebGpuProgramOps extends ProgramOps<GpuValue> {
  /** Copies a selection's layout back (for tests and inspection; programs never need it). */
  readSelection(value: GpuValue): Promise<SelectionLayout>;
  /** Copies a grouping's rank and order back (for tests and inspection; programs never need it). */
  readGrouping(value: GpuValue): Promise<GroupingArrays>;
  /** Destroys the cached candidate layouts; the backend calls it on dispose. */
  dispose(): void;
}

export function createProgramOps(host: ProgramHost): WebGpuProgramOps {
  const p = host.plan;
  const device = p.ctx.device;
  const candidates = new CandidateLayouts(p);
  const deps = {
    candidates,
    runResident: (spec: AttentionSpec, inputs: ResidentInputs) => host.runResident(spec, inputs),
  };

  async function copyBack(buffer: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    host.alive();
    const size = Math.ceil(bytes / 4) * 4;
    const staging = p.pool.acquire(size, Usage.MAP_READ | Usage.COPY_DST, 'tessera readback');
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(buffer, 0, staging, 0, size);
    device.queue.submit([enc.finish()]);
    try {
      await staging.mapAsync(MAP_READ_MODE);
    } catch (cause) {
      host.alive();
      throw cause;
    }
    const data = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    p.pool.release(staging);
    return data;
  }

  return {
    async upload(data, shape) {
      host.alive();
      const bytes = elementsOf(shape) * 4;
      if (data.length * 4 !== bytes)
        throw new SpecError(`upload: ${data.length} elements do not fill shape [${shape}]`);
      p.checkBinding('program input', bytes);
      return { kind: 'tensor', shape, buffer: p.upload(data, 'tessera program input') };
    },
    async download(value) {
      if (value.kind !== 'tensor')
        throw new UnsupportedError(
          `only tensors can be downloaded (a ${value.kind} stays on the GPU)`,
        );
      return new Float32Array(await copyBack(value.buffer, elementsOf(value.shape) * 4));
    },
    async readSelection(value) {
      if (value.kind !== 'selection') throw new UnsupportedError('readSelection needs a selection');
      const words = new Uint32Array(
        await copyBack(value.buffer, (value.rows + 1 + value.entries) * 4),
      );
      const raw = words.subarray(value.rows + 1);
      return {
        rowStart: Int32Array.from(words.subarray(0, value.rows + 1)),
        kvBlocks: Int32Array.from(raw, (w) => w & 0x7fffffff),
        full: Uint8Array.from(raw, (w) => w >>> 31),
      };
    },
    async readGrouping(value) {
      if (value.kind !== 'grouping') throw new UnsupportedError('readGrouping needs a grouping');
      const n = value.batch * value.heads * value.rows;
      const words = new Int32Array(await copyBack(value.buffer, 2 * n * 4));
      return { rank: words.slice(0, n), order: words.slice(n) };
    },
    bytes(value) {
      return value.buffer.size;
    },
    free(value) {
      p.pool.release(value.buffer);
    },
    async step(step, env) {
      host.alive();
      device.pushErrorScope('out-of-memory');
      device.pushErrorScope('validation');
      const rec = new Recording(p);
      let written: Record<string, GpuValue> | undefined;
      let failure: unknown;
      try {
        written = await recordStep(rec, step, env, deps);
        device.queue.submit([rec.encoder.finish()]);
      } catch (e) {
        failure = e;
      }
      const validation = await device.popErrorScope();
      const oom = await device.popErrorScope();
      // Later submissions are ordered after this one, so the temporaries may be reused now.
      const ok = failure === undefined && !validation && !oom;
      for (const t of new Set(ok ? rec.temps : [...rec.temps, ...rec.made])) p.pool.release(t);
      if (failure !== undefined) throw failure;
      if (oom) throw new ResourceLimitError(`the device ran out of memory: ${oom.message}`);
      if (validation)
        throw new TesseraError(
          'ERR_WEBGPU',
          `WebGPU validation error in a ${step.op} step: ${validation.message}`,
        );
      return written as Record<string, GpuValue>;
    },
    dispose() {
      candidates.dispose();
    },
  };
}
