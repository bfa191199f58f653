/**
 * `@tessera/core/backend`: what backend and pattern authors need beyond the user's API —
 * expression lowering and its renderers' contract, the interval evaluator, the hash constants,
 * score-mod gradients, layout derivation internals, the program step registry and spec checks.
 * Users import `@tessera/core`; nothing here is needed to describe or run attention.
 */
export {
  gradientSlots,
  type ScoreModGradient,
  scoreModGradient,
  type TensorGradientTerm,
} from './expr/grad.js';
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
export { jsRenderer } from './expr/js.js';
export {
  type ExprRenderer,
  type LoweredExpr,
  lowerExpr,
  lowerExprs,
  type RenderedOperand,
} from './expr/lower.js';
export {
  ARITH_FNS,
  type ArithFn,
  type BinaryFn,
  COMPARE_FNS,
  type CompareFn,
  children,
  LOGIC_FNS,
  type LogicFn,
  UNARY_FNS,
  type UnaryFn,
  VAR_TYPES,
  varsUsed,
} from './expr/nodes.js';
export { mapTensors, resolveTensors } from './expr/resolve.js';
export { gaussianAt, linearInputScales, randomFeatureMatrix } from './features.js';
export {
  type BlockClass,
  classifyBlock,
  deriveBlockLayout,
  type LayoutColumns,
  type LayoutCounters,
  layoutColumns,
  maskSlices,
} from './layout.js';
export { DEFAULT_BLOCK, elementBytes, featureDim } from './plan.js';
export {
  compressedKernelConfig,
  nearestCentroid,
  PROGRAM_STEPS,
  StepChecker,
  type StepDefinition,
  type StepOf,
  type StepOp,
  stepReads,
  stepWrites,
} from './program.js';
export { dispatchStep, type StepEnv, type StepTable } from './program-run.js';
export { analyticLayoutOf, assertSpec, canonicalJson, hashSpec, isCausalExpr } from './spec.js';
