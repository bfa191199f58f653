import {
  type AttentionInputs,
  type AttentionSpec,
  compileJs,
  InputError,
  kvHeadOf,
  roundToDtype,
  validateInputs,
} from '@tessera/core';
import { dot, specAccess } from './access.js';
import { createCpuBackend } from './backend.js';
import { badScore } from './prepared.js';

export interface RowSelection {
  readonly b: number;
  readonly h: number;
  readonly q: number;
}

/**
 * Exact attention for a few query rows only, in f64: row r of the result is (b, h, q) of
 * `rows[r]`, `out` is rows × headDimV and `lse` one value per row. Costs rows × seqKV × headDim
 * for softmax specs, so a benchmark can check a sample of a huge run against the reference
 * (linear kernels cost O(N) anyway: they run whole and the rows are picked out).
 */
export async function referenceRows(
  spec: AttentionSpec,
  inputs: AttentionInputs,
  rows: readonly RowSelection[],
): Promise<{ out: Float32Array; lse: Float32Array }> {
  validateInputs(spec, inputs);
  for (const [i, r] of rows.entries()) {
    const ok =
      Number.isInteger(r.b) &&
      r.b >= 0 &&
      r.b < spec.batch &&
      Number.isInteger(r.h) &&
      r.h >= 0 &&
      r.h < spec.headsQ;
    if (!ok || !Number.isInteger(r.q) || r.q < 0 || r.q >= spec.seqQ) {
      throw new InputError(
        `rows[${i}] = (b ${r.b}, h ${r.h}, q ${r.q}) is outside the spec's batch, headsQ or seqQ`,
      );
    }
  }
  const DV = spec.headDimV;
  const out = new Float32Array(rows.length * DV);
  const lse = new Float32Array(rows.length);
  if (spec.kernel.type === 'linear') return linearRows(spec, inputs, rows, out, lse);

  const q = roundToDtype(inputs.q, spec.dtype);
  const k = roundToDtype(inputs.k, spec.dtype);
  const v = roundToDtype(inputs.v, spec.dtype);
  const tensors = spec.tensors.map((t) => t.data);
  const mask = spec.mask ? compileJs(spec.mask.expr, tensors) : null;
  const mod = spec.scoreMod ? compileJs(spec.scoreMod.expr, tensors) : null;
  const acc = specAccess(spec);
  const scores = new Float64Array(spec.seqKV);
  const o = new Float64Array(DV);
  rows.forEach(({ b, h, q: qi }, r) => {
    const kvh = kvHeadOf(spec, h);
    const qOff = acc.q.base(b, h) + qi * acc.q.stride;
    let max = Number.NEGATIVE_INFINITY;
    for (let kv = 0; kv < spec.seqKV; kv++) {
      if (mask && !mask(b, h, qi, kv, 0)) {
        scores[kv] = Number.NEGATIVE_INFINITY;
        continue;
      }
      const raw =
        spec.scale * dot(q, qOff, k, acc.k.base(b, kvh) + kv * acc.k.stride, spec.headDim);
      const sc = mod ? (mod(b, h, qi, kv, raw) as number) : raw;
      if (!(sc < Number.POSITIVE_INFINITY))
        throw badScore(spec, sc, { b, h, q: qi, kv, score: raw });
      scores[kv] = sc;
      if (sc > max) max = sc;
    }
    if (max === Number.NEGATIVE_INFINITY) {
      lse[r] = Number.NEGATIVE_INFINITY;
      return;
    }
    o.fill(0);
    let sum = 0;
    for (let kv = 0; kv < spec.seqKV; kv++) {
      if (scores[kv] === Number.NEGATIVE_INFINITY) continue;
      const w = Math.exp((scores[kv] as number) - max);
      sum += w;
      const vOff = acc.v.base(b, kvh) + kv * acc.v.stride;
      for (let d = 0; d < DV; d++) o[d] = (o[d] as number) + w * (v[vOff + d] as number);
    }
    for (let d = 0; d < DV; d++) out[r * DV + d] = (o[d] as number) / sum;
    lse[r] = max + Math.log(sum);
  });
  return { out, lse };
}

/** Linear kernels cost O(N): run the whole spec on the CPU backend and pick the rows. */
async function linearRows(
  spec: AttentionSpec,
  inputs: AttentionInputs,
  rows: readonly RowSelection[],
  out: Float32Array,
  lse: Float32Array,
): Promise<{ out: Float32Array; lse: Float32Array }> {
  const backend = await createCpuBackend();
  const full = await backend.run(spec, inputs);
  const acc = specAccess(spec).out;
  rows.forEach(({ b, h, q }, r) => {
    const off = acc.base(b, h) + q * acc.stride;
    out.set(full.out.subarray(off, off + spec.headDimV), r * spec.headDimV);
    lse[r] = full.lse[(b * spec.headsQ + h) * spec.seqQ + q] as number;
  });
  return { out, lse };
}
