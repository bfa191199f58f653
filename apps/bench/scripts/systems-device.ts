// Every standard system of @tessera/variants (all conformance shapes) on CUDA against the CPU,
// outside Vitest, for the GPU machine: bundled by scripts/device-bundle.mjs into
// .device-bundle/bench/dist/systems.mjs.   node .device-bundle/bench/dist/systems.mjs [seq]
// (default 80, the CI shapes; at seq ≥ 512 the standard blocks are 32 keys, which the CUDA-core
// kernel can walk as selections).
import { runSystemCase, systemCases } from '@tessera/conformance';
import { createCpuBackend } from '@tessera/cpu';
import { createCudaBackend } from '@tessera/cuda';

const backend = await createCudaBackend();
const cpu = await createCpuBackend();
let failed = 0;
const cases = systemCases({ seq: Number(process.argv[2] ?? 80) });
for (const c of cases) {
  try {
    const r = await runSystemCase(backend, c, cpu);
    if (!r.pass) failed++;
    console.log(`${r.pass ? 'pass' : 'FAIL'} ${c.id}: ${r.message}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${c.id}: ${(e as Error).message.split('\n')[0]}`);
  }
}
console.log(
  `${backend.name} (${backend.device}): ${cases.length - failed}/${cases.length} systems pass`,
);
await backend.dispose();
process.exitCode = failed > 0 ? 1 : 0;
