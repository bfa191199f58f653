export { standardBlock, standardSystems } from './catalogue.js';
export {
  attentionPooling,
  bigBird,
  countBias,
  exact,
  exactSpec,
  groupedQuery,
  linformer,
  longformer,
  performer,
  pooledBranch,
  sparseTransformer,
  synthesizer,
} from './classic.js';
export { compactGrouped, linearizedGrouped, nativeSparse, sparseProjected } from './grouped.js';
export { adaptInputs, type ErrorStats, errorStats, structuredInputs } from './measure.js';
export {
  compress,
  fitCentroids,
  initCentroids,
  initDense,
  initGates,
  initPoolWeights,
  initProjection,
  type ResolvedShape,
  resolveShape,
  runSystem,
  type System,
  type SystemRun,
  type SystemShape,
  seededUniform,
} from './system.js';
