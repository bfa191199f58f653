export { conformanceCases } from './cases.js';
export {
  type CaseResult,
  type Comparison,
  compareOutputs,
  type Reference,
  type RunCaseOptions,
  runCase,
} from './compare.js';
export { seededInputs, seededValues, seedOf } from './inputs.js';
export { alibi, softcap } from './mods.js';
export { PATTERN_BUILDERS, PATTERNS, type PatternEntry, type PatternShape } from './patterns.js';
export { runSystemCase, SYSTEM_TOLERANCE, type SystemCase, systemCases } from './systems.js';
export {
  type CatalogueOptions,
  type ConformanceCase,
  DTYPE_TOLERANCE,
  type Profile,
  type Tolerance,
} from './types.js';
