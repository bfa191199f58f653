import { appendFileSync } from 'node:fs';
import { conformanceCases, runCase } from '@tessera/conformance';
import { createCpuBackend } from '@tessera/cpu';
import { it } from 'vitest';
import { createWebGpuBackend } from '../src/index.js';

it('conf', async () => {
  const b = await createWebGpuBackend();
  const cpu = await createCpuBackend();
  const list = conformanceCases({ profile: 'ci' });
  const t00 = performance.now();
  for (const c of list) {
    const t0 = performance.now();
    let line: string;
    try {
      const r = await runCase(b, c, cpu);
      line = `${r.pass ? 'PASS' : 'FAIL'} ${(performance.now() - t0).toFixed(0)}ms ${c.id} ${r.pass ? '' : r.message}`;
    } catch (e) {
      line = `THROW ${(performance.now() - t0).toFixed(0)}ms ${c.id} ${(e as Error).message}`;
    }
    appendFileSync('/tmp/conf.cases.log', `${line}\n`);
  }
  appendFileSync(
    '/tmp/conf.cases.log',
    `TOTAL ${((performance.now() - t00) / 1000).toFixed(0)} s\n`,
  );
}, 3_600_000);
