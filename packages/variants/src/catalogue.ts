import {
  attentionPooling,
  bigBird,
  exact,
  groupedQuery,
  linformer,
  longformer,
  performer,
  sparseTransformer,
  synthesizer,
} from './classic.js';
import { compactGrouped, linearizedGrouped, nativeSparse, sparseProjected } from './grouped.js';
import { resolveShape, type System, type SystemShape } from './system.js';

/** The block size the standard configurations use at a sequence length: 64 from 1024 tokens up. */
export function standardBlock(seq: number): number {
  let b = 64;
  while (b > 4 && b * 16 > seq) b /= 2;
  return b;
}

/**
 * Every system in a standard configuration for `shape` (the bench's `variants` suite and the
 * conformance catalogue use these). Systems that cannot take the shape are left out: Linformer
 * when causal, Synthesizer when headsKV ≠ headsQ, GQA when headsQ is odd.
 */
export function standardSystems(shape: SystemShape): System[] {
  const s = resolveShape('standardSystems', shape);
  const block = standardBlock(s.seq);
  const nb = Math.ceil(s.seq / block);
  const mha = { ...s, headsKV: s.headsQ };
  const out: System[] = [exact(s), groupedQuery(mha, { kvHeads: 1 })];
  if (s.headsQ % 2 === 0 && s.headsQ > 2) out.push(groupedQuery(mha, { kvHeads: s.headsQ / 2 }));
  out.push(
    longformer(s, { window: 4 * block, global: Math.min(4, s.seq) }),
    bigBird(s, { block, window: 3, globalBlocks: 1, randomBlocks: 2, seed: 7 }),
    sparseTransformer(s, { mode: 'strided', stride: Math.max(2, Math.round(Math.sqrt(s.seq))) }),
    sparseTransformer(s, { mode: 'fixed', stride: 2 * block, summary: Math.max(1, block / 8) }),
    performer(s, { features: Math.min(256, 4 * s.headDim), seed: 3 }),
  );
  if (!s.causal) out.push(linformer(s, { rank: Math.max(1, Math.round(s.seq / 16)), seed: 4 }));
  if (s.headsKV === s.headsQ) {
    out.push(synthesizer(s, { mode: 'dense', hidden: s.headDim, seed: 5 }));
    out.push(synthesizer(s, { mode: 'random', rank: 8, seed: 6 }));
  }
  out.push(
    attentionPooling(s, { block, window: 2 * block }),
    nativeSparse(s, {
      block,
      topK: Math.max(2, Math.min(16, Math.ceil(nb / 4))),
      window: 2 * block,
      seed: 8,
    }),
    linearizedGrouped(s, { group: Math.max(2, Math.min(16, block / 4)), seed: 9 }),
    linearizedGrouped(s, {
      group: Math.max(2, Math.min(16, block / 4)),
      grouping: 'consecutive',
      seed: 9,
    }),
    linearizedGrouped(s, {
      group: Math.max(2, Math.min(16, block / 4)),
      grouping: 'consecutive',
      across: 'softmax',
      seed: 9,
    }),
    compactGrouped(s, { block, fraction: 0.175, seed: 10 }),
    sparseProjected(s, { block, fraction: 0.175 }),
  );
  return out;
}
