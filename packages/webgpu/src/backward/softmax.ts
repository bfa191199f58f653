/**
 * The softmax backward kernels, FlashAttention-2 style: probabilities are recomputed from q, k and
 * the forward's lse, never stored. Four modules:
 * - `prepass`: per query row, D = Σ dOut·out, packed with the lse as (lse, D) ("dead" rows, whose
 *   lse is -∞, get lse = +3e38 so every probability recomputes to 0);
 * - `dkdv`: one workgroup per (batch, KV head, KV block), one thread per key row; it walks the Q
 *   blocks that visit the block (the column view of the layout) for each query head of the group,
 *   so dK and dV are summed in registers, without atomics;
 * - `dq`: one workgroup per (batch, head, Q block), one thread per query row, over the row view;
 *   captured-tensor gradients dS'·weight are staged per tile and folded into the workgroup's
 *   partial slice (workgroup memory or global) by index ownership (thread x mod blockQ), in a
 *   fixed order;
 * - `reduce`: sums the partial slices in workgroup order. Everything is deterministic.
 */
import type { AttentionSpec } from '@tessera/core';
import { lowerExprs, type RenderedOperand } from '@tessera/core/backend';
import { ceil4, rowLoader, type Strides, specStrides, storageArray } from '../wgsl/common.js';
import { placeTensors, WgslExprRenderer } from '../wgsl/expr.js';
import { type BackwardPlan, ROW_THREADS } from './plan.js';

/** lse written for a fully masked row: exp(s' − DEAD_LSE) is 0 for every finite score. */
const DEAD_LSE = '3.0e38f';
/** Staged tensor-gradient index of an element that contributes nothing. */
const NONE = '0xffffffffu';

/** A backward's WGSL modules by name: softmax specs have four, linear ones one (`linear`). */
export type BackwardModules = Readonly<Record<string, string | null>>;

export interface SoftmaxModules {
  readonly prepass: string;
  readonly dkdv: string;
  readonly dq: string;
  /** Null when no captured tensor gets a gradient. */
  readonly reduce: string | null;
}

const f32Lit = (x: number): string => {
  const s = String(Math.fround(x));
  return /[.e]/.test(s) ? `${s}f` : `${s}.0f`;
};

function header(spec: AttentionSpec, plan: BackwardPlan, what: string): string[] {
  return [
    `// Tessera backward (${what}), spec ${spec.hash}`,
    `// batch ${spec.batch}, heads ${spec.headsQ}/${spec.headsKV}, seq ${spec.seqQ}x${spec.seqKV}, dim ${spec.headDim}/${spec.headDimV}, ${spec.layout}, ${spec.dtype}`,
    `// tile: blockQ ${plan.tile.blockQ}, blockKV ${plan.tile.blockKV}`,
    '',
    `const SEQ_Q = ${spec.seqQ}u;`,
    `const SEQ_KV = ${spec.seqKV}u;`,
    `const HEADS_Q = ${spec.headsQ}u;`,
    `const HEADS_KV = ${spec.headsKV}u;`,
    `const GROUP = ${spec.headsQ / spec.headsKV}u;`,
    `const NUM_Q_BLOCKS = ${plan.numQBlocks}u;`,
    `const NUM_KV_BLOCKS = ${plan.numKVBlocks}u;`,
    `const SCALE = ${f32Lit(spec.scale)};`,
    `const DEAD_LSE = ${DEAD_LSE};`,
  ];
}

const PARAMS = [
  'struct Params {',
  '  layout_batches: u32,',
  '  layout_heads: u32,',
  '  row_start: u32,',
  '  row_entries: u32,',
  '  col_start: u32,',
  '  col_entries: u32,',
  '}',
];

const SLICE =
  '(select(0u, b, params.layout_batches > 1u) * params.layout_heads + select(0u, h, params.layout_heads > 1u))';

/**
 * The score modification and its gradient in one function sharing temporaries: `score_grad`
 * returns (s', ∂s'/∂score); with tensor terms, `score_terms` also returns each term's element
 * index and weight.
 */
