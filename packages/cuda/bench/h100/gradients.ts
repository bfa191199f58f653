// The gradient catalogue on the device (`run.mjs --gradients`): every case of the 'ci' gradient
// catalogue and a sample of the 'full' profile's other cases (every third with work ≤ 3e8, so the
// f64 cpu reference stays within the run's budget), each checked against the cpu backend's
// backward with the case's tolerance (tooling/conformance's runGradientCase). 16-bit softmax
// cases take the tensor-core path where their head dims allow, as by default. Prints the pass
// counts per profile; writes $OUT/cuda-gradients.json.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type GradientCase, gradientCases, runGradientCase } from '@tessera/conformance';
import { createCpuBackend } from '@tessera/cpu';
import { createCudaBackend } from '../../src/index.js';

const log = (s: string) => console.log(`[cuda-gradients] ${s}`);

/** The 'full' profile's sample: its cases absent from 'ci', every third of those small enough. */
export function fullSample(): GradientCase[] {
  const ci = new Set(gradientCases({ profile: 'ci' }).map((c) => c.id));
  return gradientCases({ profile: 'full' })
    .filter((c) => !ci.has(c.id) && c.work <= 3e8)
    .filter((_, i) => i % 3 === 0);
}

export async function runGradientBench(opts: {
  quick: boolean;
  outDir: string | null;
}): Promise<number> {
  const cuda = await createCudaBackend();
  const cpu = await createCpuBackend();
  const t0 = performance.now();
  const budgetMs = opts.quick ? 40_000 : 80_000;
  const profiles: [string, GradientCase[]][] = [
    ['ci', gradientCases({ profile: 'ci' })],
    ['full (sample)', fullSample()],
  ];
  const json: Record<string, unknown> = { device: cuda.device };
  let failed = 0;
  // Every case's kernels compile first, in parallel (NVRTC runs on the libuv pool) while the cpu
  // forward builds the next case's inputs.
  const built = await Promise.all(
    profiles.map(([, cases]) =>
      Promise.all(
        cases.map(async (c) => {
          const b = await c.build();
          await cuda.prepareBackward(b.spec).catch(() => undefined);
          return b;
        }),
      ),
    ),
  );
  log(`${built.flat().length} cases built in ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
  for (const [p, [profile, cases]] of profiles.entries()) {
    let pass = 0;
    let notRun = 0;
    const failures: string[] = [];
    const results: Record<string, unknown> = {};
    for (const [i, c] of cases.entries()) {
      if (performance.now() - t0 > budgetMs) {
        notRun = cases.length - i;
        log(`${profile}: time budget spent, ${notRun} cases not run`);
        break;
      }
      const b = built[p]?.[i];
      try {
        const r = await runGradientCase(cuda, { ...c, build: async () => b ?? c.build() }, cpu);
        results[c.id] = { pass: r.pass, worst: r.worst, message: r.message };
        if (r.pass) pass++;
        else failures.push(`${c.id}: ${r.message}`);
      } catch (e) {
        const m = (e as Error).message.split('\n')[0] ?? '';
        results[c.id] = { error: m };
        failures.push(`${c.id}: ${m}`);
      }
    }
    failed += failures.length;
    for (const f of failures.slice(0, 40)) log(`FAIL ${f}`);
    log(`${profile}: ${pass}/${cases.length} pass, ${failures.length} fail, ${notRun} not run`);
    json[profile] = {
      cases: cases.length,
      pass,
      failed: failures.length,
      notRun,
      failures,
      results,
    };
  }
  log(`done in ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
  await cpu.dispose();
  await cuda.dispose();
  if (opts.outDir)
    writeFileSync(join(opts.outDir, 'cuda-gradients.json'), JSON.stringify(json, null, 1));
  return failed > 0 ? 1 : 0;
}
