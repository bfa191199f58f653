export type {
  AttentionBackend,
  BackwardBenchmarkResult,
  BenchmarkOptions,
  BenchmarkResult,
  RunOptions,
} from './backend.js';
export {
  InputError,
  ResourceLimitError,
  SpecError,
  TesseraError,
  UnsupportedError,
} from './errors.js';
export { Expr, hash, lit, type Operand, TensorRef, tensor, vars, where } from './expr/builder.js';
export { type CompiledExpr, compileJs, emitJs } from './expr/js.js';
export type { ExprNode, ScalarType, VarName } from './expr/nodes.js';
export {
  type AttentionGradients,
  type AttentionInputs,
  type AttentionOutputs,
  type BackwardInputs,
  elementIndex,
  validateBackwardInputs,
  validateInputs,
} from './inputs.js';
export {
  type AnalyticLayout,
  type BlockLayout,
  BlockLayoutBuilder,
  ceilDiv,
  exactBlockLayout,
  fullLayout,
  type LayoutContext,
  type LayoutStats,
  layoutDifference,
  layoutSlice,
  layoutStats,
  layoutsEqual,
} from './layout.js';
export {
  compileMask,
  defineMask,
  isMask,
  isScoreMod,
  type Mask,
  type MaskVars,
  maskMod,
  type ScoreMod,
  type ScoreVars,
  scoreMod,
} from './mods.js';
export {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  packHalf,
  roundToDtype,
  unpackHalf,
} from './numeric.js';
export {
  blockLayout,
  type CostEstimate,
  estimateCost,
  layoutContext,
  type Strategy,
} from './plan.js';
export {
  type AttendStep,
  COMPRESSED_DEFAULT_FEATURES,
  type CompressedKernel,
  type CompressedStep,
  type DenseStep,
  defineProgram,
  type GateStep,
  type GroupStep,
  type MergeStep,
  type PoolStep,
  type Program,
  type ProgramConfig,
  type ProgramStep,
  type ProjectStep,
  type SelectStep,
  type Shape,
  type SubtractStep,
} from './program.js';
export {
  DeviceValue,
  type ProgramBackend,
  type ProgramInput,
  type ProgramOps,
  type ProgramResult,
  type ProgramRunOptions,
  runProgram,
} from './program-run.js';
export {
  type AttentionConfig,
  type AttentionSpec,
  DTYPES,
  type Dtype,
  defineAttention,
  FEATURE_MAPS,
  type FeatureMap,
  groupSize,
  isAttentionSpec,
  type KernelConfig,
  type KernelSpec,
  kvHeadOf,
  LAYOUTS,
  specFromJSON,
  specToJSON,
  type TensorLayout,
  type TensorSlot,
  type TilingHints,
  tensorSizes,
  tensorSlot,
} from './spec.js';
