/**
 * The backward of linear attention (the cpu reference's notation: packages/cpu/src/backward/linear.ts),
 * by chunks of C keys / C query rows, per (batch, KV head), with ψ_j = φ̃(k_j)·exp(c_j − max c):
 *   key_pass      φ̃(k_j), c_j (as the forward's pass 1)        kmax_pass  max c per (b, KV head)
 *   kchunk_pass   Σ_chunk ψ_j [v_j; 1]                         kprefix_pass  exclusive prefixes
 *   query_pass    per row: den, D = dOut·out, ∂L/∂φ̃(x_i) → dq; writes φ̃_i / den_i and D_i
 *   rchunk_pass   Σ_chunk rows (every query head of the group) φ̃_i/den_i [dOut_i; D_i]
 *   rsuffix_pass  suffix sums over row chunks
 *   key_back_pass per key: R = Σ_{i sees j} φ̃_i/den_i dOut_iᵀ, r = Σ D_i φ̃_i/den_i;
 *                 dv_j = ψ_jᵀ R, ∂L/∂ψ_j = R v_j − r → dk through the feature map's VJP.
 * Causal: whole chunks before (keys) or after (rows) come from the prefix / suffix, the own chunk
 * element by element. Every sum has a fixed order: deterministic, no atomics.
 */
import type { AttentionSpec } from '@tessera/core';
import { featureDim, linearInputScales } from '@tessera/core/backend';
import { MASKED, specStrides } from '../wgsl/common.js';
import { emitFeatureFn, LINEAR_THREADS } from '../wgsl/linear.js';

export const LINEAR_BACKWARD_PASSES = [
  'key_pass',
  'kmax_pass',
  'kchunk_pass',
  'kprefix_pass',
  'query_pass',
  'rchunk_pass',
  'rsuffix_pass',
  'key_back_pass',
] as const;

/** The scratch buffer's regions (f32 words) and the passes' grids. */
export interface LinearBackwardPlan {
  readonly chunk: number;
  readonly kChunks: number;
  readonly qChunks: number;
  readonly features: number;
  readonly w: number;
  readonly kf: number;
  readonly kc: number;
  readonly kmax: number;
  readonly kstate: number;
  readonly kpre: number;
  readonly rowf: number;
  readonly delta: number;
  readonly rstate: number;
  readonly rsuf: number;
  readonly words: number;
  readonly grids: Readonly<Record<(typeof LINEAR_BACKWARD_PASSES)[number], [number, number]>>;
}

export function planLinearBackward(spec: AttentionSpec, chunk = 32): LinearBackwardPlan {
  if (spec.kernel.type !== 'linear') throw new Error('planLinearBackward() needs a linear spec');
  const F = featureDim(spec);
  const BHK = spec.batch * spec.headsKV;
  const BH = spec.batch * spec.headsQ;
  const E = F * (spec.headDimV + 1);
  const kChunks = Math.ceil(spec.seqKV / chunk);
  const qChunks = Math.ceil(spec.seqQ / chunk);
  const random = spec.kernel.featureMap === 'favor+' || spec.kernel.featureMap === 'trig-rf';
  let o = 0;
  const take = (n: number): number => {
    const at = o;
    o += n;
    return at;
  };
  const T = LINEAR_THREADS;
  return {
    chunk,
    kChunks,
    qChunks,
    features: F,
    w: take(random ? spec.kernel.features * spec.headDim : 0),
    kf: take(BHK * spec.seqKV * F),
    kc: take(BHK * spec.seqKV),
    kmax: take(BHK),
    kstate: take(BHK * kChunks * E),
    kpre: take(BHK * (kChunks + 1) * E),
    rowf: take(BH * spec.seqQ * F),
    delta: take(BH * spec.seqQ),
    rstate: take(BHK * qChunks * E),
    rsuf: take(BHK * (qChunks + 1) * E),
    words: o,
    grids: {
      key_pass: [Math.ceil(spec.seqKV / T), BHK],
      kmax_pass: [1, BHK],
      kchunk_pass: [kChunks, BHK],
      kprefix_pass: [Math.ceil(E / T), BHK],
      query_pass: [Math.ceil(spec.seqQ / T), BH],
      rchunk_pass: [qChunks, BHK],
      rsuffix_pass: [Math.ceil(E / T), BHK],
      key_back_pass: [Math.ceil(spec.seqKV / T), BHK],
    },
  };
}

const f32Lit = (x: number): string => {
  const s = String(Math.fround(x));
  return /[.e]/.test(s) ? `${s}f` : `${s}.0f`;
};

