export { BACKENDS, type BackendName, loadBackend, loadBest } from './backends.js';
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
  type BenchCase,
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
