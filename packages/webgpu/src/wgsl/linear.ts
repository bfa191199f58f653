/**
 * Linear (kernelised) attention in four passes over chunks of C keys, following core's
 * features.ts: (1) stabilised key features φ̃(k_j) and their log-scales c_j; (2) per chunk, the
 * sums S_c = Σ e^{c_j − M_c} φ̃_j v_jᵀ and z_c = Σ e^{c_j − M_c} φ̃_j with M_c = max c_j;
 * (3) running prefixes over chunks (rescaled as the maximum grows); (4) per query row,
 * out = φ̃(q)·S / φ̃(q)·z with, when causal, the keys of its own chunk added one by one.
 * Everything lives in one scratch buffer `work` (offsets below), so six bindings suffice.
 */
import type { AttentionSpec, FeatureMap } from '@tessera/core';
import { featureDim, linearInputScales } from '@tessera/core/backend';
import { MASKED, NEG_INF_BITS, specStrides } from './common.js';

export const LINEAR_THREADS = 64;

export interface LinearLayout {
  readonly chunk: number;
  readonly chunks: number;
  readonly features: number;
  /** Offsets (in f32 words) of each region of `work`, and its total length. */
  readonly w: number;
  readonly kf: number;
  readonly kc: number;
  readonly states: number;
  readonly cmax: number;
  readonly prefix: number;
  readonly pmax: number;
  readonly words: number;
}

export function linearLayout(spec: AttentionSpec, chunk = 32): LinearLayout {
  if (spec.kernel.type !== 'linear') throw new Error('linearLayout() needs a linear spec');
  const F = featureDim(spec);
  const BHK = spec.batch * spec.headsKV;
  const SK = spec.seqKV;
  const chunks = Math.ceil(SK / chunk);
  const entry = F * (spec.headDimV + 1);
  const random = spec.kernel.featureMap === 'favor+' || spec.kernel.featureMap === 'trig-rf';
  const wLen = random ? spec.kernel.features * spec.headDim : 0;
  let o = 0;
  const take = (n: number): number => {
    const at = o;
    o += n;
    return at;
  };
  return {
    chunk,
    chunks,
    features: F,
    w: take(wLen),
    kf: take(BHK * SK * F),
    kc: take(BHK * SK),
    states: take(BHK * chunks * entry),
    cmax: take(BHK * chunks),
    prefix: take(BHK * (chunks + 1) * entry),
    pmax: take(BHK * (chunks + 1)),
    words: o,
  };
}

const f32Lit = (x: number): string => {
  const s = String(Math.fround(x));
  return /[.e]/.test(s) ? `${s}f` : `${s}.0f`;
};

/**
 * WGSL of a feature map of core's features.ts: `fn name(row: u32, mul: f32) -> f32` writes the
 * stabilised features φ̃ of x = mul · (row's elements) into a `var<private> phi` of featureDim
 * entries and returns the stabiliser c. `fetch` reads element `d` of the row (it may use `row`
 * and `d`); random maps read their matrix from `work[W + r · headDim + d]`, so the module must
 * bind `work` and define `W`.
 */
export function emitFeatureFn(
  name: string,
  map: { readonly featureMap: FeatureMap; readonly features: number },
  headDim: number,
  fetch: string,
): string[] {
  const D = headDim;
  const m = map.features;
  const body: string[] = (() => {
    switch (map.featureMap) {
      case 'elu+1':
        return [
          `for (var d = 0u; d < ${D}u; d++) {`,
          '  let x = mul * FETCH;',
          '  phi[d] = select(exp(x), x + 1.0f, x > 0.0f);',
          '}',
          'return 0.0f;',
        ];
      case 'relu':
        return [
          `for (var d = 0u; d < ${D}u; d++) { phi[d] = max(mul * FETCH, 0.0f); }`,
          'return 0.0f;',
        ];
      case 'favor+':
        return [
          'var sq = 0.0f;',
          `for (var d = 0u; d < ${D}u; d++) { let x = mul * FETCH; sq += x * x; }`,
          `var mx = ${MASKED};`,
          `for (var r = 0u; r < ${m}u; r++) {`,
          '  var p = 0.0f;',
          `  for (var d = 0u; d < ${D}u; d++) { p += work[W + r * ${D}u + d] * (mul * FETCH); }`,
          '  phi[r] = p;',
          '  mx = max(mx, p);',
          '}',
          `for (var r = 0u; r < ${m}u; r++) { phi[r] = exp(phi[r] - mx) * ${f32Lit(1 / Math.sqrt(m))}; }`,
          'return mx - 0.5f * sq;',
        ];
      case 'trig-rf':
        return [
          'var sq = 0.0f;',
          `for (var d = 0u; d < ${D}u; d++) { let x = mul * FETCH; sq += x * x; }`,
          `for (var r = 0u; r < ${m}u; r++) {`,
          '  var p = 0.0f;',
          `  for (var d = 0u; d < ${D}u; d++) { p += work[W + r * ${D}u + d] * (mul * FETCH); }`,
          '  // reduce to [-pi, pi] so sin and cos stay accurate on every driver',
          '  let t = p - 6.283185307179586f * round(p * 0.15915494309189535f);',
          `  phi[r] = sin(t) * ${f32Lit(1 / Math.sqrt(m))};`,
          `  phi[${m}u + r] = cos(t) * ${f32Lit(1 / Math.sqrt(m))};`,
          '}',
          'return 0.5f * sq;',
        ];
    }
  })();
  return [
    `fn ${name}(row: u32, mul: f32) -> f32 {`,
    ...body.map((l) => `  ${l.replaceAll('FETCH', fetch)}`),
    '}',
  ];
}