/**
 * `fn name(row: u32, mul: f32)`: adds mul · J_φ(x)ᵀ g · exp(−c) to `vjp_out` for x = mul · row,
 * with `phi` holding φ̃(x) and `gvec` the gradient with respect to φ̃ (core's features.ts maps).
 */
function emitVjp(
  name: string,
  map: { readonly featureMap: string; readonly features: number },
  D: number,
  fetch: string,
): string[] {
  const m = map.features;
  const body: string[] = (() => {
    switch (map.featureMap) {
      case 'elu+1':
      case 'relu':
        return [
          `for (var d = 0u; d < ${D}u; d++) {`,
          '  let x = mul * FETCH;',
          `  let slope = select(${map.featureMap === 'elu+1' ? 'phi[d]' : '0.0f'}, 1.0f, x > 0.0f);`,
          '  vjp_out[d] += mul * gvec[d] * slope;',
          '}',
        ];
      default: {
        const favor = map.featureMap === 'favor+';
        return [
          'var alpha = 0.0f;',
          `for (var r = 0u; r < ${m}u; r++) {`,
          ...(favor
            ? ['  beta[r] = gvec[r] * phi[r];', '  alpha -= beta[r];']
            : [
                `  beta[r] = gvec[r] * phi[${m}u + r] - gvec[${m}u + r] * phi[r];`,
                `  alpha += gvec[r] * phi[r] + gvec[${m}u + r] * phi[${m}u + r];`,
              ]),
          '}',
          `for (var d = 0u; d < ${D}u; d++) {`,
          '  var sum = alpha * mul * FETCH;',
          `  for (var r = 0u; r < ${m}u; r++) { sum += beta[r] * work[W + r * ${D}u + d]; }`,
          '  vjp_out[d] += mul * sum;',
          '}',
        ];
      }
    }
  })();
  return [
    `fn ${name}(row: u32, mul: f32) {`,
    ...body.map((l) => `  ${l.replaceAll('FETCH', fetch)}`),
    '}',
  ];
}

