/**
 * WGSL of the small program steps (pool, project, dense, gate, merge, subtract): one invocation
 * per output element (per row for merge and subtract), tensors as flat f32 arrays in 'bhsd' order.
 */
import { MASKED, NEG_INF_BITS } from '../wgsl/common.js';
import { emitGridKernel } from './grid.js';

const READ = (name: string, elem = 'f32'): string => `var<storage, read> ${name}: array<${elem}>;`;
const WRITE = (name: string, elem = 'f32'): string =>
  `var<storage, read_write> ${name}: array<${elem}>;`;

/** Shape of a `[batch, heads, rows, cols]` tensor. */
export interface Dims {
  readonly batch: number;
  readonly heads: number;
  readonly rows: number;
  readonly cols: number;
}

const dimsText = (d: Dims): string => `[${d.batch}, ${d.heads}, ${d.rows}, ${d.cols}]`;

/** out[b,h,j,c] = Σ_t w_t x[b,h,j·BLOCK+t,c], w = softmax(weights[h, 0..n_j)) or 1/n_j. */
export function emitPool(x: Dims, block: number, weighted: boolean): string {
  const outRows = Math.ceil(x.rows / block);
  return emitGridKernel({
    title: [
      `Tessera program: pool ${weighted ? '(softmax weights)' : '(mean)'}, blocks of ${block} rows`,
      `x ${dimsText(x)} -> out [${x.batch}, ${x.heads}, ${outRows}, ${x.cols}]`,
    ],
    items: x.batch * x.heads * outRows * x.cols,
    consts: [
      ['HEADS', x.heads],
      ['ROWS', x.rows],
      ['COLS', x.cols],
      ['OUT_ROWS', outRows],
      ['BLOCK', block],
    ],
    bindings: [READ('x'), WRITE('out'), ...(weighted ? [READ('weights')] : [])],
    body: [
      'let c = idx % COLS;',
      'let j = (idx / COLS) % OUT_ROWS;',
      'let bh = idx / (COLS * OUT_ROWS);',
      'let start = j * BLOCK;',
      'let n = min(BLOCK, ROWS - start);',
      'let base = (bh * ROWS + start) * COLS + c;',
      ...(weighted
        ? [
            'let w0 = (bh % HEADS) * BLOCK;',
            `var mx = ${MASKED};`,
            'for (var t = 0u; t < n; t++) {',
            '  mx = max(mx, weights[w0 + t]);',
            '}',
            'var den = 0.0f;',
            'var acc = 0.0f;',
            'for (var t = 0u; t < n; t++) {',
            '  let e = exp(weights[w0 + t] - mx);',
            '  den += e;',
            '  acc += e * x[base + t * COLS];',
            '}',
            'out[idx] = acc / den;',
          ]
        : [
            'var acc = 0.0f;',
            'for (var t = 0u; t < n; t++) {',
            '  acc += x[base + t * COLS];',
            '}',
            'out[idx] = acc / f32(n);',
          ]),
    ],
  });
}

/** out[b,h,i,c] = Σ_n matrix[i,n] x[b,h,n,c]. */
export function emitProject(x: Dims, r: number): string {
  return emitGridKernel({
    title: [
      `Tessera program: project (sequence projection to ${r} rows)`,
      `x ${dimsText(x)}, matrix [1, 1, ${r}, ${x.rows}] -> out [${x.batch}, ${x.heads}, ${r}, ${x.cols}]`,
    ],
    items: x.batch * x.heads * r * x.cols,
    consts: [
      ['ROWS', x.rows],
      ['COLS', x.cols],
      ['OUT_ROWS', r],
    ],
    bindings: [READ('x'), READ('matrix'), WRITE('out')],
    body: [
      'let c = idx % COLS;',
      'let i = (idx / COLS) % OUT_ROWS;',
      'let bh = idx / (COLS * OUT_ROWS);',
      'let x0 = bh * ROWS * COLS + c;',
      'var acc = 0.0f;',
      'for (var n = 0u; n < ROWS; n++) {',
      '  acc = fma(matrix[i * ROWS + n], x[x0 + n * COLS], acc);',
      '}',
      'out[idx] = acc;',
    ],
  });
}

