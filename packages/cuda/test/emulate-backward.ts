// Runs a generated backward module on the host with the emulator of test/emulator.ts: every
// kernel in launch order (pre-pass, dk/dv, dq, tensor gradients) over the case's inputs.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type AttentionGradients,
  type AttentionSpec,
  type BackwardInputs,
  packHalf,
  tensorSizes,
} from '@tessera/core';
import { type BackwardPlanOptions, planBackward } from '../src/backward/plan.js';
import { emitBackward } from '../src/backward/softmax.js';
import { hostKernel, RUNTIME } from './emulator.js';

export interface BackwardCase {
  readonly name: string;
  readonly spec: AttentionSpec;
  readonly inputs: BackwardInputs;
  readonly options?: BackwardPlanOptions;
}

function unit(index: number, c: BackwardCase): string {
  const { spec } = c;
  const plan = planBackward(spec, c.options);
  const m = emitBackward(spec, plan);
  const elem = spec.dtype === 'f32' ? 'float' : 'unsigned short';
  const sz = tensorSizes(spec);
  const rows = spec.batch * spec.headsQ * spec.seqQ;
  const launch = (
    k: { name: string; threads: number; dynamicSharedBytes: number },
    grid: readonly number[],
  ) => `emu_launch(${k.name}, p, {${grid.join(', ')}}, ${k.threads}, ${k.dynamicSharedBytes});`;
  return `namespace tsr_bcase_${index} {
${hostKernel(m, spec.dtype)}
void run(const std::string& dir) {
  auto q = emu_read<${elem}>(dir + "/q.bin"); auto k = emu_read<${elem}>(dir + "/k.bin"); auto v = emu_read<${elem}>(dir + "/v.bin");
  auto out = emu_read<${elem}>(dir + "/out.bin"); auto dout = emu_read<${elem}>(dir + "/dout.bin"); auto lse = emu_read<float>(dir + "/lse.bin");
  auto rs = emu_read<int>(dir + "/rs.bin"); auto kb = emu_read<int>(dir + "/kb.bin"); auto fu = emu_read<unsigned char>(dir + "/full.bin");
  auto cs = emu_read<int>(dir + "/cs.bin"); auto qbk = emu_read<int>(dir + "/qb.bin"); auto cf = emu_read<unsigned char>(dir + "/cfull.bin");
  std::vector<float> delta(${rows}, NAN), lse2(${rows}, NAN), dq(${sz.q}, NAN), dk(${sz.k}, NAN), dv(${sz.v}, NAN), tpart(${Math.max(1, plan.partialFloats)}, NAN);
  std::vector<unsigned long long> tfix(${Math.max(1, plan.fixedCount)}, 0ull);
  TsrBwdParams p{};
  p.q = q.data(); p.k = k.data(); p.v = v.data(); p.out = out.data(); p.dout = dout.data(); p.lse = lse.data();
  p.delta = delta.data(); p.lse2 = lse2.data(); p.dq = dq.data(); p.dk = dk.data(); p.dv = dv.data();
  p.row_start = rs.data(); p.kv_blocks = kb.data(); p.full = fu.data(); p.col_start = cs.data(); p.q_blocks = qbk.data(); p.col_full = cf.data();
  p.tpart = tpart.data(); p.tfix = tfix.data(); p.layout_batches = ${plan.layout.batches}; p.layout_heads = ${plan.layout.heads};
${spec.tensors.map((t, i) => `  auto t${i} = emu_read<${t.dtype === 'f32' ? 'float' : 'int'}>(dir + "/t${i}.bin"); p.t${i} = t${i}.data();`).join('\n')}
${plan.gradSlots.map((s) => `  std::vector<float> g${s}(${spec.tensors[s]?.length}, NAN); p.g${s} = g${s}.data();`).join('\n')}
  ${launch(m.pre, plan.grids.pre)}
  ${launch(m.dkdv, plan.grids.dkdv)}
  ${launch(m.dq, plan.grids.dq)}
  ${m.grads ? launch(m.grads, [1, 1, 1]) : ''}
  emu_write(dir + "/dq.out", dq.data(), dq.size()); emu_write(dir + "/dk.out", dk.data(), dk.size()); emu_write(dir + "/dv.out", dv.data(), dv.size());
${plan.gradSlots.map((s) => `  emu_write(dir + "/g${s}.out", g${s}.data(), g${s}.size());`).join('\n')}
}
}  // namespace tsr_bcase_${index}
`;
}

