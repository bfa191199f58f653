/**
 * The first pass of a kernel-weighted step (compressed with a feature map, grouped attend with a
 * linear spec): the random matrix, if the map has one, uploaded into a temporary `work` buffer,
 * then every key row's features and stabiliser written beside it.
 */
import {
  emitSummaryFeatures,
  type FeatureLayout,
  type FeatureMapPlan,
  featureLayout,
} from './compressed-features.js';
import type { Recording } from './recording.js';
import type { GpuTensor } from './values.js';

export async function recordKeyFeatures(
  rec: Recording,
  plan: FeatureMapPlan,
  k: GpuTensor,
  names: { readonly buffer: string; readonly kernel: string; readonly title?: string },
): Promise<{ layout: FeatureLayout; work: GPUBuffer }> {
  const [batch, headsKV, rows, headDim] = k.shape;
  const layout = featureLayout(plan, batch * headsKV * rows);
  const work = rec.buffer(layout.words * 4, names.buffer);
  rec.temps.push(work);
  if (plan.matrix) {
    const w = plan.matrix;
    rec.plan.ctx.device.queue.writeBuffer(
      work,
      layout.w * 4,
      w.buffer as ArrayBuffer,
      w.byteOffset,
      w.byteLength,
    );
  }
  const code = emitSummaryFeatures(
    { batch, headsKV, numBlocks: rows, headDim },
    layout,
    names.title,
  );
  await rec.dispatch(code, names.kernel, batch * headsKV * rows, [k.buffer, work]);
  return { layout, work };
}
