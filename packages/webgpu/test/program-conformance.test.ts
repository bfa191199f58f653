// The program catalogue (tooling/conformance, 'ci' profile) on whatever WebGPU adapter this machine
// has (Mesa's lavapipe in CI) against the cpu backend: every output within the case's tolerance,
// and every selection and grouping entry for entry (read back with readSelection/readGrouping).
import { describeProgramConformance } from '@tessera/conformance/vitest';
import { createWebGpuBackend, type GpuValue, type WebGpuBackend } from '../src/index.js';

let gpu: WebGpuBackend | undefined;

describeProgramConformance(
  'webgpu',
  async () => {
    gpu = await createWebGpuBackend();
    return gpu;
  },
  {
    profile: 'ci',
    // Not run here: the cases tagged 'cuda-paths', sized for CUDA's 32-key and 64-key selection
    // paths (seq 75–96, bf16 head dim 12). webgpu's selection, merge and bf16 paths run in the
    // other cases, and on lavapipe these would cost minutes of shader compilation.
    filter: (c) => !c.tags.includes('cuda-paths'),
    async inspect(value) {
      const v = value as GpuValue;
      if (!gpu) throw new Error('webgpu backend not started');
      if (v.kind === 'selection')
        return { kind: 'selection', ...(await gpu.program.readSelection(v)) };
      return { kind: 'grouping', ...(await gpu.program.readGrouping(v)) };
    },
  },
);
