// The cross-backend catalogue (CI profile) against the CPU reference, on whatever WebGPU adapter
// this machine has (Mesa's lavapipe in CI).
import { describeConformance } from '@tessera/conformance/vitest';
import { createWebGpuBackend } from '../src/index.js';

describeConformance('webgpu', () => createWebGpuBackend(), { profile: 'ci', timeout: 120_000 });
