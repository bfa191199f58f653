export {
  CudaBackend,
  type CudaBackendOptions,
  type CudaInputs,
  type CudaRunOptions,
  createCudaBackend,
  type DeviceOutputs,
} from './backend.js';
export {
  type BackwardModule,
  type BackwardOptions as CudaBackwardOptions,
  type BackwardPlan,
  CudaBackward,
  type DeviceBackwardInputs,
  type DeviceGradients,
  emitBackward,
  emitLinearBackward,
  FIX_BITS,
  type LinearBackwardModule,
  type LinearBackwardPlan,
  type PreparedBackward,
  planBackward,
  planLinearBackward,
} from './backward/index.js';
export {
  type CudaModuleSource,
  type CudaPath,
  type EmitOptions,
  emitCuda,
  GENERATOR_VERSION,
  type KernelEntry,
  type ParamField,
  packParams,
} from './emit/index.js';
export { CudaCompileError, CudaError, CudaUnavailableError } from './errors.js';
export { cudaRenderer, lowerCuda } from './expr-cuda.js';
export {
  type CudaGroupingValue,
  CudaProgramOps,
  type CudaSelectionValue,
  type CudaTensorValue,
  type CudaValue,
} from './program/ops.js';
export { type CudaAddon, type DeviceInfo, loadAddon } from './runtime/addon.js';
export {
  COMPILE_FLAGS,
  type CompiledImage,
  compileWithNvcc,
  defaultCacheDir,
  findNvcc,
  KernelCompiler,
  nvccVersion,
  readCacheEntry,
  writeCacheEntry,
} from './runtime/compiler.js';
export { CudaContext, type LoadedModule, type ModuleText } from './runtime/context.js';
export { CudaDevice, type DeviceBuffer, MemoryPool } from './runtime/device.js';
export { CudaTensor, dtypeBytes } from './tensor.js';