/** out[b,h,n,o] = act(Σ_c x[b,h,n,c] weight[h,c,o] + bias[h,o]). */
export function emitDense(x: Dims, outCols: number, bias: boolean, relu: boolean): string {
  return emitGridKernel({
    title: [
      `Tessera program: dense (per-head projection${bias ? ' + bias' : ''}${relu ? ', relu' : ''})`,
      `x ${dimsText(x)}, weight [1, ${x.heads}, ${x.cols}, ${outCols}] -> out [${x.batch}, ${x.heads}, ${x.rows}, ${outCols}]`,
    ],
    items: x.batch * x.heads * x.rows * outCols,
    consts: [
      ['HEADS', x.heads],
      ['ROWS', x.rows],
      ['COLS', x.cols],
      ['OUT_COLS', outCols],
    ],
    bindings: [READ('x'), READ('weight'), WRITE('out'), ...(bias ? [READ('bias')] : [])],
    body: [
      'let o = idx % OUT_COLS;',
      'let row = idx / OUT_COLS;',
      'let h = (row / ROWS) % HEADS;',
      'let x0 = row * COLS;',
      'let w0 = h * COLS * OUT_COLS + o;',
      `var acc = ${bias ? 'bias[h * OUT_COLS + o]' : '0.0f'};`,
      'for (var c = 0u; c < COLS; c++) {',
      '  acc = fma(x[x0 + c], weight[w0 + c * OUT_COLS], acc);',
      '}',
      `out[idx] = ${relu ? 'max(acc, 0.0f)' : 'acc'};`,
    ],
  });
}

/**
 * out[b,h,n,c] = Σ_br σ(x[b,h,n]·weight[br,h] + bias[br,h]) · branch_br[b,h,n,c]; the branches lie
 * back to back in one buffer.
 */
export function emitGate(x: Dims, cols: number, branches: number): string {
  return emitGridKernel({
    title: [
      `Tessera program: gate (${branches} sigmoid-gated branches)`,
      `x ${dimsText(x)}, weight [1, ${branches}, ${x.heads}, ${x.cols}], bias [1, 1, ${branches}, ${x.heads}] -> out [${x.batch}, ${x.heads}, ${x.rows}, ${cols}]`,
    ],
    items: x.batch * x.heads * x.rows * cols,
    consts: [
      ['HEADS', x.heads],
      ['ROWS', x.rows],
      ['X_COLS', x.cols],
      ['COLS', cols],
      ['BRANCHES', branches],
      ['BRANCH_SIZE', x.batch * x.heads * x.rows * cols],
    ],
    bindings: [READ('x'), READ('weight'), READ('bias'), READ('branches'), WRITE('out')],
    helpers: [
      '// σ(g) without overflowing exp for large |g|.',
      'fn sigmoid(g: f32) -> f32 {',
      '  let e = exp(-abs(g));',
      '  return select(e / (1.0f + e), 1.0f / (1.0f + e), g >= 0.0f);',
      '}',
    ],
    body: [
      'let row = idx / COLS;',
      'let h = (row / ROWS) % HEADS;',
      'let x0 = row * X_COLS;',
      'var acc = 0.0f;',
      'for (var br = 0u; br < BRANCHES; br++) {',
      '  let gh = br * HEADS + h;',
      '  var g = bias[gh];',
      '  for (var d = 0u; d < X_COLS; d++) {',
      '    g = fma(x[x0 + d], weight[gh * X_COLS + d], g);',
      '  }',
      '  acc = fma(sigmoid(g), branches[br * BRANCH_SIZE + idx], acc);',
      '}',
      'out[idx] = acc;',
    ],
  });
}

/**
 * Exact log-sum-exp merge, one invocation per row: branch outs and lses lie back to back; lses
 * are read as bits so that -Infinity (an empty branch row) is recognised without float infinities.
 */
