/// <reference types="@webgpu/types" />
/**
 * `attend` restricted to a selection: the fused kernel of the spec at the selection's block sizes,
 * walking the selection's layout buffer instead of the static one (one slice per batch and head).
 */
import { type AttentionSpec, ResourceLimitError } from '@tessera/core';
import type { PlanContext } from '../backend.js';
import { Usage } from '../gpu.js';
import { tileKey, tileProblem } from '../tiles.js';
import { emitFlash, type FlashTile } from '../wgsl/flash.js';
import type { GpuSelection } from './values.js';

/** The fused kernel's tile for blocks of `blockQ` × `blockKV`: the fewest rows per thread that fit. */
export function selectionTile(
  spec: AttentionSpec,
  blockQ: number,
  blockKV: number,
  limits: PlanContext['ctx']['limits'],
): FlashTile {
  let first = '';
  for (const qStage of ['shared', 'private'] as const) {
    for (let rows = 1; rows <= blockQ; rows++) {
      if (blockQ % rows !== 0) continue;
      const tile: FlashTile = { blockQ, blockKV, rowsPerThread: rows, qStage, unroll: false };
      const problem = tileProblem(spec, tile, limits);
      if (problem === null) return tile;
      first ||= problem;
    }
  }
  throw new ResourceLimitError(
    `attend on a selection of ${blockQ}×${blockKV} blocks: no fused-kernel tile fits (${first})`,
  );
}

export interface FlashOnSelection {
  readonly encode: (encoder: GPUCommandEncoder) => void;
  readonly out: GPUBuffer;
  readonly lse: GPUBuffer;
  readonly temps: GPUBuffer[];
}

export async function flashOnSelection(
  p: PlanContext,
  spec: AttentionSpec,
  q: GPUBuffer,
  k: GPUBuffer,
  v: GPUBuffer,
  sel: GpuSelection,
  newBuffer: (bytes: number, label: string) => GPUBuffer,
): Promise<FlashOnSelection> {
  const { blockQ, blockKV } = sel.step;
  const tile = selectionTile(spec, blockQ, blockKV, p.ctx.limits);
  const pipeline = await p.pipeline(
    `flash|${spec.hash}|${tileKey(tile)}|f32`,
    emitFlash(spec, { tile, storage: 'f32' }),
    'main',
  );
  const bh = spec.batch * spec.headsQ;
  const out = newBuffer(bh * spec.seqQ * spec.headDimV * 4, 'tessera program out');
  const lse = newBuffer(bh * spec.seqQ * 4, 'tessera program lse');
  const tensors = p.tensorsBuffer(spec);
  const maxDim = p.ctx.limits.maxComputeWorkgroupsPerDimension;
  const chunks: [number, number, number, number][] = [];
  for (let qb = 0; qb < sel.numQBlocks; qb += maxDim)
    for (let h = 0; h < bh; h += maxDim)
      chunks.push([qb, h, Math.min(maxDim, sel.numQBlocks - qb), Math.min(maxDim, bh - h)]);
  const align = Math.max(256, p.ctx.limits.minUniformBufferOffsetAlignment);
  const params = p.pool.acquire(
    align * chunks.length,
    Usage.UNIFORM | Usage.COPY_DST,
    'tessera params',
  );
  const words = new Uint32Array((align / 4) * chunks.length);
  chunks.forEach(([qb, h], i) => {
    words.set([qb, h, spec.batch, spec.headsQ, sel.rows + 1], (i * align) / 4);
  });
  p.ctx.device.queue.writeBuffer(params, 0, words);
  const layout = pipeline.getBindGroupLayout(0);
  const groups = chunks.map(([, , nq, nh], i) => ({
    x: nq,
    y: nh,
    bindGroup: p.ctx.device.createBindGroup({
      layout,
      entries: [
        { binding: 0, resource: { buffer: q } },
        { binding: 1, resource: { buffer: k } },
        { binding: 2, resource: { buffer: v } },
        { binding: 3, resource: { buffer: out } },
        { binding: 4, resource: { buffer: lse } },
        { binding: 5, resource: { buffer: sel.buffer } },
        { binding: 6, resource: { buffer: params, offset: i * align, size: 32 } },
        ...(tensors ? [{ binding: 7, resource: { buffer: tensors } }] : []),
      ],
    }),
  }));
  return {
    out,
    lse,
    temps: [params, ...(tensors ? [tensors] : [])],
    encode(encoder) {
      for (const g of groups) {
        const pass = encoder.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, g.bindGroup);
        pass.dispatchWorkgroups(g.x, g.y, 1);
        pass.end();
      }
    },
  };
}
