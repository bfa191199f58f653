export {
  type CpuBackendOptions,
  createCpuBackend,
  DEFAULT_MAX_NAIVE_BYTES,
  naiveBytes,
} from './backend.js';