function scoreFunctions(
  spec: AttentionSpec,
  plan: BackwardPlan,
  renderer: WgslExprRenderer,
  withTerms: boolean,
): string[] {
  const g = plan.gradient;
  if (!spec.scoreMod || !g) return [];
  const args = 'score: f32, b: i32, h: i32, q: i32, kv: i32';
  const low = lowerExprs([spec.scoreMod.expr, g.dScore], renderer, { prefix: 's' });
  const [s, ds] = low.results as readonly [RenderedOperand, RenderedOperand];
  const out = [
    `// score modification '${spec.scoreMod.name}' and its derivative in score`,
    `fn score_grad(${args}) -> vec2<f32> {`,
    ...low.statements.map((x) => `  ${x}`),
    `  return vec2<f32>(${s.code}, ${ds.code});`,
    '}',
  ];
  if (withTerms && g.tensors.length > 0) {
    const roots = [spec.scoreMod.expr, g.dScore, ...g.tensors.flatMap((t) => [t.index, t.weight])];
    const all = lowerExprs(roots, renderer, { prefix: 'g' });
    const r = all.results.map((x) => x.code);
    out.push(
      '',
      'struct ScoreTerms {',
      '  s: f32,',
      '  ds: f32,',
      ...g.tensors.flatMap((_, t) => [`  i${t}: i32,`, `  w${t}: f32,`]),
      '}',
      '',
      "// ... and, per captured-tensor read, the element read and ∂s'/∂element",
      `fn score_terms(${args}) -> ScoreTerms {`,
      ...all.statements.map((x) => `  ${x}`),
      `  return ScoreTerms(${r.join(', ')});`,
      '}',
    );
  }
  return out;
}

function maskFunction(spec: AttentionSpec, renderer: WgslExprRenderer): string[] {
  if (!spec.mask) return [];
  const low = lowerExprs([spec.mask.expr], renderer, { prefix: 'm' });
  return [
    `// mask '${spec.mask.name}'`,
    'fn mask(b: i32, h: i32, q: i32, kv: i32) -> bool {',
    ...low.statements.map((x) => `  ${x}`),
    `  return ${(low.results[0] as { code: string }).code};`,
    '}',
  ];
}

/** Stores a private vec4 array `acc` as row `base` of a tensor of `dim` columns. */
function storeRow(buf: string, acc: string, dim: number, base: string): string[] {
  const n = ceil4(dim) / 4;
  if (dim % 4 === 0)
    return [`for (var c4 = 0u; c4 < ${n}u; c4++) { ${buf}[${base} / 4u + c4] = ${acc}[c4]; }`];
  return [`for (var c = 0u; c < ${dim}u; c++) { ${buf}[${base} + c] = ${acc}[c / 4u][c % 4u]; }`];
}

const base = (st: Strides, b: string, h: string): string =>
  `${b} * ${st.batch}u + ${h} * ${st.head}u`;

export function emitPrepass(spec: AttentionSpec): string {
  const st = specStrides(spec).out;
  const DV = spec.headDimV;
  return [
    `// Tessera backward (pre-pass: D = rowsum(dOut ∘ out), packed with lse), spec ${spec.hash}`,
    `// batch ${spec.batch}, heads ${spec.headsQ}, seq ${spec.seqQ}, dimV ${spec.headDimV}, ${spec.layout}`,
    '',
    `const SEQ_Q = ${spec.seqQ}u;`,
    `const HEADS_Q = ${spec.headsQ}u;`,
    `const DEAD_LSE = ${DEAD_LSE};`,
    '',
    '@group(0) @binding(0) var<storage, read> out_buf: array<f32>;',
    '@group(0) @binding(1) var<storage, read> dout_buf: array<f32>;',
    '@group(0) @binding(2) var<storage, read> lse_buf: array<u32>;',
    '@group(0) @binding(3) var<storage, read_write> stats: array<vec2<f32>>;',
    '',
    `@compute @workgroup_size(${ROW_THREADS})`,
    'fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {',
    `  let qi = wg.x * ${ROW_THREADS}u + tid;`,
    '  let bh = wg.y;',
    '  if (qi >= SEQ_Q) { return; }',
    '  let b = bh / HEADS_Q;',
    '  let h = bh % HEADS_Q;',
    `  let row = ${base(st, 'b', 'h')} + qi * ${st.row}u;`,
    '  var d = 0.0f;',
    `  for (var c = 0u; c < ${DV}u; c++) { d = fma(dout_buf[row + c], out_buf[row + c], d); }`,
    '  let bits = lse_buf[bh * SEQ_Q + qi];',
    '  let dead = (bits & 0x7f800000u) == 0x7f800000u; // -inf (or not finite): no gradient',
    '  stats[bh * SEQ_Q + qi] = select(vec2<f32>(bitcast<f32>(bits), d), vec2<f32>(DEAD_LSE, 0.0f), dead);',
    '}',
    '',
  ].join('\n');
}

