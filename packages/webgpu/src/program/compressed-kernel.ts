/**
 * WGSL of the `compressed` step: one invocation per query row runs an online softmax over the
 * block summaries (score `scale·q·k_j + ln n_j`), accumulating straight into its output row.
 * With a feature map the score is `ln(φ̃(q)·φ̃(k_j)) + c_q + c_j + ln n_j` (the summaries'
 * features come from a first pass into `work`, compressed-features.ts), and a summary with no
 * mass is skipped. Causal: only the summaries of blocks strictly before the query's own block;
 * skipOwnBlock drops the own block too. With a selection, a pointer walks the row's ascending
 * entries beside j to exclude or keep just the selected blocks.
 */
import { MASKED, NEG_INF_BITS } from '../wgsl/common.js';
import { type FeatureLayout, featureConsts, featureHelpers } from './compressed-features.js';
import { emitGridKernel, f32Lit } from './grid.js';

export interface CompressedKernelShape {
  readonly batch: number;
  readonly heads: number;
  readonly headsKV: number;
  readonly rows: number;
  readonly headDim: number;
  readonly cols: number;
  readonly block: number;
  readonly seqKV: number;
  readonly scale: number;
  readonly causal: boolean;
  readonly skipOwnBlock?: boolean;
  /** A feature map instead of softmax; `work` holds the summaries' features (featureLayout). */
  readonly features?: FeatureLayout;
  readonly selection?: {
    readonly mode: 'exclude' | 'only';
    readonly blockQ: number;
    readonly numQBlocks: number;
    /** Index of the first entry in the selection buffer. */
    readonly entries: number;
  };
}

export function emitCompressed(s: CompressedKernelShape): string {
  const numBlocks = Math.ceil(s.seqKV / s.block);
  const sel = s.selection;
  const feat = s.features;
  // Causal already stops before the own block.
  const skipOwn = s.skipOwnBlock === true && !s.causal;
  const score = feat
    ? [
        '  var mass = 0.0f;',
        '  for (var f = 0u; f < F; f++) {',
        '    mass = fma(phi[f], work[KF + (kv + j) * F + f], mass);',
        '  }',
        '  if (!(mass > 0.0f)) {',
        '    continue; // no mass, no contribution',
        '  }',
        '  let s = log(mass) + cq + work[KC + kv + j] + log(f32(n));',
      ]
    : [
        '  var s = 0.0f;',
        '  for (var d = 0u; d < HEAD_DIM; d++) {',
        '    s = fma(q[q0 + d], k[(kv + j) * HEAD_DIM + d], s);',
        '  }',
        '  s = s * SCALE + log(f32(n));',
      ];
  return emitGridKernel({
    title: [
      `Tessera program: compressed attention to ${numBlocks} summaries of ${s.block} keys${feat ? ` with ${feat.featureMap} features (${feat.features})` : ''}${s.causal ? ', causal' : ''}${skipOwn ? ", skipping the query's own block" : ''}${sel ? `, selection ${sel.mode}` : ''}`,
      `q [${s.batch}, ${s.heads}, ${s.rows}, ${s.headDim}], k/v [${s.batch}, ${s.headsKV}, ${numBlocks}, ${s.headDim}/${s.cols}]`,
    ],
    items: s.batch * s.heads * s.rows,
    consts: [
      ['HEADS', s.heads],
      ['HEADS_KV', s.headsKV],
      ['GROUP', s.heads / s.headsKV],
      ['ROWS', s.rows],
      ['HEAD_DIM', s.headDim],
      ['COLS', s.cols],
      ['BLOCK', s.block],
      ['NUM_BLOCKS', numBlocks],
      ['SEQ_KV', s.seqKV],
      ...(feat
        ? ([...featureConsts(feat), ['Q_MUL', f32Lit(feat.query)]] as const)
        : ([['SCALE', f32Lit(s.scale)]] as const)),
      ['MASKED', MASKED],
      ['NEG_INF_BITS', NEG_INF_BITS],
      ...(sel
        ? ([
            ['SEL_BLOCK_Q', sel.blockQ],
            ['SEL_Q_BLOCKS', sel.numQBlocks],
            ['SEL_ENTRIES', sel.entries],
          ] as const)
        : []),
    ],
    bindings: [
      'var<storage, read> q: array<f32>;',
      feat ? 'var<storage, read> work: array<f32>;' : 'var<storage, read> k: array<f32>;',
      'var<storage, read> v: array<f32>;',
      'var<storage, read_write> out: array<f32>;',
      'var<storage, read_write> lse: array<u32>;',
      ...(sel ? ['var<storage, read> selection: array<u32>;'] : []),
    ],
    helpers: [
      ...(feat ? featureHelpers(feat, s.headDim, 'query_features', 'q') : []),
      ...(feat && sel ? [''] : []),
      ...(sel
        ? [
            'fn selected_block(p: u32) -> u32 {',
            '  return selection[SEL_ENTRIES + p] & 0x7fffffffu;',
            '}',
          ]
        : []),
    ],
    body: [
      'let i = idx % ROWS;',
      'let bh = idx / ROWS;',
      'let kv = ((bh / HEADS) * HEADS_KV + (bh % HEADS) / GROUP) * NUM_BLOCKS;',
      'let q0 = idx * HEAD_DIM;',
      'let o0 = idx * COLS;',
      ...(feat ? ['let cq = query_features(q0, Q_MUL);'] : []),
      'for (var c = 0u; c < COLS; c++) {',
      '  out[o0 + c] = 0.0f;',
      '}',
      ...(sel
        ? [
            'let srow = bh * SEL_Q_BLOCKS + i / SEL_BLOCK_Q;',
            'var p = selection[srow];',
            'let p_end = selection[srow + 1u];',
          ]
        : []),
      'var m = MASKED;',
      'var l = 0.0f;',
      'for (var j = 0u; j < NUM_BLOCKS; j++) {',
      '  let n = min(BLOCK, SEQ_KV - j * BLOCK);',
      ...(s.causal
        ? [
            '  if (j >= i / BLOCK) {',
            "    break; // the query's own block and later ones are not seen",
            '  }',
          ]
        : []),
      ...(skipOwn
        ? ['  if (j == i / BLOCK) {', "    continue; // the query's own block is skipped", '  }']
        : []),
      ...(sel
        ? [
            '  while (p < p_end && selected_block(p) < j) {',
            '    p += 1u;',
            '  }',
            '  let picked = p < p_end && selected_block(p) == j;',
            sel.mode === 'exclude' ? '  if (picked) {' : '  if (!picked) {',
            '    continue;',
            '  }',
          ]
        : []),
      ...score,
      '  let m_new = max(m, s);',
      '  let alpha = exp(m - m_new);',
      '  let pj = exp(s - m_new);',
      '  l = l * alpha + pj;',
      '  for (var c = 0u; c < COLS; c++) {',
      '    out[o0 + c] = fma(pj, v[(kv + j) * COLS + c], out[o0 + c] * alpha);',
      '  }',
      '  m = m_new;',
      '}',
      'let ok = l > 0.0f;',
      'let inv = select(0.0f, 1.0f / l, ok);',
      'for (var c = 0u; c < COLS; c++) {',
      '  out[o0 + c] *= inv;',
      '}',
      'lse[idx] = select(NEG_INF_BITS, bitcast<u32>(m + log(l)), ok);',
    ],
  });
}