export function emitLinearBackward(
  spec: AttentionSpec,
  lay: LinearBackwardPlan,
  storage: 'f32' | 'f16',
): string {
  const k = spec.kernel;
  if (k.type !== 'linear') throw new Error('emitLinearBackward() needs a linear spec');
  const st = specStrides(spec);
  const { query, key } = linearInputScales(spec.scale);
  const D = spec.headDim;
  const DV = spec.headDimV;
  const F = lay.features;
  const causal = spec.mask !== null;
  const cast = storage === 'f32' ? '' : 'f32';
  const T = LINEAR_THREADS;
  const random = k.featureMap === 'favor+' || k.featureMap === 'trig-rf';
  const kRow = (b: string, h: string, j: string) =>
    `${b} * ${st.k.batch}u + ${h} * ${st.k.head}u + ${j} * ${st.k.row}u`;
  const vRow = (b: string, h: string, j: string) =>
    `${b} * ${st.v.batch}u + ${h} * ${st.v.head}u + ${j} * ${st.v.row}u`;
  const qRow = (b: string, h: string, i: string) =>
    `${b} * ${st.q.batch}u + ${h} * ${st.q.head}u + ${i} * ${st.q.row}u`;
  const oRow = (b: string, h: string, i: string) =>
    `${b} * ${st.out.batch}u + ${h} * ${st.out.head}u + ${i} * ${st.out.row}u`;
  const L = [
    ...(storage === 'f16' ? ['enable f16;', ''] : []),
    `// Tessera linear attention backward (${k.featureMap}, ${F} features${causal ? ', causal' : ''}), spec ${spec.hash}`,
    `// batch ${spec.batch}, heads ${spec.headsQ}/${spec.headsKV}, seq ${spec.seqQ}x${spec.seqKV}, dim ${D}/${DV}, ${spec.layout}, ${spec.dtype}; chunks of ${lay.chunk}`,
    '',
    `const SEQ_Q = ${spec.seqQ}u;`,
    `const SEQ_KV = ${spec.seqKV}u;`,
    `const HEADS_Q = ${spec.headsQ}u;`,
    `const HEADS_KV = ${spec.headsKV}u;`,
    `const GROUP = ${spec.headsQ / spec.headsKV}u;`,
    `const F = ${F}u;`,
    `const DV = ${DV}u;`,
    `const E = ${F * (DV + 1)}u; // one state: F × DV sums, then F normalisers`,
    `const CHUNK = ${lay.chunk}u;`,
    `const K_CHUNKS = ${lay.kChunks}u;`,
    `const Q_CHUNKS = ${lay.qChunks}u;`,
    ...(
      ['w', 'kf', 'kc', 'kmax', 'kstate', 'kpre', 'rowf', 'delta', 'rstate', 'rsuf'] as const
    ).map((r) => `const ${r.toUpperCase()} = ${lay[r]}u;`),
    `const Q_MUL = ${f32Lit(query)};`,
    `const K_MUL = ${f32Lit(key)};`,
    `const MASKED = ${MASKED};`,
    '',
    `@group(0) @binding(0) var<storage, read> q_buf: array<${storage}>;`,
    `@group(0) @binding(1) var<storage, read> k_buf: array<${storage}>;`,
    `@group(0) @binding(2) var<storage, read> v_buf: array<${storage}>;`,
    '@group(0) @binding(3) var<storage, read> dout_buf: array<f32>;',
    '@group(0) @binding(4) var<storage, read_write> dq_buf: array<f32>;',
    '@group(0) @binding(5) var<storage, read_write> dk_buf: array<f32>;',
    '@group(0) @binding(6) var<storage, read_write> dv_buf: array<f32>;',
    '@group(0) @binding(7) var<storage, read_write> work: array<f32>;',
    '',
    `var<private> phi: array<f32, ${F}>;`,
    `var<private> gvec: array<f32, ${F}>;`,
    `var<private> vjp_out: array<f32, ${D}>;`,
    ...(random ? [`var<private> beta: array<f32, ${k.features}>;`] : []),
    '',
    ...emitFeatureFn('key_features', k, D, `${cast}(k_buf[row + d])`),
    ...emitFeatureFn('query_features', k, D, `${cast}(q_buf[row + d])`),
    ...emitVjp('key_vjp', k, D, `${cast}(k_buf[row + d])`),
    ...emitVjp('query_vjp', k, D, `${cast}(q_buf[row + d])`),
    '',
    '// ψ_jf = φ̃_f(k_j) · exp(c_j − max c), from the stored features.',
    'fn psi(bhk: u32, j: u32, f: u32) -> f32 {',
    '  let at = bhk * SEQ_KV + j;',
    '  return work[KF + at * F + f] * exp(work[KC + at] - work[KMAX + bhk]);',
    '}',
    '',
    `@compute @workgroup_size(${T})`,
    'fn key_pass(@builtin(global_invocation_id) g: vec3<u32>) {',
    '  let j = g.x;',
    '  let bhk = g.y;',
    '  if (j >= SEQ_KV) { return; }',
    `  let c = key_features(${kRow('(bhk / HEADS_KV)', '(bhk % HEADS_KV)', 'j')}, K_MUL);`,
    '  let at = bhk * SEQ_KV + j;',
    '  for (var f = 0u; f < F; f++) { work[KF + at * F + f] = phi[f]; }',
    '  work[KC + at] = c;',
    '}',
    '',
    `@compute @workgroup_size(${T})`,
    'fn kmax_pass(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {',
    '  if (tid != 0u) { return; }',
    '  let bhk = wg.y;',
    '  var mx = MASKED;',
    '  for (var j = 0u; j < SEQ_KV; j++) { mx = max(mx, work[KC + bhk * SEQ_KV + j]); }',
    '  work[KMAX + bhk] = mx;',
    '}',
    '',
    `@compute @workgroup_size(${T})`,
    'fn kchunk_pass(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {',
    '  let chunk = wg.x;',
    '  let bhk = wg.y;',
    '  let b = bhk / HEADS_KV;',
    '  let hk = bhk % HEADS_KV;',
    '  let j0 = chunk * CHUNK;',
    '  let j1 = min(j0 + CHUNK, SEQ_KV);',
    `  for (var e = tid; e < E; e += ${T}u) {`,
    '    let f = e / (DV + 1u);',
    '    let d = e % (DV + 1u);',
    '    var acc = 0.0f;',
    '    for (var j = j0; j < j1; j++) {',
    `      let x = select(1.0f, ${cast}(v_buf[${vRow('b', 'hk', 'j')} + min(d, DV - 1u)]), d < DV);`,
    '      acc += psi(bhk, j, f) * x;',
    '    }',
    '    work[KSTATE + (bhk * K_CHUNKS + chunk) * E + e] = acc;',
    '  }',
    '}',
    '',
    '// KPRE[c] holds the key chunks < c; KPRE[K_CHUNKS] all of them.',
    `@compute @workgroup_size(${T})`,
    'fn kprefix_pass(@builtin(global_invocation_id) g: vec3<u32>) {',
    '  let e = g.x;',
    '  let bhk = g.y;',
    '  if (e >= E) { return; }',
    '  var acc = 0.0f;',
    '  for (var c = 0u; c <= K_CHUNKS; c++) {',
    '    work[KPRE + (bhk * (K_CHUNKS + 1u) + c) * E + e] = acc;',
    '    if (c < K_CHUNKS) { acc += work[KSTATE + (bhk * K_CHUNKS + c) * E + e]; }',
    '  }',
    '}',
    '',
    '// One thread per query row: den, D, ∂L/∂φ̃(x_i) and dq; then φ̃_i / den_i and D_i for the keys.',
    `@compute @workgroup_size(${T})`,
    'fn query_pass(@builtin(global_invocation_id) g: vec3<u32>) {',
    '  let qi = g.x;',
    '  let bh = g.y;',
    '  if (qi >= SEQ_Q) { return; }',
    '  let b = bh / HEADS_Q;',
    '  let h = bh % HEADS_Q;',
    '  let hk = h / GROUP;',
    '  let bhk = b * HEADS_KV + hk;',
    `  let q_row = ${qRow('b', 'h', 'qi')};`,
    `  let o_row = ${oRow('b', 'h', 'qi')};`,
    '  _ = query_features(q_row, Q_MUL);',
    ...(causal
      ? [
          '  let chunk = min(qi / CHUNK, K_CHUNKS);',
          '  let j0 = chunk * CHUNK;',
          '  let j1 = min(qi + 1u, SEQ_KV);',
        ]
      : ['  let chunk = K_CHUNKS;', '  let j0 = 0u;', '  let j1 = 0u;']),
    '  let pre = KPRE + (bhk * (K_CHUNKS + 1u) + chunk) * E;',
    '  // den and out·dOut·den (= Σ_d num_d dOut_d)',
    '  var den = 0.0f;',
    '  var ndo = 0.0f;',
    '  for (var f = 0u; f < F; f++) {',
    '    var sdo = 0.0f;',
    `    for (var d = 0u; d < DV; d++) { sdo += work[pre + f * (DV + 1u) + d] * dout_buf[o_row + d]; }`,
    '    var z = work[pre + f * (DV + 1u) + DV];',
    '    for (var j = j0; j < j1; j++) {',
    '      let p = psi(bhk, j, f);',
    '      var vdo = 0.0f;',
    `      for (var d = 0u; d < DV; d++) { vdo += ${cast}(v_buf[${vRow('b', 'hk', 'j')} + d]) * dout_buf[o_row + d]; }`,
    '      sdo += p * vdo;',
    '      z += p;',
    '    }',
    '    gvec[f] = sdo; // Σ_d S_fd dOut_d for now',
    '    den += phi[f] * z;',
    '    ndo += phi[f] * sdo;',
    '  }',
    '  let live = den > 0.0f;',
    '  let inv = select(0.0f, 1.0f / den, live);',
    '  let dd = ndo * inv; // D_i = dOut_i · out_i',
    '  for (var f = 0u; f < F; f++) {',
    '    var z = work[pre + f * (DV + 1u) + DV];',
    '    for (var j = j0; j < j1; j++) { z += psi(bhk, j, f); }',
    '    gvec[f] = (gvec[f] - dd * z) * inv;',
    '  }',
    `  for (var d = 0u; d < ${D}u; d++) { vjp_out[d] = 0.0f; }`,
    '  if (live) { query_vjp(q_row, Q_MUL); }',
    `  for (var d = 0u; d < ${D}u; d++) { dq_buf[q_row + d] = vjp_out[d]; }`,
    '  let r = bh * SEQ_Q + qi;',
    '  for (var f = 0u; f < F; f++) { work[ROWF + r * F + f] = phi[f] * inv; }',
    '  work[DELTA + r] = dd;',
    '}',
    '',
    "// Per row chunk and (batch, KV head): Σ over the group's rows of φ̃_i/den_i [dOut_i; D_i].",
    `@compute @workgroup_size(${T})`,
    'fn rchunk_pass(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {',
    '  let chunk = wg.x;',
    '  let bhk = wg.y;',
    '  let b = bhk / HEADS_KV;',
    '  let hk = bhk % HEADS_KV;',
    '  let i0 = chunk * CHUNK;',
    '  let i1 = min(i0 + CHUNK, SEQ_Q);',
    `  for (var e = tid; e < E; e += ${T}u) {`,
    '    let f = e / (DV + 1u);',
    '    let d = e % (DV + 1u);',
    '    var acc = 0.0f;',
    '    for (var g = 0u; g < GROUP; g++) {',
    '      let h = hk * GROUP + g;',
    '      let bh = b * HEADS_Q + h;',
    '      for (var i = i0; i < i1; i++) {',
    '        let r = bh * SEQ_Q + i;',
    `        let x = select(work[DELTA + r], dout_buf[${oRow('b', 'h', 'i')} + min(d, DV - 1u)], d < DV);`,
    '        acc += work[ROWF + r * F + f] * x;',
    '      }',
    '    }',
    '    work[RSTATE + (bhk * Q_CHUNKS + chunk) * E + e] = acc;',
    '  }',
    '}',
    '',
    '// RSUF[c] holds the row chunks ≥ c; RSUF[Q_CHUNKS] none.',
    `@compute @workgroup_size(${T})`,
    'fn rsuffix_pass(@builtin(global_invocation_id) g: vec3<u32>) {',
    '  let e = g.x;',
    '  let bhk = g.y;',
    '  if (e >= E) { return; }',
    '  var acc = 0.0f;',
    '  for (var n = 0u; n <= Q_CHUNKS; n++) {',
    '    let c = Q_CHUNKS - n;',
    '    if (c < Q_CHUNKS) { acc += work[RSTATE + (bhk * Q_CHUNKS + c) * E + e]; }',
    '    work[RSUF + (bhk * (Q_CHUNKS + 1u) + c) * E + e] = acc;',
    '  }',
    '}',
    '',
    '// One thread per key: dv_j = ψ_jᵀ R, ∂L/∂ψ_j = R v_j − r, dk through the VJP.',
    `@compute @workgroup_size(${T})`,
    'fn key_back_pass(@builtin(global_invocation_id) g: vec3<u32>) {',
    '  let j = g.x;',
    '  let bhk = g.y;',
    '  if (j >= SEQ_KV) { return; }',
    '  let b = bhk / HEADS_KV;',
    '  let hk = bhk % HEADS_KV;',
    `  let k_row = ${kRow('b', 'hk', 'j')};`,
    `  let v_row = ${vRow('b', 'hk', 'j')};`,
    ...(causal
      ? [
          '  let chunk = min(j / CHUNK + 1u, Q_CHUNKS);',
          '  let i0 = j;',
          '  let i1 = min((j / CHUNK + 1u) * CHUNK, SEQ_Q);',
        ]
      : ['  let chunk = 0u;', '  let i0 = 0u;', '  let i1 = 0u;']),
    '  let suf = RSUF + (bhk * (Q_CHUNKS + 1u) + chunk) * E;',
    '  let ce = exp(work[KC + bhk * SEQ_KV + j] - work[KMAX + bhk]);',
    '  // dv',
    '  for (var d = 0u; d < DV; d++) {',
    '    var acc = 0.0f;',
    '    for (var f = 0u; f < F; f++) {',
    '      var rfd = work[suf + f * (DV + 1u) + d];',
    '      for (var g2 = 0u; g2 < GROUP; g2++) {',
    '        let h = hk * GROUP + g2;',
    '        for (var i = i0; i < i1; i++) {',
    `          rfd += work[ROWF + ((b * HEADS_Q + h) * SEQ_Q + i) * F + f] * dout_buf[${oRow('b', 'h', 'i')} + d];`,
    '        }',
    '      }',
    '      acc += psi(bhk, j, f) * rfd;',
    '    }',
    '    dv_buf[v_row + d] = acc;',
    '  }',
    '  // ∂L/∂ψ_j, times exp(c_j − max c) for the VJP on φ̃(k_j)',
    '  for (var f = 0u; f < F; f++) {',
    '    var acc = -work[suf + f * (DV + 1u) + DV];',
    `    for (var d = 0u; d < DV; d++) { acc += work[suf + f * (DV + 1u) + d] * ${cast}(v_buf[v_row + d]); }`,
    '    for (var g2 = 0u; g2 < GROUP; g2++) {',
    '      let h = hk * GROUP + g2;',
    '      for (var i = i0; i < i1; i++) {',
    '        let r = (b * HEADS_Q + h) * SEQ_Q + i;',
    '        var vdo = 0.0f;',
    `        for (var d = 0u; d < DV; d++) { vdo += dout_buf[${oRow('b', 'h', 'i')} + d] * ${cast}(v_buf[v_row + d]); }`,
    '        acc += work[ROWF + r * F + f] * (vdo - work[DELTA + r]);',
    '      }',
    '    }',
    '    gvec[f] = acc * ce;',
    '  }',
    '  _ = key_features(k_row, K_MUL);',
    `  for (var d = 0u; d < ${D}u; d++) { vjp_out[d] = 0.0f; }`,
    '  key_vjp(k_row, K_MUL);',
    `  for (var d = 0u; d < ${D}u; d++) { dk_buf[k_row + d] = vjp_out[d]; }`,
    '}',
    '',
  ];
  return L.join('\n');
}