/** The lines computing `p`, `ds` (and `g` with terms) for query `qi`, key `kj`, raw dot `dot`. */
function probability(spec: AttentionSpec, terms: boolean, qi: string, kj: string): string[] {
  const args = `s_raw, i32(b), i32(h), i32(${qi}), i32(${kj})`;
  if (!spec.scoreMod) return ['let s_mod = s_raw;', 'let ds = 1.0f;'];
  if (terms) return [`let g = score_terms(${args});`, 'let s_mod = g.s;', 'let ds = g.ds;'];
  return [`let sg = score_grad(${args});`, 'let s_mod = sg.x;', 'let ds = sg.y;'];
}

export function emitDkdv(spec: AttentionSpec, plan: BackwardPlan, storage: 'f32' | 'f16'): string {
  const { blockQ: BQ, blockKV: BK } = plan.tile;
  const D4 = ceil4(spec.headDim) / 4;
  const DV4 = ceil4(spec.headDimV) / 4;
  const st = specStrides(spec);
  const renderer = new WgslExprRenderer(placeTensors(spec.tensors));
  const fns = [...scoreFunctions(spec, plan, renderer, false), ...maskFunction(spec, renderer)];
  const helpers = renderer.helperSource('aux');
  const L: string[] = [];
  if (storage === 'f16') L.push('enable f16;', '');
  L.push(
    ...header(spec, plan, 'dK, dV: one workgroup per KV block, one thread per key'),
    '',
    ...PARAMS,
    '',
    `@group(0) @binding(0) var<storage, read> q_buf: ${storageArray(spec.headDim, storage)};`,
    `@group(0) @binding(1) var<storage, read> k_buf: ${storageArray(spec.headDim, storage)};`,
    `@group(0) @binding(2) var<storage, read> v_buf: ${storageArray(spec.headDimV, storage)};`,
    `@group(0) @binding(3) var<storage, read> dout_buf: ${storageArray(spec.headDimV, 'f32')};`,
    '@group(0) @binding(4) var<storage, read> stats: array<vec2<f32>>;',
    `@group(0) @binding(5) var<storage, read_write> dk_buf: ${storageArray(spec.headDim, 'f32')};`,
    `@group(0) @binding(6) var<storage, read_write> dv_buf: ${storageArray(spec.headDimV, 'f32')};`,
    '@group(0) @binding(7) var<storage, read> aux: array<u32>;',
    '@group(0) @binding(8) var<uniform> params: Params;',
    '',
    `var<workgroup> q_tile: array<vec4<f32>, ${BQ * D4}>; // [row][d4]`,
    `var<workgroup> do_tile: array<vec4<f32>, ${BQ * DV4}>; // [row][c4]`,
    `var<workgroup> st_tile: array<vec2<f32>, ${BQ}>; // (lse, D) per row`,
    '',
    rowLoader('load_q', 'q_buf', spec.headDim, storage),
    rowLoader('load_k', 'k_buf', spec.headDim, storage),
    rowLoader('load_v', 'v_buf', spec.headDimV, storage),
    rowLoader('load_do', 'dout_buf', spec.headDimV, 'f32'),
  );
  if (helpers) L.push(helpers);
  if (fns.length > 0) L.push(...fns);
  const maskTest = spec.mask
    ? ['if ((entry >> 31u) == 0u) { p = select(p, 0.0f, !mask(i32(b), i32(h), i32(qi), i32(j))); }']
    : [];
  L.push(
    '',
    `@compute @workgroup_size(${BK})`,
    'fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {',
    '  let kv_block = wg.x;',
    '  let b = wg.y / HEADS_KV;',
    '  let hk = wg.y % HEADS_KV;',
    `  let j = kv_block * ${BK}u + tid;`,
    '  let live = j < SEQ_KV;',
    `  var k_reg: array<vec4<f32>, ${D4}>;`,
    `  var v_reg: array<vec4<f32>, ${DV4}>;`,
    `  var dk: array<vec4<f32>, ${D4}>;`,
    `  var dv: array<vec4<f32>, ${DV4}>;`,
    '  if (live) {',
    `    for (var d4 = 0u; d4 < ${D4}u; d4++) { k_reg[d4] = load_k(${base(st.k, 'b', 'hk')} + j * ${st.k.row}u, d4); }`,
    `    for (var c4 = 0u; c4 < ${DV4}u; c4++) { v_reg[c4] = load_v(${base(st.v, 'b', 'hk')} + j * ${st.v.row}u, c4); }`,
    '  }',
    '  // Every query head of the group, then every Q block that visits this KV block.',
    '  for (var g = 0u; g < GROUP; g++) {',
    '    let h = hk * GROUP + g;',
    '    let bh = b * HEADS_Q + h;',
    `    let col = params.col_start + ${SLICE} * NUM_KV_BLOCKS + kv_block;`,
    '    let first = aux[col];',
    '    let last = aux[col + 1u];',
    '    for (var e = first; e < last; e++) {',
    '      let entry = aux[params.col_entries + e];',
    `      let q0 = (entry & 0x7fffffffu) * ${BQ}u;`,
    '      workgroupBarrier(); // the previous tiles are consumed',
    `      for (var x = tid; x < ${BQ * D4}u; x += ${BK}u) {`,
    `        let r = x / ${D4}u;`,
    '        var qx = vec4<f32>(0.0f);',
    `        if (q0 + r < SEQ_Q) { qx = load_q(${base(st.q, 'b', 'h')} + (q0 + r) * ${st.q.row}u, x % ${D4}u); }`,
    '        q_tile[x] = qx;',
    '      }',
    `      for (var x = tid; x < ${BQ * DV4}u; x += ${BK}u) {`,
    `        let r = x / ${DV4}u;`,
    '        var ox = vec4<f32>(0.0f);',
    `        if (q0 + r < SEQ_Q) { ox = load_do(${base(st.out, 'b', 'h')} + (q0 + r) * ${st.out.row}u, x % ${DV4}u); }`,
    '        do_tile[x] = ox;',
    '      }',
    `      for (var r = tid; r < ${BQ}u; r += ${BK}u) {`,
    '        var sx = vec2<f32>(DEAD_LSE, 0.0f);',
    '        if (q0 + r < SEQ_Q) { sx = stats[bh * SEQ_Q + q0 + r]; }',
    '        st_tile[r] = sx;',
    '      }',
    '      workgroupBarrier();',
    '      if (live) {',
    `        for (var i = 0u; i < ${BQ}u; i++) {`,
    '          let qi = q0 + i;',
    '          var dot_qk = 0.0f;',
    `          for (var d4 = 0u; d4 < ${D4}u; d4++) { dot_qk += dot(q_tile[i * ${D4}u + d4], k_reg[d4]); }`,
    '          let s_raw = dot_qk * SCALE;',
    ...probability(spec, false, 'qi', 'j').map((x) => `          ${x}`),
    '          let stat = st_tile[i];',
    '          var p = exp(s_mod - stat.x);',
    ...maskTest.map((x) => `          ${x}`),
    '          if (p > 0.0f) {',
    '            var dp = 0.0f;',
    `            for (var c4 = 0u; c4 < ${DV4}u; c4++) {`,
    `              let ox = do_tile[i * ${DV4}u + c4];`,
    '              dv[c4] = fma(vec4<f32>(p), ox, dv[c4]);',
    '              dp += dot(ox, v_reg[c4]);',
    '            }',
    '            let coef = p * (dp - stat.y) * ds * SCALE;',
    `            for (var d4 = 0u; d4 < ${D4}u; d4++) { dk[d4] = fma(vec4<f32>(coef), q_tile[i * ${D4}u + d4], dk[d4]); }`,
    '          }',
    '        }',
    '      }',
    '    }',
    '  }',
    '  if (live) {',
    `    let dk_row = ${base(st.k, 'b', 'hk')} + j * ${st.k.row}u;`,
    `    let dv_row = ${base(st.v, 'b', 'hk')} + j * ${st.v.row}u;`,
    ...storeRow('dk_buf', 'dk', spec.headDim, 'dk_row').map((x) => `    ${x}`),
    ...storeRow('dv_buf', 'dv', spec.headDimV, 'dv_row').map((x) => `    ${x}`),
    '  }',
    '}',
    '',
  );
  return L.join('\n');
}

