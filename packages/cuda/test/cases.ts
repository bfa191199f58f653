// Specs that exercise every branch of the CUDA generator: both kernel paths, both layouts,
// GQA/MQA, odd lengths and head dims, masks with and without analytic layouts, score mods with
// captured tensors, and every linear feature map. The nvcc test compiles these beside the
// conformance catalogue's cases.
import {
  type AttentionSpec,
  defineAttention,
  hash,
  maskMod,
  scoreMod,
  tensor,
} from '@tessera/core';
import { bigBird, causal, slidingWindow } from '@tessera/patterns';

const slopes = tensor(Float32Array.from({ length: 8 }, (_, h) => 2 ** -(h + 1)));
const docs = tensor(Int32Array.from({ length: 100 }, (_, i) => Math.floor(i / 17)));
const alibi = scoreMod(({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).toFloat())), {
  name: 'alibi',
});
const softcap = scoreMod(({ score }) => score.div(30).tanh().mul(30), { name: 'softcap-30' });
const document = maskMod(({ q, kv }) => docs.at(q).eq(docs.at(kv)).and(q.ge(kv)), {
  name: 'document-causal',
});
const randomDrop = maskMod(({ b, h, q, kv }) => hash(99, b, h, q, kv).lt(0.7).or(q.eq(kv)), {
  name: 'random-keep-70',
});

export const generatorCases: Record<string, AttentionSpec> = {
  'mma-dense-bf16': defineAttention({ batch: 1, headsQ: 4, seqQ: 256, headDim: 64, dtype: 'bf16' }),
  'mma-causal-f16-gqa': defineAttention({
    batch: 2,
    headsQ: 8,
    headsKV: 2,
    seqQ: 200,
    headDim: 128,
    dtype: 'f16',
    mask: causal(),
  }),
  'mma-window-alibi-bshd': defineAttention({
    batch: 1,
    headsQ: 8,
    headsKV: 1,
    seqQ: 300,
    seqKV: 333,
    headDim: 64,
    dtype: 'bf16',
    layout: 'bshd',
    mask: slidingWindow(64, { causal: true }),
    scoreMod: alibi,
  }),
  'mma-hdim-40-96': defineAttention({
    batch: 1,
    headsQ: 2,
    seqQ: 77,
    headDim: 40,
    headDimV: 96,
    dtype: 'bf16',
    mask: randomDrop,
  }),
  'mma-hdim-256-softcap': defineAttention({
    batch: 1,
    headsQ: 2,
    seqQ: 130,
    headDim: 256,
    dtype: 'bf16',
    scoreMod: softcap,
  }),
  'mma-bigbird': defineAttention({
    batch: 1,
    headsQ: 2,
    seqQ: 512,
    headDim: 64,
    dtype: 'bf16',
    mask: bigBird({ window: 3, globalBlocks: 1, randomBlocks: 2, block: 64, seqKV: 512, seed: 3 }),
  }),
  'simt-f32-document': defineAttention({
    batch: 2,
    headsQ: 4,
    headsKV: 2,
    seqQ: 100,
    headDim: 32,
    mask: document,
    scoreMod: alibi,
  }),
  'simt-f32-odd-dims': defineAttention({
    batch: 1,
    headsQ: 3,
    seqQ: 45,
    seqKV: 61,
    headDim: 17,
    headDimV: 33,
    layout: 'bshd',
  }),
  'simt-bf16-hdim-20': defineAttention({
    batch: 1,
    headsQ: 2,
    seqQ: 64,
    headDim: 20,
    dtype: 'bf16',
    mask: causal(),
  }),
  'simt-f32-hdim-300': defineAttention({ batch: 1, headsQ: 1, seqQ: 33, headDim: 300 }),
  'linear-elu-causal': defineAttention({
    batch: 1,
    headsQ: 4,
    headsKV: 2,
    seqQ: 150,
    headDim: 32,
    kernel: { type: 'linear', featureMap: 'elu+1' },
    mask: causal(),
  }),
  'linear-relu-bf16': defineAttention({
    batch: 2,
    headsQ: 2,
    seqQ: 70,
    headDim: 48,
    dtype: 'bf16',
    kernel: { type: 'linear', featureMap: 'relu' },
  }),
  'linear-favor-causal-bshd': defineAttention({
    batch: 1,
    headsQ: 2,
    seqQ: 100,
    headDim: 64,
    layout: 'bshd',
    kernel: { type: 'linear', featureMap: 'favor+', features: 96, seed: 7 },
    mask: causal(),
  }),
  'linear-trig-f16': defineAttention({
    batch: 1,
    headsQ: 2,
    seqQ: 90,
    seqKV: 120,
    headDim: 32,
    dtype: 'f16',
    kernel: { type: 'linear', featureMap: 'trig-rf', features: 200 },
  }),
};
