export {
  alibi,
  type CatalogueOptions,
  type ConformanceCase,
  conformanceCases,
  DTYPE_TOLERANCE,
  type Profile,
  softcap,
  type Tolerance,
} from './cases.js';
export {
  type CaseResult,
  type Comparison,
  compareOutputs,
  type Reference,
  type RunCaseOptions,
  runCase,
} from './compare.js';
export { seededInputs, seededValues, seedOf } from './inputs.js';
export { PATTERN_BUILDERS, PATTERNS, type PatternEntry, type PatternShape } from './patterns.js';
