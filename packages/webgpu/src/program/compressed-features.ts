/**
 * Feature maps for `compressed` steps with a kernel and for grouped `attend` steps with a linear
 * spec: the linear spec's map, input scaling, stabilisers and random matrix, the layout of the
 * scratch buffer `work` their kernels bind, and the WGSL of the first pass, which writes every
 * key row's (summary's) stabilised features and stabiliser into it.
 */
import {
  type AttentionSpec,
  type CompressedStep,
  defineAttention,
  type FeatureMap,
  UnsupportedError,
} from '@tessera/core';
import {
  compressedKernelConfig,
  featureDim,
  linearInputScales,
  randomFeatureMatrix,
} from '@tessera/core/backend';
import { emitFeatureFn } from '../wgsl/linear.js';
import { emitGridKernel, f32Lit } from './grid.js';

const MAPS = ['favor+', 'elu+1', 'relu'] as const;

/** A linear spec's feature map (a compressed step's: the linear spec of its head size). */
export interface FeatureMapPlan {
  readonly featureMap: FeatureMap;
  /** Features per row (featureDim of the linear spec). */
  readonly features: number;
  /** Input scales: the maps see query · q and key · k (core's linearInputScales). */
  readonly query: number;
  readonly key: number;
  /** favor+'s or trig-rf's random matrix (features × headDim, row-major); null for the others. */
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
  const plan = specFeaturePlan(spec);
  plans.set(step, plan);
  return plan;
}

const random = (map: FeatureMap): boolean => map === 'favor+' || map === 'trig-rf';

/** The feature map of a linear spec (grouped attend reads it as the linear kernels do). */
export function specFeaturePlan(spec: AttentionSpec): FeatureMapPlan {
  const k = spec.kernel;
  if (k.type !== 'linear') throw new Error('specFeaturePlan() needs a linear spec');
  const { query, key } = linearInputScales(spec.scale);
  return {
    featureMap: k.featureMap,
    features: featureDim(spec),
    query,
    key,
    matrix: random(k.featureMap) ? randomFeatureMatrix(k, spec.headDim) : null,
  };
}

/** Offsets (f32 words) in `work`: random matrix, summary features, summary stabilisers. */
export interface FeatureLayout {
  readonly featureMap: FeatureMap;
  /** Entries of φ (featureDim: twice the random features for 'trig-rf'). */
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
    ...(random(lay.featureMap) ? ([['W', lay.w]] as [string, number][]) : []),
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
    // trig-rf's φ holds a sine and a cosine per random row.
    ...emitFeatureFn(
      name,
      {
        featureMap: lay.featureMap,
        features: lay.featureMap === 'trig-rf' ? lay.features / 2 : lay.features,
      },
      headDim,
      `${buf}[row + d]`,
    ),
  ];
}

export interface SummaryFeaturesShape {
  readonly batch: number;
  readonly headsKV: number;
  readonly numBlocks: number;
  readonly headDim: number;
}

/**
 * Pass 1: one invocation per key row (a summary, for compressed steps) writes φ̃(key · k_j) to KF
 * and its stabiliser to KC.
 */
export function emitSummaryFeatures(
  s: SummaryFeaturesShape,
  lay: FeatureLayout,
  what = "compressed attention's summary features",
): string {
  const rows = s.batch * s.headsKV * s.numBlocks;
  return emitGridKernel({
    title: [
      `Tessera program: ${what} (${lay.featureMap}, ${lay.features} features)`,
      `k [${s.batch}, ${s.headsKV}, ${s.numBlocks}, ${s.headDim}]; work: ${random(lay.featureMap) ? 'random matrix at W, ' : ''}features at KF, stabilisers at KC`,
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
