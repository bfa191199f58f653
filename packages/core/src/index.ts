export type { AttentionBackend, BenchmarkOptions, BenchmarkResult, RunOptions } from './backend.js';
export {
  InputError,
  ResourceLimitError,
  SpecError,
  TesseraError,
  UnsupportedError,
} from './errors.js';
export { Expr, hash, lit, type Operand, TensorRef, tensor, vars, where } from './expr/builder.js';
export {
  HASH_ARG_OFFSET,
  HASH_FLOAT_SCALE,
  HASH_MUL_1,
  HASH_MUL_2,
  hashU32,
  hashUnit,
  mix32,
} from './expr/hash32.js';
export { evalInterval, type Interval, type IntervalEnv, RangeMinMax } from './expr/interval.js';
export { type CompiledExpr, compileJs, emitJs, jsRenderer } from './expr/js.js';
export {
  type ExprRenderer,
  type LoweredExpr,
  lowerExpr,
  type RenderedOperand,
} from './expr/lower.js';
export {
  ARITH_FNS,
  type ArithFn,
  type BinaryFn,
  COMPARE_FNS,
  type CompareFn,
  children,
  type ExprNode,
  LOGIC_FNS,
  type LogicFn,
  type ScalarType,
  UNARY_FNS,
  type UnaryFn,
  VAR_TYPES,
  type VarName,
  varsUsed,
} from './expr/nodes.js';
export { mapTensors, resolveTensors } from './expr/resolve.js';
export { gaussianAt, linearInputScales, randomFeatureMatrix } from './features.js';
export {
  type AttentionInputs,
  type AttentionOutputs,
  elementIndex,
  validateInputs,
} from './inputs.js';
export {
  type AnalyticLayout,
  type BlockClass,
  type BlockLayout,
  BlockLayoutBuilder,
  ceilDiv,
  classifyBlock,
  deriveBlockLayout,
  exactBlockLayout,
  fullLayout,
  type LayoutContext,
  type LayoutCounters,
  type LayoutStats,
  layoutDifference,
  layoutSlice,
  layoutStats,
  layoutsEqual,
  maskSlices,
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
  DEFAULT_BLOCK,
  elementBytes,
  estimateCost,
  featureDim,
  layoutContext,
  type Strategy,
} from './plan.js';
export {
  type AttendStep,
  type CompressedKernel,
  type CompressedStep,
  type DenseStep,
  defineProgram,
  type GateStep,
  type MergeStep,
  type PoolStep,
  type Program,
  type ProgramConfig,
  type ProgramStep,
  type ProjectStep,
  type SelectStep,
  type Shape,
  stepReads,
  stepWrites,
} from './program.js';
export {
  DeviceValue,
  type ProgramBackend,
  type ProgramInput,
  type ProgramOps,
  type ProgramResult,
  type ProgramRunOptions,
  runProgram,
  type StepEnv,
} from './program-run.js';
export {
  type AttentionConfig,
  type AttentionSpec,
  analyticLayoutOf,
  canonicalJson,
  DTYPES,
  type Dtype,
  defineAttention,
  FEATURE_MAPS,
  type FeatureMap,
  groupSize,
  hashSpec,
  isCausalExpr,
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
} from './spec.js';
