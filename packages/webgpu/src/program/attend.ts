/// <reference types="@webgpu/types" preserve="true" />
/**
 * `attend` restricted to a selection: the spec's fused kernel walking the selection's layout buffer
 * instead of the static one (one slice per batch and query head). The kernel's KV tile is the
 * selection's blockKV when it fits the device, else a divisor of it, with every selected block
 * split into sub-blocks by a small kernel first.
 */
import { type AttentionSpec, ResourceLimitError } from '@tessera/core';
import type { GpuLimits } from '../gpu.js';
import { Usage } from '../gpu.js';
import { tileKey, tileProblem } from '../tiles.js';
import { emitFlash, type FlashTile } from '../wgsl/flash.js';
import type { Recording } from './recording.js';
import { emitSubdivide } from './select-kernel.js';
import type { GpuSelection } from './values.js';

/**
 * The fused kernel's tile for a selection of `blockQ × blockKV` blocks: the largest KV tile
 * dividing blockKV, queries in workgroup memory if they fit (else registers), fewest rows per
 * thread.
 */
export function selectionTile(
  spec: AttentionSpec,
  blockQ: number,
  blockKV: number,
  limits: GpuLimits,
): FlashTile {
  let first = '';
  for (let tileKV = blockKV; tileKV >= 1; tileKV--) {
    if (blockKV % tileKV !== 0) continue;
    for (const qStage of ['shared', 'private'] as const) {
      for (let rows = 1; rows <= blockQ; rows++) {
        if (blockQ % rows !== 0) continue;
        const tile = { blockQ, blockKV: tileKV, rowsPerThread: rows, qStage, unroll: false };
        const problem = tileProblem(spec, tile, limits);
        if (problem === null) return tile;
        first ||= problem;
      }
    }
  }
  throw new ResourceLimitError(
    `attend on a selection of ${blockQ}×${blockKV} blocks: no fused-kernel tile fits (${first})`,
  );
}

/** Records the fused kernel over `sel` into `rec`; returns the out and lse buffers. */
export async function recordFlashOnSelection(
  rec: Recording,
  spec: AttentionSpec,
  q: GPUBuffer,
  k: GPUBuffer,
  v: GPUBuffer,
  sel: GpuSelection,
): Promise<{ out: GPUBuffer; lse: GPUBuffer }> {
  const p = rec.plan;
  const device = p.ctx.device;
  const tile = selectionTile(spec, sel.step.blockQ, sel.step.blockKV, p.ctx.limits);
  const pipeline = await p.pipeline(
    `flash|${spec.hash}|${tileKey(tile)}|f32`,
    emitFlash(spec, { tile, storage: 'f32' }),
    'main',
  );

  let layout = sel.buffer;
  const factor = sel.step.blockKV / tile.blockKV;
  if (factor > 1) {
    const entries = sel.entries * factor;
    layout = rec.buffer((sel.rows + 1 + entries) * 4, 'tessera split selection');
    rec.temps.push(layout);
    device.queue.writeBuffer(
      layout,
      0,
      sel.rowStart.map((s) => s * factor),
    );
    const code = emitSubdivide(sel.entries, factor, sel.rows + 1, sel.rows + 1);
    await rec.dispatch(code, 'split selection', entries, [sel.buffer, layout]);
  }

  const bh = spec.batch * spec.headsQ;
  const out = rec.buffer(bh * spec.seqQ * spec.headDimV * 4, 'tessera program out');
  const lse = rec.buffer(bh * spec.seqQ * 4, 'tessera program lse');
  rec.made.push(out, lse);
  const tensors = p.tensorsBuffer(spec);
  if (tensors) rec.temps.push(tensors);
  // Grids larger than the per-dimension limit run as several dispatches with base offsets.
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
  rec.temps.push(params);
  const words = new Uint32Array((align / 4) * chunks.length);
  chunks.forEach(([qb, h], i) => {
    words.set([qb, h, spec.batch, spec.headsQ, sel.rows + 1], (i * align) / 4);
  });
  device.queue.writeBuffer(params, 0, words);
  chunks.forEach(([, , nq, nh], i) => {
    const bindGroup = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: q } },
        { binding: 1, resource: { buffer: k } },
        { binding: 2, resource: { buffer: v } },
        { binding: 3, resource: { buffer: out } },
        { binding: 4, resource: { buffer: lse } },
        { binding: 5, resource: { buffer: layout } },
        { binding: 6, resource: { buffer: params, offset: i * align, size: 32 } },
        ...(tensors ? [{ binding: 7, resource: { buffer: tensors } }] : []),
      ],
    });
    const pass = rec.encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(nq, nh, 1);
    pass.end();
  });
  return { out, lse };
}
