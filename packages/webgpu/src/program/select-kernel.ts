/**
 * WGSL of the `select` step: one invocation per (batch, query head, query block) reads the static
 * candidate row (CSR, as core's blockLayout), keeps the forced local blocks, finds the best of the
 * others by q·k (ties to the lower block) in one pass per free slot, and writes the kept blocks in
 * ascending order into the selection's CSR entries. Row starts are data-independent and written
 * by the host; every entry is partial (flag bit clear), so the fused kernel evaluates the mask
 * inside selected blocks.
 */
import { emitGridKernel } from './grid.js';

export interface SelectKernelShape {
  readonly batch: number;
  readonly headsQ: number;
  readonly headsKV: number;
  readonly headDim: number;
  readonly blockQ: number;
  readonly blockKV: number;
  readonly numQBlocks: number;
  readonly numKVBlocks: number;
  readonly local: number;
  /** The candidate layout's slices (1 or batch, 1 or headsQ). */
  readonly candidateBatches: number;
  readonly candidateHeads: number;
  /** Index of the first candidate entry in the candidate buffer (its row count + 1). */
  readonly candidateEntries: number;
  /** Index of the first entry in the selection buffer (its row count + 1). */
  readonly selectionEntries: number;
  /** Longest candidate row: the per-invocation stride of the score scratch buffer. */
  readonly maxCandidates: number;
}