export function emitDq(spec: AttentionSpec, plan: BackwardPlan, storage: 'f32' | 'f16'): string {
  const { blockQ: BQ, blockKV: BK } = plan.tile;
  const D4 = ceil4(spec.headDim) / 4;
  const DV4 = ceil4(spec.headDimV) / 4;
  const st = specStrides(spec);
  const terms = plan.gradient?.tensors ?? [];
  const NT = plan.accumulator ? terms.length : 0;
  const GL = plan.gradLength;
  const renderer = new WgslExprRenderer(placeTensors(spec.tensors));
  const fns = [...scoreFunctions(spec, plan, renderer, NT > 0), ...maskFunction(spec, renderer)];
  const helpers = renderer.helperSource('aux');
  const wgAcc = plan.accumulator === 'workgroup';
  const acc = (x: string): string => (wgAcc ? `t_acc[${x}]` : `t_part[part + ${x}]`);
  const L: string[] = [];
  if (storage === 'f16') L.push('enable f16;', '');
  L.push(
    ...header(spec, plan, 'dQ: one workgroup per Q block, one thread per query'),
    ...(NT > 0
      ? [
          `const GRAD_LEN = ${GL}u; // captured-tensor gradient vector`,
          `const STAGED = ${NT * BQ * BK}u; // ${NT} term(s) × blockQ × blockKV`,
        ]
      : []),
    '',
    ...PARAMS,
    '',
    `@group(0) @binding(0) var<storage, read> q_buf: ${storageArray(spec.headDim, storage)};`,
    `@group(0) @binding(1) var<storage, read> k_buf: ${storageArray(spec.headDim, storage)};`,
    `@group(0) @binding(2) var<storage, read> v_buf: ${storageArray(spec.headDimV, storage)};`,
    `@group(0) @binding(3) var<storage, read> dout_buf: ${storageArray(spec.headDimV, 'f32')};`,
    '@group(0) @binding(4) var<storage, read> stats: array<vec2<f32>>;',
    `@group(0) @binding(5) var<storage, read_write> dq_buf: ${storageArray(spec.headDim, 'f32')};`,
    '@group(0) @binding(6) var<storage, read> aux: array<u32>;',
    '@group(0) @binding(7) var<uniform> params: Params;',
    ...(NT > 0 ? ['@group(0) @binding(8) var<storage, read_write> t_part: array<f32>;'] : []),
    '',
    `var<workgroup> k_tile: array<vec4<f32>, ${BK * D4}>; // [kv][d4]`,
    `var<workgroup> v_tile: array<vec4<f32>, ${BK * DV4}>; // [kv][c4]`,
  );
  if (NT > 0) {
    L.push(
      'var<workgroup> t_idx: array<u32, STAGED>; // [term][row][kv]: gradient-vector index, or NONE',
      'var<workgroup> t_val: array<f32, STAGED>;',
    );
    if (wgAcc) L.push('var<workgroup> t_acc: array<f32, GRAD_LEN>;');
  }
  L.push(
    '',
    rowLoader('load_q', 'q_buf', spec.headDim, storage),
    rowLoader('load_k', 'k_buf', spec.headDim, storage),
    rowLoader('load_v', 'v_buf', spec.headDimV, storage),
    rowLoader('load_do', 'dout_buf', spec.headDimV, 'f32'),
  );
  if (helpers) L.push(helpers);
  if (fns.length > 0) L.push(...fns);
  const maskTest = spec.mask
    ? ['if (partial) { p = select(p, 0.0f, !mask(i32(b), i32(h), i32(qi), i32(kj))); }']
    : [];
  const stage = terms.flatMap((t, n) => {
    const g = plan.gradTensors.find((x) => x.slot === t.slot);
    if (!g || NT === 0) return [];
    return [
      '{',
      `  let at = (${n}u * ${BQ}u + tid) * ${BK}u + j;`,
      `  let ix = g.i${n};`,
      `  let ok = p > 0.0f && ix >= 0i && ix < ${g.length}i;`,
      `  t_idx[at] = select(${NONE}, ${g.offset}u + u32(ix), ok);`,
      `  t_val[at] = select(0.0f, dsp * g.w${n}, ok);`,
      '}',
    ];
  });
  L.push(
    '',
    `@compute @workgroup_size(${BQ})`,
    'fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {',
    '  let q_block = wg.x;',
    '  let bh = wg.y;',
    '  let b = bh / HEADS_Q;',
    '  let h = bh % HEADS_Q;',
    '  let hk = h / GROUP;',
    `  let qi = q_block * ${BQ}u + tid;`,
    '  let live = qi < SEQ_Q;',
    `  let k_base = ${base(st.k, 'b', 'hk')};`,
    `  let v_base = ${base(st.v, 'b', 'hk')};`,
    `  var q_reg: array<vec4<f32>, ${D4}>;`,
    `  var do_reg: array<vec4<f32>, ${DV4}>;`,
    `  var dq: array<vec4<f32>, ${D4}>;`,
    '  var stat = vec2<f32>(DEAD_LSE, 0.0f);',
    '  if (live) {',
    `    for (var d4 = 0u; d4 < ${D4}u; d4++) { q_reg[d4] = load_q(${base(st.q, 'b', 'h')} + qi * ${st.q.row}u, d4); }`,
    `    for (var c4 = 0u; c4 < ${DV4}u; c4++) { do_reg[c4] = load_do(${base(st.out, 'b', 'h')} + qi * ${st.out.row}u, c4); }`,
    '    stat = stats[bh * SEQ_Q + qi];',
    '  }',
  );
  if (NT > 0) {
    L.push(
      '  // This workgroup owns one partial slice; thread x mod blockQ owns element x of it.',
      '  let part = (bh * NUM_Q_BLOCKS + q_block) * GRAD_LEN;',
      `  for (var x = tid; x < GRAD_LEN; x += ${BQ}u) { ${acc('x')} = 0.0f; }`,
    );
  }
  L.push(
    `  let row = params.row_start + ${SLICE} * NUM_Q_BLOCKS + q_block;`,
    '  let first = aux[row];',
    '  let last = aux[row + 1u];',
    '  for (var e = first; e < last; e++) {',
    '    let entry = aux[params.row_entries + e];',
    `    let kv0 = (entry & 0x7fffffffu) * ${BK}u;`,
    '    let partial = (entry >> 31u) == 0u;',
    '    workgroupBarrier(); // the previous tiles (and staged terms) are consumed',
    `    for (var x = tid; x < ${BK * D4}u; x += ${BQ}u) {`,
    `      let r = x / ${D4}u;`,
    '      var kx = vec4<f32>(0.0f);',
    `      if (kv0 + r < SEQ_KV) { kx = load_k(k_base + (kv0 + r) * ${st.k.row}u, x % ${D4}u); }`,
    '      k_tile[x] = kx;',
    '    }',
    `    for (var x = tid; x < ${BK * DV4}u; x += ${BQ}u) {`,
    `      let r = x / ${DV4}u;`,
    '      var vx = vec4<f32>(0.0f);',
    `      if (kv0 + r < SEQ_KV) { vx = load_v(v_base + (kv0 + r) * ${st.v.row}u, x % ${DV4}u); }`,
    '      v_tile[x] = vx;',
    '    }',
    '    workgroupBarrier();',
    `    for (var j = 0u; j < ${BK}u; j++) {`,
    '      let kj = kv0 + j;',
    '      var dot_qk = 0.0f;',
    `      for (var d4 = 0u; d4 < ${D4}u; d4++) { dot_qk += dot(q_reg[d4], k_tile[j * ${D4}u + d4]); }`,
    '      let s_raw = dot_qk * SCALE;',
    ...probability(spec, NT > 0, 'qi', 'kj').map((x) => `      ${x}`),
    '      var p = select(exp(s_mod - stat.x), 0.0f, kj >= SEQ_KV);',
    ...maskTest.map((x) => `      ${x}`),
    '      var dsp = 0.0f;',
    '      if (p > 0.0f) {',
    '        var dp = 0.0f;',
    `        for (var c4 = 0u; c4 < ${DV4}u; c4++) { dp += dot(do_reg[c4], v_tile[j * ${DV4}u + c4]); }`,
    '        dsp = p * (dp - stat.y);',
    '        let coef = dsp * ds * SCALE;',
    `        for (var d4 = 0u; d4 < ${D4}u; d4++) { dq[d4] = fma(vec4<f32>(coef), k_tile[j * ${D4}u + d4], dq[d4]); }`,
    '      }',
    ...stage.map((x) => `      ${x}`),
    '    }',
  );
  if (NT > 0) {
    L.push(
      '    // Fold the staged terms into the partial slice: each thread adds the elements it owns,',
      '    // in staging order, so the sums are the same run to run.',
      '    workgroupBarrier();',
      '    for (var x = 0u; x < STAGED; x++) {',
      '      let ix = t_idx[x];',
      `      if (ix != ${NONE} && ix % ${BQ}u == tid) { ${acc('ix')} += t_val[x]; }`,
      '    }',
    );
  }
  L.push('  }');
  L.push(
    '  if (live) {',
    `    let dq_row = ${base(st.q, 'b', 'h')} + qi * ${st.q.row}u;`,
    ...storeRow('dq_buf', 'dq', spec.headDim, 'dq_row').map((x) => `    ${x}`),
    '  }',
  );
  if (NT > 0 && wgAcc) {
    L.push(`  for (var x = tid; x < GRAD_LEN; x += ${BQ}u) { t_part[part + x] = t_acc[x]; }`);
  }
  L.push('}', '');
  return L.join('\n');
}