export function emitLinear(spec: AttentionSpec, lay: LinearLayout, storage: 'f32' | 'f16'): string {
  const k = spec.kernel;
  if (k.type !== 'linear') throw new Error('emitLinear() needs a linear spec');
  const st = specStrides(spec);
  const { query, key } = linearInputScales(spec.scale);
  const D = spec.headDim;
  const DV = spec.headDimV;
  const F = lay.features;
  const C = lay.chunk;
  const E = F * (DV + 1);
  const causal = spec.mask !== null;
  const cast = storage === 'f32' ? '' : 'f32';
  const T = LINEAR_THREADS;

  const featureFn = (name: string, buf: string) =>
    emitFeatureFn(name, k, D, `${cast}(${buf}[row + d])`);

  const lines = [
    ...(storage === 'f16' ? ['enable f16;', ''] : []),
    `// Tessera linear attention (${k.featureMap}, ${F} features${causal ? ', causal' : ''}), spec ${spec.hash}`,
    `// batch ${spec.batch}, heads ${spec.headsQ}/${spec.headsKV}, seq ${spec.seqQ}x${spec.seqKV}, dim ${D}/${DV}, ${spec.layout}, ${spec.dtype}; chunks of ${C} keys`,
    '',
    `const SEQ_Q = ${spec.seqQ}u;`,
    `const SEQ_KV = ${spec.seqKV}u;`,
    `const HEADS_Q = ${spec.headsQ}u;`,
    `const HEADS_KV = ${spec.headsKV}u;`,
    `const GROUP = ${spec.headsQ / spec.headsKV}u;`,
    `const F = ${F}u;`,
    `const DV = ${DV}u;`,
    `const E = ${E}u; // one state: F × DV sums, then F normalisers`,
    `const CHUNK = ${C}u;`,
    `const CHUNKS = ${lay.chunks}u;`,
    `const W = ${lay.w}u;`,
    `const KF = ${lay.kf}u;`,
    `const KC = ${lay.kc}u;`,
    `const STATES = ${lay.states}u;`,
    `const CMAX = ${lay.cmax}u;`,
    `const PREFIX = ${lay.prefix}u;`,
    `const PMAX = ${lay.pmax}u;`,
    `const Q_MUL = ${f32Lit(query)};`,
    `const K_MUL = ${f32Lit(key)};`,
    `const MASKED = ${MASKED};`,
    '',
    `@group(0) @binding(0) var<storage, read> q_buf: array<${storage}>;`,
    `@group(0) @binding(1) var<storage, read> k_buf: array<${storage}>;`,
    `@group(0) @binding(2) var<storage, read> v_buf: array<${storage}>;`,
    '@group(0) @binding(3) var<storage, read_write> out_buf: array<f32>;',
    '@group(0) @binding(4) var<storage, read_write> lse_buf: array<u32>;',
    '@group(0) @binding(5) var<storage, read_write> work: array<f32>;',
    '',
    `var<private> phi: array<f32, ${F}>;`,
    '',
    ...featureFn('key_features', 'k_buf'),
    ...featureFn('query_features', 'q_buf'),
    '',
    '// Pass 1: one thread per key: φ̃(k_j) and c_j.',
    `@compute @workgroup_size(${T})`,
    'fn key_pass(@builtin(global_invocation_id) g: vec3<u32>) {',
    '  let j = g.x;',
    '  let bhk = g.y;',
    '  if (j >= SEQ_KV) { return; }',
    '  let b = bhk / HEADS_KV;',
    '  let hk = bhk % HEADS_KV;',
    `  let c = key_features(b * ${st.k.batch}u + hk * ${st.k.head}u + j * ${st.k.row}u, K_MUL);`,
    '  let at = bhk * SEQ_KV + j;',
    '  for (var f = 0u; f < F; f++) { work[KF + at * F + f] = phi[f]; }',
    '  work[KC + at] = c;',
    '}',
    '',
    "// Pass 2: one workgroup per (chunk, batch, KV head): the chunk's sums, scaled to its own maximum.",
    `@compute @workgroup_size(${T})`,
    'fn chunk_pass(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {',
    '  let chunk = wg.x;',
    '  let bhk = wg.y;',
    '  let b = bhk / HEADS_KV;',
    '  let hk = bhk % HEADS_KV;',
    '  let j0 = chunk * CHUNK;',
    '  let j1 = min(j0 + CHUNK, SEQ_KV);',
    '  var mx = MASKED;',
    '  for (var j = j0; j < j1; j++) { mx = max(mx, work[KC + bhk * SEQ_KV + j]); }',
    '  let state = STATES + (bhk * CHUNKS + chunk) * E;',
    `  for (var e = tid; e < E; e += ${T}u) {`,
    '    let f = e / (DV + 1u);',
    '    let d = e % (DV + 1u);',
    '    var acc = 0.0f;',
    '    for (var j = j0; j < j1; j++) {',
    '      let at = bhk * SEQ_KV + j;',
    '      let w = work[KF + at * F + f] * exp(work[KC + at] - mx);',
    `      let x = select(1.0f, ${cast}(v_buf[b * ${st.v.batch}u + hk * ${st.v.head}u + j * ${st.v.row}u + min(d, DV - 1u)]), d < DV);`,
    '      acc += w * x;',
    '    }',
    '    work[state + e] = acc;',
    '  }',
    '  if (tid == 0u) { work[CMAX + bhk * CHUNKS + chunk] = mx; }',
    '}',
    '',
    '// Pass 3: prefix sums over chunks; PREFIX[c] holds chunks < c, PREFIX[CHUNKS] all of them.',
    `@compute @workgroup_size(${T})`,
    'fn prefix_pass(@builtin(global_invocation_id) g: vec3<u32>) {',
    '  let e = g.x;',
    '  let bhk = g.y;',
    '  if (e >= E) { return; }',
    '  var mx = MASKED;',
    '  var acc = 0.0f;',
    '  for (var c = 0u; c <= CHUNKS; c++) {',
    '    work[PREFIX + (bhk * (CHUNKS + 1u) + c) * E + e] = acc;',
    '    if (e == 0u) { work[PMAX + bhk * (CHUNKS + 1u) + c] = mx; }',
    '    if (c == CHUNKS) { break; }',
    '    let cm = work[CMAX + bhk * CHUNKS + c];',
    '    let nm = max(mx, cm);',
    '    acc = acc * exp(mx - nm) + work[STATES + (bhk * CHUNKS + c) * E + e] * exp(cm - nm);',
    '    mx = nm;',
    '  }',
    '}',
    '',
    '// Pass 4: one thread per query row.',
    `@compute @workgroup_size(${T})`,
    'fn query_pass(@builtin(global_invocation_id) g: vec3<u32>) {',
    '  let qi = g.x;',
    '  let bh = g.y;',
    '  if (qi >= SEQ_Q) { return; }',
    '  let b = bh / HEADS_Q;',
    '  let h = bh % HEADS_Q;',
    '  let hk = h / GROUP;',
    '  let bhk = b * HEADS_KV + hk;',
    `  let cq = query_features(b * ${st.q.batch}u + h * ${st.q.head}u + qi * ${st.q.row}u, Q_MUL);`,
    ...(causal
      ? [
          "  // Whole chunks before this row's chunk come from the prefix; its own keys up to qi one by one.",
          '  let chunk = min(qi / CHUNK, CHUNKS);',
          '  let j0 = chunk * CHUNK;',
          '  let j1 = min(qi + 1u, SEQ_KV);',
        ]
      : ['  let chunk = CHUNKS;', '  let j0 = 0u;', '  let j1 = 0u;']),
    '  let pm = work[PMAX + bhk * (CHUNKS + 1u) + chunk];',
    '  var mx = pm;',
    '  for (var j = j0; j < j1; j++) { mx = max(mx, work[KC + bhk * SEQ_KV + j]); }',
    '  let pw = exp(pm - mx);',
    '  let pre = PREFIX + (bhk * (CHUNKS + 1u) + chunk) * E;',
    '  var den = 0.0f;',
    '  for (var f = 0u; f < F; f++) { den += phi[f] * work[pre + f * (DV + 1u) + DV]; }',
    '  den *= pw;',
    `  var kws = array<f32, ${C}>(); // this row's weight on each key of its own chunk`,
    '  for (var j = j0; j < j1; j++) {',
    '    let at = bhk * SEQ_KV + j;',
    '    var kw = 0.0f;',
    '    for (var f = 0u; f < F; f++) { kw += phi[f] * work[KF + at * F + f]; }',
    '    kws[j - j0] = kw * exp(work[KC + at] - mx);',
    '    den += kws[j - j0];',
    '  }',
    '  let ok = den > 0.0f;',
    '  let inv = select(0.0f, 1.0f / den, ok);',
    `  let o_row = b * ${st.out.batch}u + h * ${st.out.head}u + qi * ${st.out.row}u;`,
    '  for (var d = 0u; d < DV; d++) {',
    '    var num = 0.0f;',
    '    for (var f = 0u; f < F; f++) { num += phi[f] * work[pre + f * (DV + 1u) + d]; }',
    '    num *= pw;',
    '    for (var j = j0; j < j1; j++) {',
    `      num += kws[j - j0] * ${cast}(v_buf[b * ${st.v.batch}u + hk * ${st.v.head}u + j * ${st.v.row}u + d]);`,
    '    }',
    '    out_buf[o_row + d] = num * inv;',
    '  }',
    `  lse_buf[bh * SEQ_Q + qi] = select(${NEG_INF_BITS}, bitcast<u32>(log(den) + cq + mx), ok);`,
    '}',
    '',
  ];
  return lines.join('\n');
}
