export {
  type CpuBackendOptions,
  createCpuBackend,
  DEFAULT_MAX_NAIVE_BYTES,
  naiveBytes,
} from './backend.js';
export { type CpuValue, cpuProgramOps } from './program.js';
export { type RowSelection, referenceRows } from './rows.js';
