// The whole catalogue against cpu, compared two ways so that it can fail: the blockwise strategy
// against the naive one (which ignores block layouts), and against the independent dense
// implementation written for cpu's unit tests (its own expression interpreter, no compileJs).
// Then the gradient half ('ci' profile): the tiled backward against the naive one.
import { createCpuBackend } from '@tessera/cpu';
import { denseAttention } from '../../../packages/cpu/test/dense.js';
import { describeConformance, describeGradientConformance } from '../src/vitest.js';

// Every pattern × heads × mod combination ('all'), at the small 'ci' sizes.
describeConformance('cpu tiled vs cpu naive', () => createCpuBackend(), {
  crossProduct: 'all',
  referenceOptions: { strategy: 'naive' },
});

// Small blocks here, so that block skipping and per-slice layouts matter at catalogue sizes.
describeConformance(
  'cpu tiled (16×8 blocks) vs the dense test reference',
  () => createCpuBackend(),
  {
    crossProduct: 'all',
    reference: () => denseAttention,
    runOptions: { blockQ: 16, blockKV: 8 },
  },
);

// The blockwise backward (block layout, skipped blocks, per-block recomputation from lse) against
// the naive one (every element, no layout). No skip list: every case must pass.
describeGradientConformance('cpu tiled vs cpu naive', () => createCpuBackend(), {
  profile: 'ci',
  runOptions: { strategy: 'tiled' },
  referenceOptions: { strategy: 'naive' },
});
