/**
 * The naive three-pass baseline: materialise every (scaled, modified, masked) score in an
 * N×N buffer, normalise each row in place, then multiply by V. Only for the bench and as a
 * yardstick: its score buffer is what the fused kernel never allocates.
 */
import type { AttentionSpec } from '@tessera/core';
import { MASKED, MASKED_LIMIT, NEG_INF_BITS, specStrides } from './common.js';
import { placeTensors, specFunctions, WgslExprRenderer } from './expr.js';

export interface NaiveEmitOptions {
  readonly storage: 'f32' | 'f16';
  /** Reduce rows with subgroup operations (needs the subgroups feature, lanes in index order). */
  readonly subgroups: boolean;
  /** Threads of the softmax workgroup (a power of two). */
  readonly softmaxThreads: number;
}

export const NAIVE_SCORE_TILE = 16;
export const NAIVE_OUT_THREADS = 64;

const f32Lit = (x: number): string => {
  const s = String(Math.fround(x));
  return /[.e]/.test(s) ? `${s}f` : `${s}.0f`;
};

export function emitNaive(spec: AttentionSpec, options: NaiveEmitOptions): string {
  const st = specStrides(spec);
  const WG = options.softmaxThreads;
  const elem = options.storage;
  const cast = elem === 'f32' ? '' : 'f32';
  const renderer = new WgslExprRenderer(placeTensors(spec.tensors));
  const fns = specFunctions(spec, renderer);
  const helpers = renderer.helperSource();
  const sg = options.subgroups;
  const reduce = (name: string, op: string, identity: string): string[] =>
    sg
      ? [
          `fn ${name}(x: f32, tid: u32, lane: u32, width: u32) -> f32 {`,
          `  let v = subgroup${op === 'max' ? 'Max' : 'Add'}(x);`,
          '  if (lane == 0u) { red[tid / width] = v; }',
          '  workgroupBarrier();',
          `  var r = ${identity};`,
          `  for (var i = 0u; i < ${WG}u / width; i++) { r = ${op === 'max' ? 'max(r, red[i])' : 'r + red[i]'}; }`,
          '  workgroupBarrier();',
          '  return r;',
          '}',
        ]
      : [
          `fn ${name}(x: f32, tid: u32) -> f32 {`,
          '  red[tid] = x;',
          '  workgroupBarrier();',
          `  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {`,
          `    if (tid < s) { red[tid] = ${op === 'max' ? 'max(red[tid], red[tid + s])' : 'red[tid] + red[tid + s]'}; }`,
          '    workgroupBarrier();',
          '  }',
          '  let r = red[0];',
          '  workgroupBarrier();',
          '  return r;',
          '}',
        ];
  const sgArgs = sg ? ', lane, width' : '';
  const lines = [
    ...(elem === 'f16' ? ['enable f16;'] : []),
    ...(sg ? ['enable subgroups;'] : []),
    ...(elem === 'f16' || sg ? [''] : []),
    `// Tessera naive 3-pass attention, spec ${spec.hash}`,
    `// batch ${spec.batch}, heads ${spec.headsQ}/${spec.headsKV}, seq ${spec.seqQ}x${spec.seqKV}, dim ${spec.headDim}/${spec.headDimV}, ${spec.layout}, ${spec.dtype}`,
    '',
    `const SEQ_Q = ${spec.seqQ}u;`,
    `const SEQ_KV = ${spec.seqKV}u;`,
    `const HEADS_Q = ${spec.headsQ}u;`,
    `const GROUP = ${spec.headsQ / spec.headsKV}u;`,
    `const SCALE = ${f32Lit(spec.scale)};`,
    `const MASKED = ${MASKED};`,
    `const MASKED_LIMIT = ${MASKED_LIMIT};`,
    '',
    `@group(0) @binding(0) var<storage, read> q_buf: array<${elem}>;`,
    `@group(0) @binding(1) var<storage, read> k_buf: array<${elem}>;`,
    `@group(0) @binding(2) var<storage, read> v_buf: array<${elem}>;`,
    '@group(0) @binding(3) var<storage, read_write> out_buf: array<f32>;',
    '@group(0) @binding(4) var<storage, read_write> lse_buf: array<u32>;',
    '@group(0) @binding(5) var<storage, read_write> scores: array<f32>;',
    ...(spec.tensors.length > 0
      ? ['@group(0) @binding(7) var<storage, read> tensors: array<u32>;']
      : []),
    '',
    `var<workgroup> red: array<f32, ${WG}>;`,
    '',
    ...(helpers ? [helpers] : []),
    ...fns,
    ...reduce('reduce_max', 'max', MASKED),
    ...reduce('reduce_add', 'add', '0.0f'),
    '',
    '// Pass 1: one thread per (q, kv) score.',
    `@compute @workgroup_size(${NAIVE_SCORE_TILE}, ${NAIVE_SCORE_TILE})`,
    'fn scores_pass(@builtin(global_invocation_id) g: vec3<u32>) {',
    '  let kv = g.x;',
    '  let qi = g.y;',
    '  let bh = g.z;',
    '  if (kv >= SEQ_KV || qi >= SEQ_Q) { return; }',
    '  let b = bh / HEADS_Q;',
    '  let h = bh % HEADS_Q;',
    `  let q_row = b * ${st.q.batch}u + h * ${st.q.head}u + qi * ${st.q.row}u;`,
    `  let k_row = b * ${st.k.batch}u + (h / GROUP) * ${st.k.head}u + kv * ${st.k.row}u;`,
    '  var acc = 0.0f;',
    `  for (var d = 0u; d < ${spec.headDim}u; d++) { acc += ${cast}(q_buf[q_row + d]) * ${cast}(k_buf[k_row + d]); }`,
    '  var s = acc * SCALE;',
    ...(spec.scoreMod ? ['  s = score_mod(s, i32(b), i32(h), i32(qi), i32(kv));'] : []),
    ...(spec.mask ? ['  s = select(MASKED, s, mask(i32(b), i32(h), i32(qi), i32(kv)));'] : []),
    '  scores[(bh * SEQ_Q + qi) * SEQ_KV + kv] = s;',
    '}',
    '',
    '// Pass 2: one workgroup per row: max, sum, normalise in place, log-sum-exp.',
    `@compute @workgroup_size(${WG})`,
    `fn softmax_pass(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32${sg ? ', @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) width: u32' : ''}) {`,
    '  let qi = wg.x;',
    '  let bh = wg.y;',
    '  let base = (bh * SEQ_Q + qi) * SEQ_KV;',
    '  var mx = MASKED;',
    `  for (var j = tid; j < SEQ_KV; j += ${WG}u) { mx = max(mx, scores[base + j]); }`,
    `  mx = reduce_max(mx, tid${sgArgs});`,
    '  let m_use = select(mx, 0.0f, mx <= MASKED_LIMIT);',
    '  var sum = 0.0f;',
    `  for (var j = tid; j < SEQ_KV; j += ${WG}u) { sum += exp(scores[base + j] - m_use); }`,
    `  sum = reduce_add(sum, tid${sgArgs});`,
    '  let inv = select(0.0f, 1.0f / sum, sum > 0.0f);',
    `  for (var j = tid; j < SEQ_KV; j += ${WG}u) { scores[base + j] = exp(scores[base + j] - m_use) * inv; }`,
    '  if (tid == 0u) {',
    `    lse_buf[bh * SEQ_Q + qi] = select(${NEG_INF_BITS}, bitcast<u32>(m_use + log(sum)), sum > 0.0f);`,
    '  }',
    '}',
    '',
    '// Pass 3: one thread per output element: probabilities times V.',
    `@compute @workgroup_size(${NAIVE_OUT_THREADS})`,
    'fn weighted_pass(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {',
    `  let c = wg.x * ${NAIVE_OUT_THREADS}u + tid;`,
    '  let qi = wg.y;',
    '  let bh = wg.z;',
    `  if (c >= ${spec.headDimV}u || qi >= SEQ_Q) { return; }`,
    '  let b = bh / HEADS_Q;',
    '  let h = bh % HEADS_Q;',
    `  let v_base = b * ${st.v.batch}u + (h / GROUP) * ${st.v.head}u + c;`,
    '  let base = (bh * SEQ_Q + qi) * SEQ_KV;',
    '  var acc = 0.0f;',
    `  for (var j = 0u; j < SEQ_KV; j++) { acc += scores[base + j] * ${cast}(v_buf[v_base + j * ${st.v.row}u]); }`,
    `  out_buf[b * ${st.out.batch}u + h * ${st.out.head}u + qi * ${st.out.row}u + c] = acc;`,
    '}',
    '',
  ];
  return lines.join('\n');
}
