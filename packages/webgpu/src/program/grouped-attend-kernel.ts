/**
 * WGSL of a grouped `attend`: one invocation per query row i finds its group g = ⌊rankQ / SIZE_Q⌋
 * (rankQ from its head's slice of the query grouping, or, when that grouping covers the KV heads
 * — GROUP_Q = GROUP, e.g. one grouping of the keys passed for both — from its KV head's slice)
 * and walks the keys at places [g·SIZE_KV, min((g+1)·SIZE_KV, SEQ_KV)) of its KV head's order,
 * skipping keys after i when causal. Softmax: an online softmax of `scale·q·k_j`. A feature map:
 * weights φ̃(q)·φ̃(k_j)·e^{c_j} (the keys' features come from a first pass into `work`,
 * compressed-features.ts), accumulated against a running maximum of the key stabilisers c_j;
 * den = Σ weights, out = Σ weights·v_j / den and lse = ln den + max c_j + c_q when den > 0.
 * A row with no visible key (or no mass) gets out 0 and lse −∞.
 */
import { SpecError } from '@tessera/core';
import { MASKED, NEG_INF_BITS } from '../wgsl/common.js';
import { type FeatureLayout, featureConsts, featureHelpers } from './compressed-features.js';
import { emitGridKernel, f32Lit } from './grid.js';

export interface GroupedAttendShape {
  readonly batch: number;
  readonly headsQ: number;
  readonly headsKV: number;
  readonly seqQ: number;
  readonly seqKV: number;
  readonly headDim: number;
  readonly headDimV: number;
  readonly scale: number;
  readonly causal: boolean;
  readonly sizeQ: number;
  readonly sizeKV: number;
  /** Heads of the query grouping: `headsQ`, or `headsKV` (query head h reads KV head h's slice). */
  readonly headsGroupQ: number;
  /** A feature map instead of softmax; `work` holds the keys' features (featureLayout). */
  readonly features?: FeatureLayout;
}

export function emitGroupedAttend(s: GroupedAttendShape): string {
  if (s.headsGroupQ !== s.headsQ && s.headsGroupQ !== s.headsKV)
    throw new SpecError(
      `grouped attend: the query grouping covers ${s.headsGroupQ} heads, not headsQ (${s.headsQ}) or headsKV (${s.headsKV})`,
    );
  const feat = s.features;
  const accumulate = feat
    ? [
        '  var dot = 0.0f;',
        '  for (var f = 0u; f < F; f++) {',
        '    dot = fma(phi[f], work[KF + (kv + j) * F + f], dot);',
        '  }',
        '  let ck = work[KC + kv + j];',
        '  let m_new = max(m, ck);',
        '  let alpha = exp(m - m_new);',
        '  let w = dot * exp(ck - m_new);',
      ]
    : [
        '  var s = 0.0f;',
        '  for (var d = 0u; d < HEAD_DIM; d++) {',
        '    s = fma(q[q0 + d], k[(kv + j) * HEAD_DIM + d], s);',
        '  }',
        '  s *= SCALE;',
        '  let m_new = max(m, s);',
        '  let alpha = exp(m - m_new);',
        '  let w = exp(s - m_new);',
      ];
  return emitGridKernel({
    title: [
      `Tessera program: grouped attention (${feat ? `${feat.featureMap} features (${feat.features})` : 'softmax'}${s.causal ? ', causal' : ''}), groups of ${s.sizeQ} queries / ${s.sizeKV} keys`,
      `q [${s.batch}, ${s.headsQ}, ${s.seqQ}, ${s.headDim}], k/v [${s.batch}, ${s.headsKV}, ${s.seqKV}, ${s.headDim}/${s.headDimV}]; groupings: ranks, then orders`,
    ],
    items: s.batch * s.headsQ * s.seqQ,
    consts: [
      ['HEADS_Q', s.headsQ],
      ['HEADS_KV', s.headsKV],
      ['GROUP', s.headsQ / s.headsKV],
      ['SEQ_Q', s.seqQ],
      ['SEQ_KV', s.seqKV],
      ['HEAD_DIM', s.headDim],
      ['COLS', s.headDimV],
      ['SIZE_Q', s.sizeQ],
      ['SIZE_KV', s.sizeKV],
      ['HEADS_GQ', s.headsGroupQ],
      ['GROUP_Q', s.headsQ / s.headsGroupQ],
      ['ORDER_KV', s.batch * s.headsKV * s.seqKV],
      ...(feat
        ? ([...featureConsts(feat), ['Q_MUL', f32Lit(feat.query)]] as const)
        : ([['SCALE', f32Lit(s.scale)]] as const)),
      ['MASKED', MASKED],
      ['NEG_INF_BITS', NEG_INF_BITS],
    ],
    bindings: [
      'var<storage, read> q: array<f32>;',
      feat ? 'var<storage, read> work: array<f32>;' : 'var<storage, read> k: array<f32>;',
      'var<storage, read> v: array<f32>;',
      'var<storage, read> group_q: array<u32>;',
      'var<storage, read> group_kv: array<u32>;',
      'var<storage, read_write> out: array<f32>;',
      'var<storage, read_write> lse: array<u32>;',
    ],
    ...(feat ? { helpers: featureHelpers(feat, s.headDim, 'query_features', 'q') } : {}),
    body: [
      'let i = idx % SEQ_Q;',
      'let bh = idx / SEQ_Q;',
      'let kv = ((bh / HEADS_Q) * HEADS_KV + (bh % HEADS_Q) / GROUP) * SEQ_KV;',
      'let q0 = idx * HEAD_DIM;',
      'let o0 = idx * COLS;',
      ...(feat ? ['let cq = query_features(q0, Q_MUL);'] : []),
      'for (var c = 0u; c < COLS; c++) {',
      '  out[o0 + c] = 0.0f;',
      '}',
      "// The query grouping's slice: this query head's (GROUP_Q = 1) or its KV head's.",
      'let sq = (bh / HEADS_Q) * HEADS_GQ + (bh % HEADS_Q) / GROUP_Q;',
      'let g = group_q[sq * SEQ_Q + i] / SIZE_Q;',
      'let first = g * SIZE_KV;',
      'let last = min(first + SIZE_KV, SEQ_KV);',
      'var m = MASKED;',
      'var l = 0.0f;',
      'for (var p = first; p < last; p++) {',
      '  let j = group_kv[ORDER_KV + kv + p];',
      ...(s.causal ? ['  if (j > i) {', '    continue;', '  }'] : []),
      ...accumulate,
      '  l = l * alpha + w;',
      '  for (var c = 0u; c < COLS; c++) {',
      '    out[o0 + c] = fma(w, v[(kv + j) * COLS + c], out[o0 + c] * alpha);',
      '  }',
      '  m = m_new;',
      '}',
      'let ok = l > 0.0f;',
      'let inv = select(0.0f, 1.0f / l, ok);',
      'for (var c = 0u; c < COLS; c++) {',
      '  out[o0 + c] *= inv;',
      '}',
      `lse[idx] = select(NEG_INF_BITS, bitcast<u32>(${feat ? 'log(l) + m + cq' : 'm + log(l)'}), ok);`,
    ],
  });
}
