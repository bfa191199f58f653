// The gradient half of the conformance catalogue (tooling/conformance, 'ci' profile) on the
// emulated CUDA device (test/gradient-emulated-addon.cjs: the generated kernels compiled for the
// host with g++ and run there) against the cpu backend's backward, each case within its
// catalogue tolerance. A filtered set, because the emulator is too slow for the whole catalogue:
// each case is its own spec, hence its own g++ build and emulated run of 4–25 s on CI's 2 cores
// (11 cases took 125 s), so the 138 cases would take well over 15 minutes. These 8 cover each
// kind of work the kernels do: linear causal and not, GQA, BSHD, bf16 linear; softmax with
// position-indexed tensor gradients, ALiBi on a block-sparse layout, fully masked rows, seq 1.
// favor+ and trig-rf causal and not: test/linear-backward.test.ts. The whole catalogue runs on the
// H200: bench/h100/run.ts --gradients.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gradientCases } from '@tessera/conformance';
import { describeGradientConformance } from '@tessera/conformance/vitest';
import { afterAll, expect, it } from 'vitest';

const tmp = mkdtempSync(join(tmpdir(), 'tessera-gradient-conformance-'));
process.env.TESSERA_CUDA_ADDON = join(import.meta.dirname, 'gradient-emulated-addon.cjs');
process.env.TESSERA_CUDA_CACHE = join(tmp, 'cache');
process.env.TESSERA_EMU_DIR = join(tmp, 'emu');
const { createCudaBackend } = await import('../src/index.js');
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** The emulated subset: ids of the 'ci' catalogue (checked below, so none goes stale). */
const EMULATED_GRADIENT_CASES: readonly string[] = [
  'linear/elu+1/causal/gqa',
  'linear/relu/non-causal/mha',
  'dtype/bf16/linear-favor',
  'layout/bshd/linear-elu',
  'pattern/bigbird/mha/alibi',
  'tensor/relative-bias',
  'masked/every-third-row',
  'size/seq-1',
];

describeGradientConformance('cuda (emulated device)', () => createCudaBackend(), {
  profile: 'ci',
  filter: (c) => EMULATED_GRADIENT_CASES.includes(c.id),
  timeout: 300_000,
});

it('names only cases of the catalogue', () => {
  const ids = new Set(gradientCases({ profile: 'ci' }).map((c) => c.id));
  expect(EMULATED_GRADIENT_CASES.filter((id) => !ids.has(id))).toEqual([]);
});
