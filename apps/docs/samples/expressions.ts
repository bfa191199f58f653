// Concepts: the expression language (site/concepts/expressions.md).
// #region mods
import { defineAttention, emitJs, hash, maskMod, scoreMod, tensor, where } from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';

const heads = 4;

// ALiBi: subtract slope(h) · distance from each score; one slope per query head, captured as a tensor.
const slopes = tensor(
  Float32Array.from({ length: heads }, (_, h) => 2 ** ((-8 * (h + 1)) / heads)),
);
const alibi = scoreMod(({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv))), {
  name: 'alibi',
});

// A causal window of 64 keys, written out as an expression (slidingWindow(64) builds the same).
const window = maskMod(({ q, kv }) => q.ge(kv).and(q.sub(kv).lt(64)), { name: 'window-64' });
// #endregion mods

// #region more
// Softcapping (Gemma 2): squash scores into (−30, 30) with tanh.
const softcap = scoreMod(({ score }) => score.div(30).tanh().mul(30), { name: 'softcap-30' });

// Keep a pseudo-random half of the pairs, the same on every backend: hash() is u32 arithmetic.
const dropHalf = maskMod(({ q, kv }) => hash(7, q, kv).lt(0.5), { name: 'random-half' });

// where(cond, a, b) picks per element: here a bonus for the first token (an attention sink).
const sinkBonus = scoreMod(({ score, kv }) => where(kv.eq(0), score.add(1), score), {
  name: 'sink-bonus',
});
// #endregion more

// #region run
const spec = defineAttention({
  batch: 1,
  headsQ: heads,
  seqQ: 256,
  headDim: 32,
  dtype: 'f32',
  mask: window,
  scoreMod: alibi,
});

// Every backend lowers the same expression; the JavaScript renderer shows what it means.
if (spec.mask) console.log(emitJs(spec.mask.expr, 'window'));

const random = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
const q = random(heads * 256 * 32);
const k = random(heads * 256 * 32);
const v = random(heads * 256 * 32);
const backend = await createCpuBackend();
const { out, lse } = await backend.run(spec, { q, k, v });

// #endregion run

export { dropHalf, k, lse, out, q, sinkBonus, slopes, softcap, spec, v };
