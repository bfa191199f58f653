/// <reference types="@webgpu/types" preserve="true" />
/**
 * The `select` step on the host side: the static candidate layout (uploaded once per spec and
 * block sizes), the data-independent row starts of the selection, and the select kernel's launch.
 */
import {
  type AttentionSpec,
  type BlockLayout,
  blockLayout,
  ceilDiv,
  layoutSlice,
  type SelectStep,
} from '@tessera/core';
import type { PlanContext } from '../context.js';
import { Usage } from '../gpu.js';
import type { Recording } from './recording.js';
import { emitSelect } from './select-kernel.js';
import type { GpuSelection, GpuTensor } from './values.js';

/** Candidate layouts on the device, per spec and block sizes; destroyed with the backend. */
export class CandidateLayouts {
  private readonly cache = new WeakMap<AttentionSpec, Map<string, GPUBuffer>>();
  private readonly all = new Set<GPUBuffer>();

  constructor(private readonly plan: PlanContext) {}

  get(spec: AttentionSpec, blockQ: number, blockKV: number): [BlockLayout, GPUBuffer] {
    const layout = blockLayout(spec, { blockQ, blockKV });
    const key = `${blockQ}x${blockKV}`;
    let perSpec = this.cache.get(spec);
    if (!perSpec) {
      perSpec = new Map();
      this.cache.set(spec, perSpec);
    }
    let buffer = perSpec.get(key);
    if (!buffer) {
      const words = new Uint32Array(layout.rowStart.length + layout.kvBlocks.length);
      words.set(layout.rowStart);
      layout.kvBlocks.forEach((j, i) => {
        words[layout.rowStart.length + i] = (j | ((layout.full[i] as number) << 31)) >>> 0;
      });
      this.plan.checkBinding('candidate block layout', words.byteLength);
      buffer = this.plan.ctx.device.createBuffer({
        size: Math.max(16, Math.ceil(words.byteLength / 16) * 16),
        usage: Usage.STORAGE | Usage.COPY_DST,
        label: 'tessera candidate layout',
      });
      this.plan.ctx.device.queue.writeBuffer(buffer, 0, words);
      perSpec.set(key, buffer);
      this.all.add(buffer);
    }
    return [layout, buffer];
  }

  dispose(): void {
    for (const b of this.all) b.destroy();
    this.all.clear();
  }
}

export async function recordSelect(
  rec: Recording,
  step: SelectStep,
  q: GpuTensor,
  k: GpuTensor,
  candidates: CandidateLayouts,
): Promise<GpuSelection> {
  const { spec, blockQ, blockKV, topK } = step;
  const [stat, candidateBuffer] = candidates.get(spec, blockQ, blockKV);
  const nq = ceilDiv(spec.seqQ, blockQ);
  const rows = spec.batch * spec.headsQ * nq;
  // Row r keeps min(topK, candidates) blocks whatever the data: the host knows every row start.
  const rowStart = new Uint32Array(rows + 1);
  let maxCandidates = 0;
  let r = 0;
  for (let b = 0; b < spec.batch; b++) {
    for (let h = 0; h < spec.headsQ; h++) {
      const slice = layoutSlice(stat, b, h);
      for (let qb = 0; qb < nq; qb++, r++) {
        const row = slice * nq + qb;
        const n = (stat.rowStart[row + 1] as number) - (stat.rowStart[row] as number);
        maxCandidates = Math.max(maxCandidates, n);
        rowStart[r + 1] = (rowStart[r] as number) + Math.min(topK, n);
      }
    }
  }
  const entries = rowStart[rows] as number;
  const buffer = rec.buffer((rows + 1 + entries) * 4, 'tessera selection');
  rec.made.push(buffer);
  rec.plan.ctx.device.queue.writeBuffer(buffer, 0, rowStart);
  const scores = rec.buffer(rows * Math.max(1, maxCandidates) * 4, 'tessera selection scores');
  rec.temps.push(scores);
  const code = emitSelect({
    batch: spec.batch,
    headsQ: spec.headsQ,
    headsKV: spec.headsKV,
    headDim: spec.headDim,
    blockQ,
    blockKV,
    numQBlocks: nq,
    numKVBlocks: ceilDiv(spec.seqKV, blockKV),
    local: step.local,
    candidateBatches: stat.batches,
    candidateHeads: stat.heads,
    candidateEntries: stat.rowStart.length,
    selectionEntries: rows + 1,
    maxCandidates,
  });
  await rec.dispatch(code, 'select', rows, [q.buffer, k.buffer, candidateBuffer, buffer, scores]);
  return { kind: 'selection', step, buffer, rows, numQBlocks: nq, rowStart, entries };
}