export function emitReduce(spec: AttentionSpec, plan: BackwardPlan): string | null {
  if (plan.gradLength === 0) return null;
  return [
    `// Tessera backward (captured-tensor gradients: partial slices summed in workgroup order), spec ${spec.hash}`,
    `const GRAD_LEN = ${plan.gradLength}u;`,
    `const PARTIALS = ${plan.partials}u;`,
    '',
    '@group(0) @binding(0) var<storage, read> t_part: array<f32>;',
    '@group(0) @binding(1) var<storage, read_write> grads: array<f32>;',
    '',
    `@compute @workgroup_size(${ROW_THREADS})`,
    'fn main(@builtin(global_invocation_id) id: vec3<u32>) {',
    '  let x = id.x;',
    '  if (x >= GRAD_LEN) { return; }',
    '  var sum = 0.0f;',
    '  for (var w = 0u; w < PARTIALS; w++) { sum += t_part[w * GRAD_LEN + x]; }',
    '  grads[x] = sum;',
    '}',
    '',
  ].join('\n');
}

export function emitBackwardModules(
  spec: AttentionSpec,
  plan: BackwardPlan,
  storage: 'f32' | 'f16',
): SoftmaxModules {
  return {
    prepass: emitPrepass(spec),
    dkdv: emitDkdv(spec, plan, storage),
    dq: emitDq(spec, plan, storage),
    reduce: plan.accumulator ? emitReduce(spec, plan) : null,
  };
}
