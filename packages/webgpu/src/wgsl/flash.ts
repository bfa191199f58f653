/**
 * The fused (flash-style) softmax attention kernel. One workgroup owns a Q tile of one
 * (batch, head); each thread owns `rowsPerThread` query rows and every KV column of the tile, so
 * the online softmax needs no cross-thread reduction and P never leaves registers. The KV blocks
 * to visit come from the block layout buffer at run time; K and V tiles are staged in workgroup
 * memory and read by all threads at the same address (broadcast). Scores are kept in base 2.
 */
import type { AttentionSpec } from '@tessera/core';
import {
  ceil4,
  indent,
  loop,
  MASKED,
  MASKED_LIMIT,
  NEG_INF_BITS,
  rowLoader,
  specStrides,
  storageArray,
} from './common.js';
import { placeTensors, specFunctions, WgslExprRenderer } from './expr.js';

/** How one fused kernel is shaped; `chooseFlashTile` picks one from the device's limits. */
export interface FlashTile {
  /** Query rows per workgroup (the layout's blockQ). */
  readonly blockQ: number;
  /** KV rows per staged tile (the layout's blockKV). */
  readonly blockKV: number;
  /** Query rows each thread owns; blockQ / rowsPerThread threads per workgroup. */
  readonly rowsPerThread: number;
  /** Where a thread's queries live: workgroup memory (shared) or a private array (registers). */
  readonly qStage: 'shared' | 'private';
  /** Unroll the loops over the thread's rows and the tile's columns in the source. */
  readonly unroll: boolean;
}

export interface FlashEmitOptions {
  readonly tile: FlashTile;
  /** Element type of q, k, v in storage buffers ('f16' needs the shader-f16 feature). */
  readonly storage: 'f32' | 'f16';
}

export const LOG2E = Math.LOG2E;

const ind = (xs: string[]): string[] => xs.map((l) => `  ${l}`);

/** Bytes of workgroup memory the tile needs. */
export function flashWorkgroupBytes(spec: AttentionSpec, tile: FlashTile): number {
  const dp = ceil4(spec.headDim);
  const dvp = ceil4(spec.headDimV);
  const q = tile.qStage === 'shared' ? tile.blockQ * dp : 0;
  return 4 * (q + tile.blockKV * (dp + dvp));
}

const f32Lit = (x: number): string => {
  const s = String(Math.fround(x));
  return /[.e]/.test(s) ? `${s}f` : `${s}.0f`;
};

