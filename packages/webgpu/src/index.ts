export {
  createWebGpuBackend,
  type PreparedRun,
  type ResidentInputs,
  type ResidentOutputs,
  type TimestampWrites,
  type WebGpuBackend,
  type WebGpuBackendOptions,
  type WebGpuRunOptions,
} from './backend.js';
export type {
  BackwardModules,
  BackwardPlan,
  BackwardRequest,
  BackwardTile,
  PreparedBackward,
  ResidentBackwardInputs,
  ResidentGradients,
  WebGpuBackwardOptions,
} from './backward/index.js';
export { planBackward } from './backward/index.js';
export { type BackwardEmitOptions, type EmitOptions, emitBackwardWgsl, emitWgsl } from './emit.js';
export { DeviceLostError, ShaderCompileError } from './errors.js';
export type { GpuLimits } from './gpu.js';
export type { GroupingArrays, SelectionLayout, WebGpuProgramOps } from './program/ops.js';
export type { GpuGrouping, GpuSelection, GpuTensor, GpuValue } from './program/values.js';
export { chooseFlashTile, type TileRequest, tileKey, tileProblem } from './tiles.js';
export { lowerWgsl, placeTensors, WgslExprRenderer } from './wgsl/expr.js';
export { emitFlash, type FlashTile, flashWorkgroupBytes } from './wgsl/flash.js';
export { emitNaive } from './wgsl/naive.js';
