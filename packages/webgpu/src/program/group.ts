/// <reference types="@webgpu/types" preserve="true" />
/**
 * The `group` step and grouped `attend` on the host side: buffers and launches. The grouping's
 * buffer is written by the route and sort kernels (group-kernel.ts) and read only by the grouped
 * attend kernel (grouped-attend-kernel.ts); nothing is read back.
 */
import { type AttentionSpec, type GroupStep, ResourceLimitError, SpecError } from '@tessera/core';
import { isCausalExpr } from '@tessera/core/backend';
import { specFeaturePlan } from './compressed-features.js';
import { recordKeyFeatures } from './features-pass.js';
import { GRID_THREADS } from './grid.js';
import { emitGroupSort, emitRoute, sortWorkgroupBytes } from './group-kernel.js';
import { emitGroupedAttend } from './grouped-attend-kernel.js';
import type { Recording } from './recording.js';
import type { GpuGrouping, GpuTensor } from './values.js';

export async function recordGroup(
  rec: Recording,
  step: GroupStep,
  x: GpuTensor,
  centroids: GpuTensor,
): Promise<GpuGrouping> {
  const [batch, heads, rows, cols] = x.shape;
  const clusters = centroids.shape[2];
  const shape = { batch, heads, rows, cols, clusters };
  const limit = rec.plan.ctx.limits.maxComputeWorkgroupStorageSize;
  if (sortWorkgroupBytes(clusters) > limit)
    throw new ResourceLimitError(
      `group '${step.out}': ${clusters} clusters need ${sortWorkgroupBytes(clusters)} bytes of workgroup memory to sort, beyond maxComputeWorkgroupStorageSize (${limit})`,
    );
  const n = batch * heads * rows;
  const cluster = rec.buffer(n * 4, 'tessera group clusters');
  rec.temps.push(cluster);
  const buffer = rec.buffer(2 * n * 4, 'tessera grouping');
  rec.made.push(buffer);
  await rec.dispatch(emitRoute(shape), 'group route', n, [x.buffer, centroids.buffer, cluster]);
  // One workgroup of GRID_THREADS per slice.
  await rec.dispatch(emitGroupSort(shape), 'group sort', batch * heads * GRID_THREADS, [
    cluster,
    buffer,
  ]);
  return { kind: 'grouping', buffer, batch, heads, rows, size: step.size };
}

/** Records a grouped attend of `spec` (softmax or linear); returns the out and lse buffers. */
export async function recordGroupedAttend(
  rec: Recording,
  spec: AttentionSpec,
  q: GpuTensor,
  k: GpuTensor,
  v: GpuTensor,
  groupQ: GpuGrouping,
  groupKV: GpuGrouping,
): Promise<{ out: GPUBuffer; lse: GPUBuffer }> {
  const { batch, headsQ, headsKV, seqQ, seqKV, headDim, headDimV } = spec;
  // defineProgram checks these; a grouping read out of bounds would be silent, so check again.
  const fits = (g: GpuGrouping, heads: number[], rows: number) =>
    g.batch === batch && heads.includes(g.heads) && g.rows === rows;
  if (!fits(groupQ, [headsQ, headsKV], seqQ) || !fits(groupKV, [headsKV], seqKV))
    throw new SpecError(
      `grouped attend: groupings of [${groupQ.batch}, ${groupQ.heads}, ${groupQ.rows}] (queries) and [${groupKV.batch}, ${groupKV.heads}, ${groupKV.rows}] (keys) do not fit q [${batch}, ${headsQ}, ${seqQ}] / k [${batch}, ${headsKV}, ${seqKV}]`,
    );
  const features =
    spec.kernel.type === 'linear'
      ? await recordKeyFeatures(rec, specFeaturePlan(spec), k, {
          buffer: "tessera grouped attend's key features",
          kernel: 'grouped attend key features',
          title: "grouped attention's key features",
        })
      : null;
  const rows = batch * headsQ * seqQ;
  const out = rec.buffer(rows * headDimV * 4, 'tessera grouped attend out');
  const lse = rec.buffer(rows * 4, 'tessera grouped attend lse');
  rec.made.push(out, lse);
  const code = emitGroupedAttend({
    batch,
    headsQ,
    headsKV,
    seqQ,
    seqKV,
    headDim,
    headDimV,
    scale: spec.scale,
    causal: spec.mask !== null && isCausalExpr(spec.mask.expr),
    sizeQ: groupQ.size,
    sizeKV: groupKV.size,
    headsGroupQ: groupQ.heads,
    ...(features ? { features: features.layout } : {}),
  });
  const bufs = [
    q.buffer,
    features?.work ?? k.buffer,
    v.buffer,
    groupQ.buffer,
    groupKV.buffer,
    out,
    lse,
  ];
  await rec.dispatch(code, 'grouped attend', rows, bufs);
  return { out, lse };
}