export function emitFlash(spec: AttentionSpec, options: FlashEmitOptions): string {
  const { tile, storage } = options;
  const BQ = tile.blockQ;
  const BK = tile.blockKV;
  const RQ = tile.rowsPerThread;
  if (!Number.isInteger(BQ / RQ)) throw new Error('blockQ must be a multiple of rowsPerThread');
  const T = BQ / RQ;
  const D4 = ceil4(spec.headDim) / 4;
  const DV4 = ceil4(spec.headDimV) / 4;
  const st = specStrides(spec);
  const un = tile.unroll;
  const hasMod = spec.scoreMod !== null;
  const hasMask = spec.mask !== null;
  const qScale = hasMod ? spec.scale : spec.scale * LOG2E;

  const renderer = new WgslExprRenderer(placeTensors(spec.tensors));
  const fns = specFunctions(spec, renderer);
  const helpers = renderer.helperSource();
  const hasTensors = spec.tensors.length > 0;

  const qRow = (i: string): string => (RQ === 1 ? 'tid' : `${i} * ${T}u + tid`);
  const sIdx = (i: string, j: string): string => (RQ === 1 ? j : `${i} * ${BK}u + ${j}`);
  const aIdx = (i: string, c: string): string => (RQ === 1 ? c : `${i} * ${DV4}u + ${c}`);

  const lines: string[] = [];
  const L = (...xs: string[]) => lines.push(...xs);
  if (storage === 'f16') L('enable f16;', '');
  L(
    `// Tessera fused attention, spec ${spec.hash}`,
    `// batch ${spec.batch}, heads ${spec.headsQ}/${spec.headsKV}, seq ${spec.seqQ}x${spec.seqKV}, dim ${spec.headDim}/${spec.headDimV}, ${spec.layout}, ${spec.dtype}`,
    `// tile: blockQ ${BQ}, blockKV ${BK}, ${RQ} row(s) per thread, ${T} threads, queries in ${tile.qStage === 'shared' ? 'workgroup memory' : 'registers'}`,
    '',
    `const SEQ_Q = ${spec.seqQ}u;`,
    `const SEQ_KV = ${spec.seqKV}u;`,
    `const HEADS_Q = ${spec.headsQ}u;`,
    `const GROUP = ${spec.headsQ / spec.headsKV}u;`,
    `const NUM_Q_BLOCKS = ${Math.ceil(spec.seqQ / BQ)}u;`,
    `const Q_SCALE = ${f32Lit(qScale)}; // scale${hasMod ? '' : ' * log2(e)'}`,
    'const LOG2E = 1.4426950408889634f;',
    'const LN2 = 0.6931471805599453f;',
    `const MASKED = ${MASKED};`,
    `const MASKED_LIMIT = ${MASKED_LIMIT};`,
    '',
    'struct Params {',
    '  q_block_base: u32,',
    '  bh_base: u32,',
    '  layout_batches: u32,',
    '  layout_heads: u32,',
    '  entries: u32,',
    '}',
    '',
    `@group(0) @binding(0) var<storage, read> q_buf: ${storageArray(spec.headDim, storage)};`,
    `@group(0) @binding(1) var<storage, read> k_buf: ${storageArray(spec.headDim, storage)};`,
    `@group(0) @binding(2) var<storage, read> v_buf: ${storageArray(spec.headDimV, storage)};`,
    `@group(0) @binding(3) var<storage, read_write> out_buf: ${storageArray(spec.headDimV, 'f32')};`,
    '@group(0) @binding(4) var<storage, read_write> lse_buf: array<u32>;',
    '@group(0) @binding(5) var<storage, read> layout_buf: array<u32>;',
    '@group(0) @binding(6) var<uniform> params: Params;',
  );
  if (hasTensors) L('@group(0) @binding(7) var<storage, read> tensors: array<u32>;');
  L('');
  if (tile.qStage === 'shared')
    L(`var<workgroup> q_tile: array<vec4<f32>, ${BQ * D4}>; // [d4][row]`);
  L(
    `var<workgroup> k_tile: array<vec4<f32>, ${BK * D4}>; // [kv][d4]`,
    `var<workgroup> v_tile: array<vec4<f32>, ${BK * DV4}>; // [kv][c4]`,
    '',
    rowLoader('load_q', 'q_buf', spec.headDim, storage),
    rowLoader('load_k', 'k_buf', spec.headDim, storage),
    rowLoader('load_v', 'v_buf', spec.headDimV, storage),
  );
  if (helpers) L(helpers);
  if (fns.length > 0) L(...fns);

  // Output store.
  const store =
    spec.headDimV % 4 === 0
      ? ['out_buf[o_row / 4u + c4] = acc[ai] * inv;']
      : [
          'for (var c = 0u; c < 4u; c++) {',
          `  if (c4 * 4u + c < ${spec.headDimV}u) { out_buf[o_row + c4 * 4u + c] = acc[ai][c] * inv; }`,
          '}',
        ];

  L(
    '',
    `@compute @workgroup_size(${T})`,
    'fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {',
    '  let q_block = wg.x + params.q_block_base;',
    '  let bh = wg.y + params.bh_base;',
    '  let b = bh / HEADS_Q;',
    '  let h = bh % HEADS_Q;',
    '  let hk = h / GROUP;',
    `  let q_base = b * ${st.q.batch}u + h * ${st.q.head}u;`,
    `  let k_base = b * ${st.k.batch}u + hk * ${st.k.head}u;`,
    `  let v_base = b * ${st.v.batch}u + hk * ${st.v.head}u;`,
    `  let q0 = q_block * ${BQ}u;`,
    '',
  );
  const body: string[] = [];
  const B = (...xs: string[]) => body.push(...xs);
  if (tile.qStage === 'shared') {
    B(
      "// Stage the tile's queries, pre-scaled.",
      `for (var e = tid; e < ${BQ * D4}u; e += ${T}u) {`,
      `  let r = e / ${D4}u;`,
      `  let d4 = e % ${D4}u;`,
      '  var x = vec4<f32>(0.0f);',
      `  if (q0 + r < SEQ_Q) { x = load_q(q_base + (q0 + r) * ${st.q.row}u, d4) * Q_SCALE; }`,
      `  q_tile[d4 * ${BQ}u + r] = x;`,
      '}',
    );
  } else {
    B(
      "// This thread's queries, pre-scaled, in registers.",
      `var q_reg: array<vec4<f32>, ${RQ * D4}>;`,
      ...loop('i', RQ, un, (i) => [
        `if (q0 + ${qRow(i)} < SEQ_Q) {`,
        `  for (var d4 = 0u; d4 < ${D4}u; d4++) {`,
        `    q_reg[${RQ === 1 ? '' : `${i} * ${D4}u + `}d4] = load_q(q_base + (q0 + ${qRow(i)}) * ${st.q.row}u, d4) * Q_SCALE;`,
        '  }',
        '}',
      ]),
    );
  }
  const sliceExpr =
    '(select(0u, b, params.layout_batches > 1u) * params.layout_heads + select(0u, h, params.layout_heads > 1u))';
  B(
    '',
    `var m: array<f32, ${RQ}>;`,
    `var l: array<f32, ${RQ}>;`,
    `var acc: array<vec4<f32>, ${RQ * DV4}>;`,
    ...loop('i', RQ, un, (i) => [`m[${i}] = MASKED;`]),
    '',
    '// Walk the KV blocks the layout lists for this Q block.',
    `let row = ${sliceExpr} * NUM_Q_BLOCKS + q_block;`,
    'let first = layout_buf[row];',
    'let last = layout_buf[row + 1u];',
    'for (var e = first; e < last; e++) {',
  );
  const inner: string[] = [];
  const I = (...xs: string[]) => inner.push(...xs);
  I(
    'let entry = layout_buf[params.entries + e];',
    `let kv0 = (entry & 0x7fffffffu) * ${BK}u;`,
    'workgroupBarrier(); // the previous tiles are consumed',
    `for (var x = tid; x < ${BK * D4}u; x += ${T}u) {`,
    `  let j = x / ${D4}u;`,
    '  var kx = vec4<f32>(0.0f);',
    `  if (kv0 + j < SEQ_KV) { kx = load_k(k_base + (kv0 + j) * ${st.k.row}u, x % ${D4}u); }`,
    '  k_tile[x] = kx;',
    '}',
    `for (var x = tid; x < ${BK * DV4}u; x += ${T}u) {`,
    `  let j = x / ${DV4}u;`,
    '  var vx = vec4<f32>(0.0f);',
    `  if (kv0 + j < SEQ_KV) { vx = load_v(v_base + (kv0 + j) * ${st.v.row}u, x % ${DV4}u); }`,
    '  v_tile[x] = vx;',
    '}',
    'workgroupBarrier();',
    '',
    "// Scores of this thread's rows against the tile.",
    `var s = array<f32, ${RQ * BK}>();`,
    `for (var d4 = 0u; d4 < ${D4}u; d4++) {`,
  );
  const qSrc = (i: string): string =>
    tile.qStage === 'shared'
      ? `q_tile[d4 * ${BQ}u + ${qRow(i)}]`
      : `q_reg[${RQ === 1 ? '' : `${i} * ${D4}u + `}d4]`;
  const kSrc = (j: string): string => `k_tile[${j} * ${D4}u + d4]`;
  const num = (x: string): string => x.replace(/u$/, '');
  if (RQ === 1) {
    I(
      `  let qv = ${qSrc('0u')};`,
      ...ind(loop('j', BK, un, (j) => [`s[${j}] += dot(qv, ${kSrc(j)});`])),
    );
  } else if (un) {
    for (let i = 0; i < RQ; i++) I(`  let qv_${i} = ${qSrc(`${i}u`)};`);
    I(
      ...ind(
        loop('j', BK, true, (j) => [
          `let kx_${num(j)} = ${kSrc(j)};`,
          ...Array.from(
            { length: RQ },
            (_, i) => `s[${sIdx(`${i}u`, j)}] += dot(qv_${i}, kx_${num(j)});`,
          ),
        ]),
      ),
    );
  } else {
    I(
      ...ind(
        loop('j', BK, false, (j) => [
          `let kx = ${kSrc(j)};`,
          ...loop('i', RQ, false, (i) => [`s[${sIdx(i, j)}] += dot(${qSrc(i)}, kx);`]),
        ]),
      ),
    );
  }
  I('}');
  const qIdx = (i: string): string => `i32(q0 + ${qRow(i)})`;
  if (hasMod) {
    I(
      '',
      '// Score modification (natural units), then base 2.',
      ...loop('i', RQ, un, (i) =>
        loop('j', BK, un, (j) => [
          `s[${sIdx(i, j)}] = score_mod(s[${sIdx(i, j)}], i32(b), i32(h), ${qIdx(i)}, i32(kv0 + ${j})) * LOG2E;`,
        ]),
      ),
    );
  }
  const cond = hasMask ? `(entry >> 31u) == 0u || kv0 + ${BK}u > SEQ_KV` : `kv0 + ${BK}u > SEQ_KV`;
  const test = (i: string, j: string) =>
    hasMask
      ? `(kv0 + ${j} >= SEQ_KV) | !mask(i32(b), i32(h), ${qIdx(i)}, i32(kv0 + ${j}))`
      : `kv0 + ${j} >= SEQ_KV`;
  I(
    '',
    hasMask
      ? '// Partial block (or past the sequence end): the per-element mask.'
      : '// Past the sequence end: mask the missing keys.',
    `if (${cond}) {`,
    ...loop('i', RQ, un, (i) =>
      loop('j', BK, un, (j) => [
        `s[${sIdx(i, j)}] = select(s[${sIdx(i, j)}], MASKED, ${test(i, j)});`,
      ]),
    ).map((l) => `  ${l}`),
    '}',
    '',
    '// Online softmax: rescale what was accumulated, add this tile.',
    ...loop('i', RQ, un, (i) => [
      '{',
      `  var mx = m[${i}];`,
      ...loop('j', BK, un, (j) => [`mx = max(mx, s[${sIdx(i, j)}]);`]).map((l) => `  ${l}`),
      '  let m_use = select(mx, 0.0f, mx <= MASKED_LIMIT);',
      `  let alpha = exp2(m[${i}] - m_use);`,
      `  m[${i}] = mx;`,
      '  var sum = 0.0f;',
      ...loop('j', BK, un, (j) => [
        `{ let p = exp2(s[${sIdx(i, j)}] - m_use); s[${sIdx(i, j)}] = p; sum += p; }`,
      ]).map((l) => `  ${l}`),
      `  l[${i}] = l[${i}] * alpha + sum;`,
      ...loop('c4', DV4, un, (c) => [`acc[${aIdx(i, c)}] *= alpha;`]).map((l) => `  ${l}`),
      '}',
    ]),
    ...loop('j', BK, un, (j) =>
      loop('c4', DV4, un, (c) => [
        '{',
        `  let vx = v_tile[${j} * ${DV4}u + ${c}];`,
        ...ind(
          loop('i', RQ, un, (i) => [
            `acc[${aIdx(i, c)}] = fma(vec4<f32>(s[${sIdx(i, j)}]), vx, acc[${aIdx(i, c)}]);`,
          ]),
        ),
        '}',
      ]),
    ),
  );
  B(...inner.map((l) => `  ${l}`), '}');
  B(
    '',
    '// Normalise and write; a row with no unmasked key gets out = 0 and lse = -inf.',
    ...loop('i', RQ, un, (i) => [
      '{',
      `  let qi = q0 + ${qRow(i)};`,
      '  if (qi < SEQ_Q) {',
      `    let ok = l[${i}] > 0.0f;`,
      `    let inv = select(0.0f, 1.0f / l[${i}], ok);`,
      `    let o_row = b * ${st.out.batch}u + h * ${st.out.head}u + qi * ${st.out.row}u;`,
      `    for (var c4 = 0u; c4 < ${DV4}u; c4++) {`,
      `      let ai = ${aIdx(i, 'c4')};`,
      ...store.map((l) => `      ${l}`),
      '    }',
      `    let lse = (m[${i}] + log2(l[${i}])) * LN2;`,
      `    lse_buf[bh * SEQ_Q + qi] = select(${NEG_INF_BITS}, bitcast<u32>(lse), ok);`,
      '  }',
      '}',
    ]),
  );
  L(indent(body.join('\n'), 2), '}', '');
  return lines.join('\n');
}
