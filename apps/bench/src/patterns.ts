import { blockLayout, defineAttention, SpecError } from '@tessera/core';
import { bigBird, slidingWindow } from '@tessera/patterns';
import { type BlockLayoutRows, registerMaker } from './suites.js';

/** Window of the patterns suite: 1024 tokens, or a quarter of short sequences. */
const windowFor = (seq: number) => Math.min(1024, Math.max(1, seq >> 2));
/** BigBird block: 128 tokens (FlexAttention's block), or 32 for short sequences. */
const blockFor = (seq: number) => (seq >= 2048 ? 128 : 32);

registerMaker('patterns', (seq, s) => {
  const w = windowFor(seq);
  return {
    variant: `sliding-window-${w}`,
    peer: { kind: 'sliding-window', window: w },
    build: () =>
      defineAttention({
        batch: s.batch,
        headsQ: s.heads,
        headsKV: s.headsKV,
        seqQ: seq,
        headDim: s.dim,
        dtype: s.dtype,
        mask: slidingWindow(w, { causal: true }),
      }),
  };
});

registerMaker('patterns', (seq, s) => {
  const block = blockFor(seq);
  const build = () =>
    defineAttention({
      batch: s.batch,
      headsQ: s.heads,
      headsKV: s.headsKV,
      seqQ: seq,
      headDim: s.dim,
      dtype: s.dtype,
      mask: bigBird({ window: 3, globalBlocks: 1, randomBlocks: 2, block, seed: 7, seqKV: seq }),
    });
  const layout = (): BlockLayoutRows => {
    const l = blockLayout(build(), { blockQ: block, blockKV: block });
    const rows: number[][] = [];
    for (let i = 0; i < l.numQBlocks; i++) {
      const row: number[] = [];
      for (let e = l.rowStart[i] as number; e < (l.rowStart[i + 1] as number); e++) {
        if (!l.full[e]) throw new SpecError(`bigBird block ${i}: partial at block size ${block}`);
        row.push(l.kvBlocks[e] as number);
      }
      rows.push(row);
    }
    return { block, rows };
  };
  return { variant: 'bigbird', peer: { kind: 'block-layout', block, layout }, build };
});
