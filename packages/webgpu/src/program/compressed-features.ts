/**
 * Feature maps for `compressed` steps with a kernel: the linear spec a step's kernel names (so the
 * map, input scaling, stabilisers and random matrix are the linear path's), the layout of the
 * scratch buffer `work` both compressed kernels bind, and the WGSL of the first pass, which writes
 * every summary's stabilised features and stabiliser into it.
 */
import {
  type CompressedStep,
  compressedKernelConfig,
  defineAttention,
  featureDim,
  linearInputScales,
  randomFeatureMatrix,
  UnsupportedError,
} from '@tessera/core';
import { emitFeatureFn } from '../wgsl/linear.js';
import { emitGridKernel, f32Lit } from './grid.js';

const MAPS = ['favor+', 'elu+1', 'relu'] as const;
type CompressedFeatureMap = (typeof MAPS)[number];

/** A compressed step's feature map, as a linear spec of its head size defines it. */
export interface FeatureMapPlan {
  readonly featureMap: CompressedFeatureMap;
  /** Features per row (featureDim of the linear spec). */
  readonly features: number;
  /** Input scales: the maps see query · q and key · k (core's linearInputScales). */
  readonly query: number;
  readonly key: number;
  /** favor+'s random matrix (features × headDim, row-major); null for the other maps. */
  readonly matrix: Float32Array | null;
}

const plans = new WeakMap<CompressedStep, FeatureMapPlan>();

export function featureMapPlan(step: CompressedStep, headDim: number): FeatureMapPlan {
  const hit = plans.get(step);
  if (hit) return hit;
  const km = step.kernel;
  if (!km) throw new Error('featureMapPlan() needs a step with a kernel');
  const fm = km.featureMap as string;
  if (!(MAPS as readonly string[]).includes(fm))
    throw new UnsupportedError(
      `webgpu: compressed '${step.out}': feature map '${fm}' is not supported (only ${MAPS.map((m) => `'${m}'`).join(', ')})`,
    );
  const kernel = compressedKernelConfig(km);
  const spec = defineAttention({
    batch: 1,
    headsQ: 1,
    seqQ: 1,
    headDim,
    scale: step.scale,
    kernel,
  });
  if (spec.kernel.type !== 'linear') throw new Error('not a linear spec');
  const { query, key } = linearInputScales(spec.scale);
  const plan: FeatureMapPlan = {
    featureMap: km.featureMap,
    features: featureDim(spec),
    query,
    key,
    matrix: km.featureMap === 'favor+' ? randomFeatureMatrix(spec.kernel, headDim) : null,
  };
  plans.set(step, plan);
  return plan;
}

/** Offsets (f32 words) in `work`: random matrix, summary features, summary stabilisers. */
export interface FeatureLayout {
  readonly featureMap: CompressedFeatureMap;
  readonly features: number;
  readonly query: number;
  readonly key: number;
  readonly w: number;
  readonly kf: number;
  readonly kc: number;
  readonly words: number;
}

export function featureLayout(plan: FeatureMapPlan, summaries: number): FeatureLayout {
  const wLen = plan.matrix?.length ?? 0;
  const kf = wLen;
  const kc = kf + summaries * plan.features;
  return {
    featureMap: plan.featureMap,
    features: plan.features,
    query: plan.query,
    key: plan.key,
    w: 0,
    kf,
    kc,
    words: kc + summaries,
  };
}

/** The consts a kernel reading `work` declares (W only for the random map). */
export function featureConsts(lay: FeatureLayout): [string, number | string][] {
  return [
    ['F', lay.features],
    ...(lay.featureMap === 'favor+' ? ([['W', lay.w]] as [string, number][]) : []),
    ['KF', lay.kf],
    ['KC', lay.kc],
  ];
}

/** `var<private> phi` and the feature function `name` over rows of `buf`. */
export function featureHelpers(
  lay: FeatureLayout,
  headDim: number,
  name: string,
  buf: string,
): string[] {
  return [
    'var<private> phi: array<f32, F>;',
    '',
    ...emitFeatureFn(name, lay, headDim, `${buf}[row + d]`),
  ];
}

export interface SummaryFeaturesShape {
  readonly batch: number;
  readonly headsKV: number;
  readonly numBlocks: number;
  readonly headDim: number;
}

/** Pass 1: one invocation per summary row writes φ̃(key · k_j) to KF and its stabiliser to KC. */
export function emitSummaryFeatures(s: SummaryFeaturesShape, lay: FeatureLayout): string {
  const rows = s.batch * s.headsKV * s.numBlocks;
  return emitGridKernel({
    title: [
      `Tessera program: compressed attention's summary features (${lay.featureMap}, ${lay.features} features)`,
      `k [${s.batch}, ${s.headsKV}, ${s.numBlocks}, ${s.headDim}]; work: ${lay.featureMap === 'favor+' ? 'random matrix at W, ' : ''}features at KF, stabilisers at KC`,
    ],
    items: rows,
    consts: [['HEAD_DIM', s.headDim], ...featureConsts(lay), ['K_MUL', f32Lit(lay.key)]],
    bindings: ['var<storage, read> k: array<f32>;', 'var<storage, read_write> work: array<f32>;'],
    helpers: featureHelpers(lay, s.headDim, 'key_features', 'k'),
    body: [
      'let c = key_features(idx * HEAD_DIM, K_MUL);',
      'for (var f = 0u; f < F; f++) {',
      '  work[KF + idx * F + f] = phi[f];',
      '}',
      'work[KC + idx] = c;',
    ],
  });
}
