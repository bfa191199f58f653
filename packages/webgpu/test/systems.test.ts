// Every standard system of @tessera/variants, run as a program on WebGPU, against the CPU. CI runs
// the 'ci' profile on a software GPU (16 cases); the device runs all shapes (see the README).
import { describeSystemConformance } from '@tessera/conformance/vitest';
import { createWebGpuBackend } from '../src/index.js';

describeSystemConformance('webgpu', () => createWebGpuBackend(), {
  seq: 80,
  headDim: 16,
  profile: process.env.TESSERA_SYSTEMS_PROFILE === 'all' ? 'all' : 'ci',
});