const readF32 = (file: string) => {
  const b = readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4).slice();
};

/** Builds one host program for all cases, runs it, and reads back each case's gradients. */
export function runBackwardEmulated(
  dir: string,
  cases: readonly BackwardCase[],
): AttentionGradients[] {
  const units: string[] = [];
  cases.forEach((c, i) => {
    const d = join(dir, `bcase${i}`);
    mkdirSync(d, { recursive: true });
    const { spec, inputs } = c;
    const as = (x: Float32Array) => (spec.dtype === 'f32' ? x : packHalf(x, spec.dtype));
    writeFileSync(join(d, 'q.bin'), as(inputs.q));
    writeFileSync(join(d, 'k.bin'), as(inputs.k));
    writeFileSync(join(d, 'v.bin'), as(inputs.v));
    writeFileSync(join(d, 'out.bin'), as(inputs.out));
    writeFileSync(join(d, 'dout.bin'), as(inputs.dOut));
    writeFileSync(join(d, 'lse.bin'), inputs.lse);
    const plan = planBackward(spec, c.options);
    const nonEmpty = <T extends ArrayBufferView & { length: number }>(x: T, e: T) =>
      x.length ? x : e;
    writeFileSync(join(d, 'rs.bin'), plan.dqLayout.rowStart);
    writeFileSync(join(d, 'kb.bin'), nonEmpty(plan.dqLayout.kvBlocks, new Int32Array(1)));
    writeFileSync(join(d, 'full.bin'), nonEmpty(plan.dqLayout.full, new Uint8Array(1)));
    writeFileSync(join(d, 'cs.bin'), plan.columns.colStart);
    writeFileSync(join(d, 'qb.bin'), nonEmpty(plan.columns.qBlocks, new Int32Array(1)));
    writeFileSync(join(d, 'cfull.bin'), nonEmpty(plan.columns.full, new Uint8Array(1)));
    for (const [ti, t] of spec.tensors.entries()) writeFileSync(join(d, `t${ti}.bin`), t.data);
    units.push(unit(i, c));
  });
  const main = `int main(int argc, char** argv) {
  const std::string root = argv[1];
${cases.map((_, i) => `  tsr_bcase_${i}::run(root + "/bcase${i}");`).join('\n')}
}
`;
  const src = join(dir, 'backward.cc');
  writeFileSync(src, `${RUNTIME}\n${units.join('\n')}\n${main}`);
  const exe = join(dir, 'backward');
  let t = performance.now();
  execFileSync('g++', ['-std=c++20', '-O1', '-pthread', '-w', '-o', exe, src], { stdio: 'pipe' });
  const compileMs = performance.now() - t;
  t = performance.now();
  execFileSync(exe, [dir], { stdio: 'pipe', timeout: 300_000 });
  if (process.env.TSR_EMU_TIMES)
    console.log(
      `emulated backward: g++ ${compileMs.toFixed(0)} ms, run ${(performance.now() - t).toFixed(0)} ms`,
    );
  return cases.map(({ spec }, i) => {
    const d = join(dir, `bcase${i}`);
    const slots = new Set(planBackward(spec, cases[i]?.options).gradSlots);
    return {
      dq: readF32(join(d, 'dq.out')),
      dk: readF32(join(d, 'dk.out')),
      dv: readF32(join(d, 'dv.out')),
      grads: spec.tensors.map((_, s) => (slots.has(s) ? readF32(join(d, `g${s}.out`)) : null)),
    };
  });
}
