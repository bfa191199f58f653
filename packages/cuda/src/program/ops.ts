/**
 * ProgramOps for the CUDA backend: program tensors are f32 device buffers in [batch, heads, rows,
 * cols] order and stay on the device between steps; selections are CSR block layouts on the device
 * (row starts from the host, entries from the select kernel) in the format the flash kernels walk;
 * groupings are `rank` / `order` int32 buffers per (batch, head), written by the group kernels.
 * Built on the CudaContext; the backend lends only its own per-spec kernel (`prepare`).
 */
import {
  type AttentionSpec,
  InputError,
  type ProgramOps,
  type ProgramStep,
  type Shape,
} from '@tessera/core';
import { dispatchStep, type StepEnv, type StepTable } from '@tessera/core/backend';
import type { CudaContext } from '../runtime/context.js';
import { FeatureWriter } from './features.js';
import { ProgramRunner } from './runner.js';
import { SelectPlans } from './select.js';
import { type SpecKernel, stepTable } from './steps.js';
import { type CudaValue, elementsOf } from './values.js';

export type { SpecKernel } from './steps.js';
export type {
  CudaGroupingValue,
  CudaSelectionValue,
  CudaTensorValue,
  CudaValue,
} from './values.js';

/** The program steps on one CUDA device; created by the backend as `backend.program`. */
export class CudaProgramOps implements ProgramOps<CudaValue> {
  private readonly runner: ProgramRunner;
  private readonly selects: SelectPlans;
  private readonly features: FeatureWriter;
  private readonly table: StepTable<CudaValue>;

  /** `prepare`: the backend's kernel for a spec (flash or linear), compiled and cached by it. */
  constructor(
    readonly context: CudaContext,
    prepare: (spec: AttentionSpec) => Promise<SpecKernel>,
  ) {
    const runner = new ProgramRunner(context);
    this.runner = runner;
    this.selects = new SelectPlans(runner);
    this.features = new FeatureWriter(context, (bytes) => runner.alloc(bytes));
    this.table = stepTable({ runner, selects: this.selects, features: this.features, prepare });
  }

  async upload(data: Float32Array, shape: Shape): Promise<CudaValue> {
    if (!(data instanceof Float32Array) || data.length !== elementsOf(shape))
      throw new InputError(`upload: expected a Float32Array of ${elementsOf(shape)} elements`);
    const buffer = this.runner.alloc(data.byteLength);
    try {
      await this.runner.upload(buffer, data);
    } catch (e) {
      buffer.release();
      throw e;
    }
    return { kind: 'tensor', shape, buffer };
  }

  async download(value: CudaValue): Promise<Float32Array> {
    if (value.kind !== 'tensor')
      throw new InputError(`a ${value.kind} cannot be downloaded (only tensors can)`);
    const out = new Float32Array(elementsOf(value.shape));
    await this.context.cuda.download(value.buffer, out);
    return out;
  }

  bytes(value: CudaValue): number {
    if (value.kind === 'tensor') return value.buffer.bytes;
    if (value.kind === 'grouping') return value.rank.bytes + value.order.bytes;
    return value.rowStart.bytes + value.kvBlocks.bytes + value.full.bytes;
  }

  free(value: CudaValue): void {
    if (value.kind === 'tensor') value.buffer.release();
    else if (value.kind === 'grouping') for (const b of [value.rank, value.order]) b.release();
    else for (const b of [value.rowStart, value.kvBlocks, value.full]) b.release();
  }

  async step(step: ProgramStep, env: StepEnv<CudaValue>): Promise<Record<string, CudaValue>> {
    return dispatchStep(this.table, step, env);
  }

  /** Frees the captured tensors, select plans and feature matrices (the context unloads modules). */
  async dispose(): Promise<void> {
    await this.runner.dispose();
    await this.selects.dispose();
    await this.features.dispose();
  }
}
