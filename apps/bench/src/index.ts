export { BACKENDS, type BackendName, loadBackend, loadBest } from './backends.js';
export {
  BACKWARD_FLOP_FACTOR,
  type BackwardBenchmarking,
  type BackwardCaseResult,
  type BackwardOptions,
  type BackwardResult,
  backwardFlops,
  backwardInputs,
  forwardFlops,
  type GradientErrors,
  type GradientReference,
  gradientErrors,
  measureBackward,
  relL2,
} from './backward.js';
export { main } from './main.js';
export {
  type CaseResult,
  fillUniform,
  type MeasureOptions,
  makeInputs,
  measureCase,
  type StrategyResult,
  sampleRows,
} from './measure.js';
export { type PeerResult, peerScript, runPeers } from './peers.js';
export { type BenchReport, markdown, renderSvg, SCHEMA_VERSION, writeReport } from './report.js';
export {
  alibiSlopes,
  type BenchCase,
  type BuildOptions,
  buildCases,
  type PeerMask,
  registerMaker,
  SUITES,
  type SuiteName,
} from './suites.js';
export { formatBytes, formatSeq, parseInts, parseSizes, summarize } from './units.js';
export {
  type CrossLayerRow,
  crossLayerMarkdown,
  loadFixture,
  measureCrossLayer,
  measureVariants,
  structured,
  type VariantRow,
  type VariantsInput,
  variantsMarkdown,
} from './variants.js';
