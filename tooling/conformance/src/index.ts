export { conformanceCases } from './cases.js';
export {
  type CaseResult,
  type Comparison,
  compareOutputs,
  type Reference,
  type RunCaseOptions,
  runCase,
} from './compare.js';
export {
  compareGradients,
  type GradientCase,
  type GradientCaseResult,
  type GradientComparison,
  type GradientReference,
  gradientCases,
  type MaskedRows,
  type RunGradientCaseOptions,
  runGradientCase,
  type TensorError,
} from './gradients.js';
export { seededInputs, seededValues, seedOf } from './inputs.js';
export { alibi, softcap } from './mods.js';
export { PATTERN_BUILDERS, PATTERNS, type PatternEntry, type PatternShape } from './patterns.js';
export {
  type InspectValue,
  inspectCpuValue,
  type ProgramCaseResult,
  type ProgramReference,
  type ProgramReferenceResult,
  type RunProgramCaseOptions,
  runProgramCase,
} from './program-run.js';
export {
  type DiscreteValue,
  PROGRAM_TOLERANCE,
  type ProgramCase,
  type ProgramCaseBuild,
  type ProgramCatalogueOptions,
  programCases,
} from './programs.js';
export { runSystemCase, SYSTEM_TOLERANCE, type SystemCase, systemCases } from './systems.js';
export {
  type CatalogueOptions,
  type ConformanceCase,
  DTYPE_TOLERANCE,
  GRADIENT_TOLERANCE,
  type GradientTolerance,
  type Profile,
  type Tolerance,
} from './types.js';
