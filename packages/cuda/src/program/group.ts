/**
 * The `group` step and grouped `attend` on the host side: buffers and launches. The grouping's
 * rank / order buffers are written by the route and sort kernels (emit-group.ts) and read only by
 * the grouped attend kernel; nothing is read back.
 */
import { type AttendStep, type GroupStep, InputError, UnsupportedError } from '@tessera/core';
import { featureDim } from '@tessera/core/backend';
import type { DeviceBuffer } from '../runtime/device.js';
import {
  emitGroupedAttend,
  emitGroupRoute,
  emitGroupSort,
  GROUP_MAX_CLUSTERS,
} from './emit-group.js';
import type { FeatureWriter } from './features.js';
import type { ProgramRunner } from './runner.js';
import {
  type CudaGroupingValue,
  type CudaTensorValue,
  type Env,
  groupingOf,
  tensorOf,
  type Written,
} from './values.js';

/** Most value columns a grouped attend row accumulates in registers. */
const GROUPED_MAX_COLUMNS = 1024;

/**
 * Routes every row to its cluster (one thread per row, into a scratch buffer), then sorts each
 * (batch, head) slice stably by cluster (one block per slice) into the grouping's rank / order.
 */
export async function runGroup(
  runner: ProgramRunner,
  step: GroupStep,
  x: CudaTensorValue,
  c: CudaTensorValue,
): Promise<CudaGroupingValue> {
  const [B, H, N] = x.shape;
  const C = c.shape[2];
  if (C > GROUP_MAX_CLUSTERS)
    throw new UnsupportedError(
      `cuda: group '${step.out}' has ${C} clusters; at most ${GROUP_MAX_CLUSTERS} are supported`,
    );
  const cluster = runner.alloc(4 * B * H * N);
  const owned: DeviceBuffer[] = [];
  try {
    const rank = runner.alloc(4 * B * H * N);
    owned.push(rank);
    const order = runner.alloc(4 * B * H * N);
    owned.push(order);
    await runner.launch(emitGroupRoute(x.shape, C), {
      x: x.buffer.ptr,
      centroids: c.buffer.ptr,
      cluster: cluster.ptr,
    });
    await runner.launch(emitGroupSort(N, C, B * H), {
      cluster: cluster.ptr,
      rank: rank.ptr,
      order: order.ptr,
    });
    return { kind: 'grouping', batch: B, heads: H, rows: N, size: step.size, rank, order };
  } catch (e) {
    for (const b of owned) b.release();
    throw e;
  } finally {
    cluster.release(); // ordered after the launches on the default stream
  }
}

/**
 * Attend restricted to groups: one warp per query row walks its group's keys in the KV
 * grouping's order, softmax or (linear specs) the linear module's stabilised features. f32 only.
 */
export async function runGroupedAttend(
  runner: ProgramRunner,
  features: FeatureWriter,
  step: AttendStep,
  env: Env,
): Promise<Written> {
  const { spec } = step;
  if (spec.dtype !== 'f32')
    throw new UnsupportedError(
      `cuda: grouped attend '${step.out}' runs f32 specs only (got dtype '${spec.dtype}')`,
    );
  const q = tensorOf(env, step.q);
  const k = tensorOf(env, step.k);
  const v = tensorOf(env, step.v);
  const gq = groupingOf(env, step.groupQ as string);
  const gk = groupingOf(env, step.groupKV as string);
  // The query grouping covers the query heads or (one grouping of the KV heads, e.g. of the
  // keys, serving both sides) the KV heads: query head h then reads its KV head's slice.
  if (
    gq.batch !== spec.batch ||
    gq.rows !== spec.seqQ ||
    (gq.heads !== spec.headsQ && gq.heads !== spec.headsKV)
  )
    throw new InputError(
      `cuda: grouped attend '${step.out}': groupQ '${step.groupQ}' groups [${gq.batch}, ${gq.heads}, ${gq.rows}] rows; want [${spec.batch}, ${spec.headsQ} or ${spec.headsKV}, ${spec.seqQ}]`,
    );
  const linear = spec.kernel.type === 'linear';
  const featureCount = linear ? featureDim(spec) : null;
  if (spec.headDimV > GROUPED_MAX_COLUMNS)
    throw new UnsupportedError(
      `cuda: grouped attend '${step.out}' takes at most ${GROUPED_MAX_COLUMNS} value columns (got ${spec.headDimV})`,
    );
  const temps: DeviceBuffer[] = [];
  return runner.withOutputs(env, step, temps, async (outputs) => {
    const inputs: Record<string, bigint> = linear
      ? await features.writeFor(spec, `attend '${step.out}'`, q, k, temps)
      : { q: q.buffer.ptr, k: k.buffer.ptr };
    const kernel = emitGroupedAttend(
      {
        batch: spec.batch,
        headsQ: spec.headsQ,
        headsKV: spec.headsKV,
        seqQ: spec.seqQ,
        seqKV: spec.seqKV,
        headDim: spec.headDim,
        headDimV: spec.headDimV,
        causal: spec.mask !== null,
        headsGroupQ: gq.heads,
        sizeQ: gq.size,
        sizeKV: gk.size,
        scale: spec.scale,
        features: featureCount,
        ...(spec.kernel.type === 'linear' ? { featureMap: spec.kernel.featureMap } : {}),
      },
      step.lse !== undefined,
    );
    await runner.launch(kernel, {
      ...inputs,
      v: v.buffer.ptr,
      rank_q: gq.rank.ptr,
      order_kv: gk.order.ptr,
      ...outputs,
    });
  });
}
