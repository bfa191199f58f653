// The program catalogue (tooling/conformance, 'ci' profile) on cpu, against the independent
// brute-force interpreter of tooling/conformance/test/program-reference.ts: every output, and
// every selection and grouping entry for entry. No skip list: every case must pass.
import { inspectCpuValue } from '../../../tooling/conformance/src/index.js';
import { describeProgramConformance } from '../../../tooling/conformance/src/vitest.js';
import { bruteForceProgram } from '../../../tooling/conformance/test/program-reference.js';
import { createCpuBackend } from '../src/index.js';

describeProgramConformance('cpu vs brute force', () => createCpuBackend(), {
  profile: 'ci',
  inspect: inspectCpuValue,
  reference: () => bruteForceProgram,
});