export function emitSelect(s: SelectKernelShape): string {
  return emitGridKernel({
    title: [
      `Tessera program: select (top-k KV blocks by q·k, ${s.local} local block(s) forced)`,
      `batch ${s.batch}, heads ${s.headsQ}/${s.headsKV}, dim ${s.headDim}, blocks ${s.blockQ}x${s.blockKV}, ${s.numQBlocks} Q blocks x ${s.numKVBlocks} KV blocks`,
    ],
    items: s.batch * s.headsQ * s.numQBlocks,
    consts: [
      ['HEADS_Q', s.headsQ],
      ['HEADS_KV', s.headsKV],
      ['GROUP', s.headsQ / s.headsKV],
      ['HEAD_DIM', s.headDim],
      ['BLOCK_Q', s.blockQ],
      ['BLOCK_KV', s.blockKV],
      ['NUM_Q_BLOCKS', s.numQBlocks],
      ['NUM_KV_BLOCKS', s.numKVBlocks],
      ['LOCAL', s.local],
      ['CAND_BATCHES', s.candidateBatches],
      ['CAND_HEADS', s.candidateHeads],
      ['CAND_ENTRIES', s.candidateEntries],
      ['SEL_ENTRIES', s.selectionEntries],
      ['MAX_CANDIDATES', Math.max(1, s.maxCandidates)],
    ],
    bindings: [
      'var<storage, read> q: array<f32>;',
      'var<storage, read> k: array<f32>;',
      'var<storage, read> candidates: array<u32>;',
      'var<storage, read_write> selection: array<u32>;',
      'var<storage, read_write> scores: array<f32>;',
    ],
    helpers: [
      '// KV block j meets key positions [qb·BLOCK_Q − (LOCAL−1)·BLOCK_KV, (qb+1)·BLOCK_Q).',
      'fn is_local(j: u32, qb: u32) -> bool {',
      '  let lo = i32(qb * BLOCK_Q) - (i32(LOCAL) - 1) * i32(BLOCK_KV);',
      '  let hi = i32((qb + 1u) * BLOCK_Q);',
      '  let start = i32(j * BLOCK_KV);',
      '  let end = i32((j + 1u) * BLOCK_KV);',
      '  return LOCAL > 0u && start < hi && end > lo;',
      '}',
      '',
      'fn candidate(e: u32) -> u32 {',
      '  return candidates[CAND_ENTRIES + e] & 0x7fffffffu;',
      '}',
    ],
    body: [
      'let qb = idx % NUM_Q_BLOCKS;',
      'let bh = idx / NUM_Q_BLOCKS;',
      'let b = bh / HEADS_Q;',
      'let h = bh % HEADS_Q;',
      'let slice = select(0u, b, CAND_BATCHES > 1u) * CAND_HEADS + select(0u, h, CAND_HEADS > 1u);',
      'let c0 = candidates[slice * NUM_Q_BLOCKS + qb];',
      'let n = candidates[slice * NUM_Q_BLOCKS + qb + 1u] - c0;',
      'let w0 = selection[idx];',
      'let keep = selection[idx + 1u] - w0;',
      'let q0 = idx * HEAD_DIM;',
      'let k0 = (b * HEADS_KV + h / GROUP) * NUM_KV_BLOCKS * HEAD_DIM;',
      'let s0 = idx * MAX_CANDIDATES;',
      '',
      '// Count the forced blocks; score the others.',
      'var forced = 0u;',
      'for (var e = 0u; e < n; e++) {',
      '  let j = candidate(c0 + e);',
      '  if (is_local(j, qb)) {',
      '    forced += 1u;',
      '  } else {',
      '    var dot = 0.0f;',
      '    for (var d = 0u; d < HEAD_DIM; d++) {',
      '      dot = fma(q[q0 + d], k[k0 + j * HEAD_DIM + d], dot);',
      '    }',
      '    scores[s0 + e] = dot;',
      '  }',
      '}',
      'let slots = select(0u, keep - forced, keep > forced);',
      '',
      '// The slots-th best of the others by (score desc, block asc): one pass per slot, each',
      '// taking the best candidate ranked after the previous pick.',
      'var last_s = 0.0f;',
      'var last_e = 0u;',
      'var have = false;',
      'for (var t = 0u; t < slots; t++) {',
      '  var best_e = n;',
      '  var best_s = 0.0f;',
      '  for (var e = 0u; e < n; e++) {',
      '    if (is_local(candidate(c0 + e), qb)) {',
      '      continue;',
      '    }',
      '    let s = scores[s0 + e];',
      '    let after = !have || s < last_s || (s == last_s && e > last_e);',
      '    if (after && (best_e == n || s > best_s)) {',
      '      best_e = e;',
      '      best_s = s;',
      '    }',
      '  }',
      '  if (best_e == n) {',
      '    break;',
      '  }',
      '  last_s = best_s;',
      '  last_e = best_e;',
      '  have = true;',
      '}',
      '',
      '// Kept: the forced blocks and the others ranked up to the last pick, in ascending order.',
      'var w = 0u;',
      'for (var e = 0u; e < n && w < keep; e++) {',
      '  let j = candidate(c0 + e);',
      '  let s = scores[s0 + e];',
      '  let ranked = have && (s > last_s || (s == last_s && e <= last_e));',
      '  if (is_local(j, qb) || ranked) {',
      '    selection[SEL_ENTRIES + w0 + w] = j;',
      '    w += 1u;',
      '  }',
      '}',
    ],
  });
}

/**
 * Splits every selected block into `factor` consecutive sub-blocks (entry j → j·factor + f), for a
 * fused-kernel tile smaller than the selection's blockKV. Row starts scale by `factor` (the host
 * writes them); sub-blocks past the sequence end are masked by the fused kernel's bounds check.
 */
export function emitSubdivide(entries: number, factor: number, from: number, to: number): string {
  return emitGridKernel({
    title: [
      `Tessera program: split ${entries} selected blocks into ${factor} sub-blocks each`,
      'every sub-block partial, as the selection',
    ],
    items: entries * factor,
    consts: [
      ['FACTOR', factor],
      ['FROM_ENTRIES', from],
      ['TO_ENTRIES', to],
    ],
    bindings: [
      'var<storage, read> selection: array<u32>;',
      'var<storage, read_write> split: array<u32>;',
    ],
    body: [
      'let j = selection[FROM_ENTRIES + idx / FACTOR] & 0x7fffffffu;',
      'split[TO_ENTRIES + idx] = j * FACTOR + idx % FACTOR;',
    ],
  });
}