export function emitMerge(rows: number, cols: number, branches: number): string {
  return emitGridKernel({
    title: [
      `Tessera program: merge (${branches} branches by log-sum-exp)`,
      `${rows} rows of ${cols}; a row empty in every branch gets out 0 and lse -inf`,
    ],
    items: rows,
    consts: [
      ['COLS', cols],
      ['BRANCHES', branches],
      ['NEG_INF_BITS', NEG_INF_BITS],
    ],
    bindings: [READ('outs'), READ('lses', 'u32'), WRITE('out'), WRITE('lse', 'u32')],
    body: [
      `var mx = ${MASKED};`,
      'var any = false;',
      'for (var br = 0u; br < BRANCHES; br++) {',
      '  let bits = lses[br * ITEMS + idx];',
      '  if (bits != NEG_INF_BITS) {',
      '    any = true;',
      '    mx = max(mx, bitcast<f32>(bits));',
      '  }',
      '}',
      'var sum = 0.0f;',
      'for (var br = 0u; br < BRANCHES; br++) {',
      '  let bits = lses[br * ITEMS + idx];',
      '  if (bits != NEG_INF_BITS) {',
      '    sum += exp(bitcast<f32>(bits) - mx);',
      '  }',
      '}',
      'let total = mx + log(sum);',
      'for (var c = 0u; c < COLS; c++) {',
      '  out[idx * COLS + c] = 0.0f;',
      '}',
      'for (var br = 0u; br < BRANCHES; br++) {',
      '  let bits = lses[br * ITEMS + idx];',
      '  if (bits != NEG_INF_BITS) {',
      '    let w = exp(bitcast<f32>(bits) - total);',
      '    for (var c = 0u; c < COLS; c++) {',
      '      let o = idx * COLS + c;',
      '      out[o] = fma(w, outs[(br * ITEMS + idx) * COLS + c], out[o]);',
      '    }',
      '  }',
      '}',
      'lse[idx] = select(NEG_INF_BITS, bitcast<u32>(total), any);',
    ],
  });
}

/**
 * What a kernel branch sees outside one of its parts, one invocation per row:
 * t = e^{l_part − l_whole}, out = (o_whole − t·o_part) / (1 − t), lse = l_whole + ln(1 − t);
 * rows with an empty whole or t ≥ 1 get out 0 and lse −∞. An empty part (lse −∞) gives t = 0.
 */
export function emitSubtract(rows: number, cols: number): string {
  return emitGridKernel({
    title: [
      'Tessera program: subtract (a part of a kernel branch taken out of the whole)',
      `${rows} rows of ${cols}; a row with an empty whole or nothing left gets out 0 and lse -inf`,
    ],
    items: rows,
    consts: [
      ['COLS', cols],
      ['NEG_INF_BITS', NEG_INF_BITS],
    ],
    bindings: [
      READ('whole_out'),
      READ('whole_lse', 'u32'),
      READ('part_out'),
      READ('part_lse', 'u32'),
      WRITE('out'),
      WRITE('lse', 'u32'),
    ],
    helpers: [
      '// ln(1 + x) without losing the digits of a small x (WGSL has no log1p).',
      'fn log1p(x: f32) -> f32 {',
      '  let u = 1.0f + x;',
      '  let du = u - 1.0f;',
      '  return select(log(u) * (x / du), x, du == 0.0f);',
      '}',
    ],
    body: [
      'let lw = whole_lse[idx];',
      'let lp = part_lse[idx];',
      'var t = 0.0f;',
      'if (lp != NEG_INF_BITS) {',
      '  t = exp(bitcast<f32>(lp) - bitcast<f32>(lw));',
      '}',
      'let ok = lw != NEG_INF_BITS && t < 1.0f;',
      'let inv = select(0.0f, 1.0f / (1.0f - t), ok);',
      'for (var c = 0u; c < COLS; c++) {',
      '  let o = idx * COLS + c;',
      '  out[o] = select(0.0f, (whole_out[o] - t * part_out[o]) * inv, ok);',
      '}',
      'lse[idx] = select(NEG_INF_BITS, bitcast<u32>(bitcast<f32>(lw) + log1p(-t)), ok);',
    ],
  });
}
