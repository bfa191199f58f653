/**
 * The `select` step on the host side: per spec and block shape, the static candidate layout on the
 * device, the score scratch and the data-independent row starts of the selection (built once), and
 * the select kernel's launch, which writes the selection's entries.
 */
import {
  type AttentionSpec,
  type BlockLayout,
  blockLayout,
  ceilDiv,
  type SelectStep,
} from '@tessera/core';
import type { DeviceBuffer } from '../runtime/device.js';
import type { ProgramKernel } from './emit.js';
import { emitSelect } from './emit-attention.js';
import type { ProgramRunner } from './runner.js';
import type { CudaSelectionValue, CudaTensorValue } from './values.js';

/** What `select` reuses between runs for one spec and block shape: the candidate layout, scratch. */
interface SelectPlan {
  readonly kernel: ProgramKernel;
  readonly rowStart: Int32Array;
  readonly buffers: readonly DeviceBuffer[];
  readonly ptrs: Readonly<Record<string, bigint>>;
}

/** Select plans per spec and configuration; their buffers are freed at dispose. */
export class SelectPlans {
  private readonly plans = new Map<AttentionSpec, Map<string, Promise<SelectPlan>>>();

  constructor(private readonly runner: ProgramRunner) {}

  /** Candidate layout on the device, score scratch and row starts for one select configuration. */
  get(step: SelectStep): Promise<SelectPlan> {
    const key = `${step.blockQ}x${step.blockKV}|${step.topK}|${step.local}`;
    let perSpec = this.plans.get(step.spec);
    if (!perSpec) {
      perSpec = new Map();
      this.plans.set(step.spec, perSpec);
    }
    let plan = perSpec.get(key);
    if (!plan) {
      plan = this.build(step);
      perSpec.set(key, plan);
      plan.catch(() => perSpec?.delete(key));
    }
    return plan;
  }

  async dispose(): Promise<void> {
    const plans = [...this.plans.values()].flatMap((m) => [...m.values()]);
    for (const p of plans) for (const b of (await p.catch(() => null))?.buffers ?? []) b.release();
    this.plans.clear();
  }

  private async build(step: SelectStep): Promise<SelectPlan> {
    const { spec, blockQ, blockKV, topK } = step;
    const stat = blockLayout(spec, { blockQ, blockKV });
    const nq = stat.numQBlocks;
    const rows = spec.batch * spec.headsQ * nq;
    const rowStart = new Int32Array(rows + 1);
    const scoreBase = new Int32Array(rows + 1);
    for (let b = 0; b < spec.batch; b++) {
      for (let h = 0; h < spec.headsQ; h++) {
        const slice = (stat.batches === 1 ? 0 : b) * stat.heads + (stat.heads === 1 ? 0 : h);
        for (let qb = 0; qb < nq; qb++) {
          const r = (b * spec.headsQ + h) * nq + qb;
          const sr = slice * nq + qb;
          const n = (stat.rowStart[sr + 1] as number) - (stat.rowStart[sr] as number);
          rowStart[r + 1] = (rowStart[r] as number) + Math.min(topK, n);
          scoreBase[r + 1] = (scoreBase[r] as number) + n;
        }
      }
    }
    const buffers: DeviceBuffer[] = [];
    const put = async (data: Int32Array): Promise<DeviceBuffer> => {
      const b = this.runner.alloc(data.byteLength);
      buffers.push(b);
      await this.runner.upload(b, data);
      return b;
    };
    try {
      const kernel = emitSelect(step, { batches: stat.batches, heads: stat.heads });
      const rs = await put(stat.rowStart);
      const kb = await put(stat.kvBlocks);
      const base = await put(scoreBase);
      const scores = this.runner.alloc(4 * (scoreBase[rows] as number));
      buffers.push(scores);
      return {
        kernel,
        rowStart,
        buffers,
        ptrs: { row_start: rs.ptr, kv_blocks: kb.ptr, score_base: base.ptr, scores: scores.ptr },
      };
    } catch (e) {
      for (const b of buffers) b.release();
      throw e;
    }
  }
}

export async function runSelect(
  runner: ProgramRunner,
  step: SelectStep,
  q: CudaTensorValue,
  k: CudaTensorValue,
  plans: SelectPlans,
): Promise<CudaSelectionValue> {
  const plan = await plans.get(step);
  const { spec, blockQ, blockKV } = step;
  const total = plan.rowStart[plan.rowStart.length - 1] as number;
  const owned: DeviceBuffer[] = [];
  try {
    const rowStart = runner.alloc(plan.rowStart.byteLength);
    owned.push(rowStart);
    await runner.upload(rowStart, plan.rowStart);
    const kvBlocks = runner.alloc(4 * total);
    owned.push(kvBlocks);
    const full = runner.alloc(total); // every selected block is partial: the mask applies
    owned.push(full);
    runner.context.cuda.fill(full, 0);
    await runner.launch(plan.kernel, {
      ...plan.ptrs,
      q: q.buffer.ptr,
      k: k.buffer.ptr,
      sel_start: rowStart.ptr,
      sel_blocks: kvBlocks.ptr,
    });
    const layout: BlockLayout = {
      seqQ: spec.seqQ,
      seqKV: spec.seqKV,
      blockQ,
      blockKV,
      numQBlocks: ceilDiv(spec.seqQ, blockQ),
      numKVBlocks: ceilDiv(spec.seqKV, blockKV),
      batches: spec.batch,
      heads: spec.headsQ,
      rowStart: plan.rowStart,
      kvBlocks: new Int32Array(0),
      full: new Uint8Array(0),
    };
    return { kind: 'selection', step, layout, rowStart, kvBlocks, full };
  } catch (e) {
    for (const b of owned) b.release();
    throw e;
  }
}
