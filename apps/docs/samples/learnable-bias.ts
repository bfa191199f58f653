// Guide: train a learnable bias (site/guide/learnable-bias.md). A hidden "teacher" attends with
// per-head ALiBi slopes; a student with the same inputs starts from other slopes and recovers the
// teacher's from its outputs alone, by Adam on the slopes' gradient from backend.backward, on every
// backend this machine has.

// #region spec
import { type AttentionBackend, defineAttention, scoreMod, tensor } from '@tessera/core';
import { causal } from '@tessera/patterns';

const HEADS = 4;
const SEQ = 64;
const DIM = 16;

/** Causal attention with ALiBi: score − slope[h] · (q − kv), the slopes a captured f32 tensor. */
function alibiSpec(slopes: Float32Array) {
  const m = tensor(slopes);
  return defineAttention({
    batch: 1,
    headsQ: HEADS,
    seqQ: SEQ,
    headDim: DIM,
    mask: causal(),
    scoreMod: scoreMod(({ score, h, q, kv }) => score.sub(m.at(h).mul(q.sub(kv).toFloat())), {
      name: 'alibi',
    }),
  });
}
// #endregion spec

// #region data
// The teacher's slopes are hidden from the student; only its outputs on fixed inputs are seen.
const teacherSlopes = Float32Array.from([0.5, 0.25, 0.125, 0.0625]);
const random = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
const n = HEADS * SEQ * DIM;
const inputs = { q: random(n).map((x) => 2 * x), k: random(n).map((x) => 2 * x), v: random(n) };
// #endregion data

// #region train
/** Fits the slopes on `backend`: loss = ½‖out − target‖², Adam (lr 0.02), `steps` steps. */
async function fitSlopes(backend: AttentionBackend, steps: number) {
  if (!backend.backward) throw new Error(`${backend.name} has no backward pass`);
  const target = (await backend.run(alibiSpec(teacherSlopes), inputs)).out;
  const slopes = new Float32Array(HEADS).fill(0.1); // the student's start
  const m = new Float64Array(HEADS);
  const v = new Float64Array(HEADS);
  let loss = 0;
  for (let t = 1; t <= steps; t++) {
    // A spec's captured tensors are part of the spec: each step builds one with the new slopes.
    // Its structural hash is unchanged, so compiled kernels are reused.
    const spec = alibiSpec(Float32Array.from(slopes));
    const { out, lse } = await backend.run(spec, inputs);
    const dOut = out.map((o, i) => o - (target[i] as number)); // ∂loss/∂out
    loss = dOut.reduce((s, d) => s + d * d, 0) / 2;
    const { grads } = await backend.backward(spec, { ...inputs, out, lse, dOut });
    const g = grads[0] as Float32Array; // slot 0: the slopes, the spec's only captured tensor
    for (let h = 0; h < HEADS; h++) {
      const gh = g[h] as number;
      m[h] = 0.9 * (m[h] as number) + 0.1 * gh;
      v[h] = 0.999 * (v[h] as number) + 0.001 * gh * gh;
      const step =
        (0.02 * ((m[h] as number) / (1 - 0.9 ** t))) /
        (Math.sqrt((v[h] as number) / (1 - 0.999 ** t)) + 1e-8);
      slopes[h] = (slopes[h] as number) - step;
    }
  }
  return { slopes, loss };
}

// #endregion train

// #region run
import { UnsupportedError } from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { CudaUnavailableError, createCudaBackend } from '@tessera/cuda';
import { createWebGpuBackend } from '@tessera/webgpu';

const STEPS = 300;
const fitted: Record<string, Float32Array> = {};
for (const [name, create] of [
  ['cpu', createCpuBackend],
  ['webgpu', createWebGpuBackend],
  ['cuda', () => createCudaBackend()],
] as const) {
  let backend: AttentionBackend;
  try {
    backend = await create();
  } catch (e) {
    if (!(e instanceof UnsupportedError || e instanceof CudaUnavailableError)) throw e;
    console.log(`${name}: not available here (${e.message})`);
    continue;
  }
  const { slopes, loss } = await fitSlopes(backend, STEPS);
  fitted[name] = slopes;
  const shown = Array.from(slopes, (s) => s.toFixed(3)).join(', ');
  console.log(`${name}: slopes after ${STEPS} steps [${shown}], loss ${loss.toExponential(1)}`);
  await backend.dispose();
}

// #endregion run

export { fitted, inputs, teacherSlopes };
