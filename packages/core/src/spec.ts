import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils.js';
import { SpecError } from './errors.js';
import { type BuilderNode, Expr, TensorRef, vars } from './expr/builder.js';
import type { ExprNode } from './expr/nodes.js';
import { mapTensors, resolveTensors } from './expr/resolve.js';
import type { AnalyticLayout } from './layout.js';
import { isMask, isScoreMod, type Mask, type ScoreMod } from './mods.js';

export type Dtype = 'f32' | 'f16' | 'bf16';
export type TensorLayout = 'bhsd' | 'bshd';
export type FeatureMap = 'elu+1' | 'relu' | 'favor+' | 'trig-rf';

export const DTYPES: readonly Dtype[] = ['f32', 'f16', 'bf16'];
export const LAYOUTS: readonly TensorLayout[] = ['bhsd', 'bshd'];
export const FEATURE_MAPS: readonly FeatureMap[] = ['elu+1', 'relu', 'favor+', 'trig-rf'];

export type KernelSpec =
  | { readonly type: 'softmax' }
  | {
      readonly type: 'linear';
      readonly featureMap: FeatureMap;
      readonly features: number;
      readonly seed: number;
    };

export type KernelConfig =
  | 'softmax'
  | { type: 'softmax' }
  | { type: 'linear'; featureMap: FeatureMap; features?: number; seed?: number };

/** Block-size hints; a backend may autotune within its limits. */
export interface TilingHints {
  readonly blockQ?: number;
  readonly blockKV?: number;
}

/** What a user passes to defineAttention. */
export interface AttentionConfig {
  batch: number;
  headsQ: number;
  /** Defaults to headsQ (MHA); fewer gives GQA, 1 gives MQA. */
  headsKV?: number;
  seqQ: number;
  seqKV?: number;
  headDim: number;
  /** Defaults to headDim. */
  headDimV?: number;
  layout?: TensorLayout;
  dtype?: Dtype;
  /** Defaults to 1/√headDim. */
  scale?: number;
  mask?: Mask;
  scoreMod?: ScoreMod;
  kernel?: KernelConfig;
  tiling?: TilingHints;
}

/** A captured tensor, by slot; expressions read it with `load` nodes naming the slot. */
export interface TensorSlot {
  readonly dtype: 'f32' | 'i32';
  readonly length: number;
  readonly data: Float32Array | Int32Array;
}

/** The normalised, frozen spec every backend lowers. Plain data; `hash` keys kernel caches. */
export interface AttentionSpec {
  readonly version: 1;
  readonly batch: number;
  readonly headsQ: number;
  readonly headsKV: number;
  readonly seqQ: number;
  readonly seqKV: number;
  readonly headDim: number;
  readonly headDimV: number;
  readonly layout: TensorLayout;
  readonly dtype: Dtype;
  readonly scale: number;
  readonly kernel: KernelSpec;
  readonly mask: { readonly name: string; readonly expr: ExprNode } | null;
  readonly scoreMod: { readonly name: string; readonly expr: ExprNode } | null;
  readonly tensors: readonly TensorSlot[];
  readonly tiling: TilingHints;
  /** Hex SHA-256 (first 32 digits) of everything above except tensor contents. */
  readonly hash: string;
}

const KNOWN_FIELDS = [
  'batch',
  'headsQ',
  'headsKV',
  'seqQ',
  'seqKV',
  'headDim',
  'headDimV',
  'layout',
  'dtype',
  'scale',
  'mask',
  'scoreMod',
  'kernel',
  'tiling',
] as const;

/** Largest index a device kernel addresses with 32-bit arithmetic. */
const MAX_DIM = 2147483647;

const analyticLayouts = new WeakMap<AttentionSpec, AnalyticLayout>();

/** Every spec defineAttention made (specFromJSON goes through it): backends run only these. */
const madeSpecs = new WeakSet<object>();

/** True when `x` is a spec made by defineAttention() or specFromJSON(), untouched since. */
export function isAttentionSpec(x: unknown): x is AttentionSpec {
  return typeof x === 'object' && x !== null && madeSpecs.has(x);
}

/**
 * Throws SpecError unless `spec` was made by defineAttention() or specFromJSON(). A spec is frozen,
 * so one that passes cannot have been edited; a copy (`{ ...spec, seqQ: 9 }`) is refused, since its
 * hash would no longer describe it and a kernel cached under that hash would run it silently wrong.
 * `where` names the caller in the message (e.g. 'run()').
 */
export function assertSpec(spec: unknown, where: string): asserts spec is AttentionSpec {
  if (isAttentionSpec(spec)) return;
  const got =
    spec === null
      ? 'null'
      : typeof spec !== 'object'
        ? typeof spec
        : (spec as { version?: unknown }).version === 1
          ? 'a copy or an edit of one (build a new spec with defineAttention() instead)'
          : 'an object that is not a spec';
  throw new SpecError(
    `${where} needs a spec from defineAttention() or specFromJSON() (got ${got})`,
  );
}

/** The analytic layout the spec's mask came with, if any. */
export function analyticLayoutOf(spec: AttentionSpec): AnalyticLayout | undefined {
  return analyticLayouts.get(spec);
}

function positiveInt(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0 || value > MAX_DIM) {
    throw new SpecError(`${field} must be a positive integer below 2^31 (got ${String(value)})`);
  }
  return value;
}

function oneOf<T extends string>(field: string, value: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) {
    throw new SpecError(
      `${field} must be one of ${allowed.map((a) => `'${a}'`).join(', ')} (got ${JSON.stringify(value)})`,
    );
  }
  return value as T;
}

function normaliseKernel(k: KernelConfig | undefined, headDim: number): KernelSpec {
  if (k === undefined || k === 'softmax') return { type: 'softmax' };
  if (typeof k !== 'object' || k === null) {
    throw new SpecError(
      `kernel must be 'softmax' or { type: 'linear', featureMap } (got ${JSON.stringify(k)})`,
    );
  }
  const type = oneOf('kernel.type', k.type, ['softmax', 'linear'] as const);
  const known = type === 'softmax' ? ['type'] : ['type', 'featureMap', 'features', 'seed'];
  for (const key of Object.keys(k)) {
    if (!known.includes(key))
      throw new SpecError(
        `unknown field 'kernel.${key}' for kernel '${type}' (known: ${known.join(', ')})`,
      );
  }
  if (type === 'softmax') return { type: 'softmax' };
  const lin = k as { featureMap: FeatureMap; features?: number; seed?: number };
  const featureMap = oneOf('kernel.featureMap', lin.featureMap, FEATURE_MAPS);
  const random = featureMap === 'favor+' || featureMap === 'trig-rf';
  if (!random && lin.features !== undefined && lin.features !== headDim) {
    throw new SpecError(
      `kernel.features is fixed to headDim (${headDim}) for feature map '${featureMap}' (got ${lin.features})`,
    );
  }
  const features =
    lin.features === undefined ? headDim : positiveInt('kernel.features', lin.features);
  const seed = lin.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new SpecError(`kernel.seed must be an integer in [0, 2^32) (got ${String(seed)})`);
  }
  return { type: 'linear', featureMap, features, seed };
}

function normaliseTiling(t: TilingHints | undefined): TilingHints {
  if (t === undefined) return {};
  if (typeof t !== 'object' || t === null)
    throw new SpecError('tiling must be an object { blockQ?, blockKV? }');
  for (const key of Object.keys(t)) {
    if (key !== 'blockQ' && key !== 'blockKV')
      throw new SpecError(`unknown field 'tiling.${key}' (known: blockQ, blockKV)`);
  }
  const out: { blockQ?: number; blockKV?: number } = {};
  if (t.blockQ !== undefined) out.blockQ = positiveInt('tiling.blockQ', t.blockQ);
  if (t.blockKV !== undefined) out.blockKV = positiveInt('tiling.blockKV', t.blockKV);
  return out;
}

/** JSON has no ±Infinity or NaN: they travel as the strings 'Infinity', '-Infinity', 'NaN'. */
const encodeNumber = (v: unknown): unknown =>
  typeof v === 'number' && !Number.isFinite(v) ? String(v) : v;
const decodeNumber = (v: unknown): unknown =>
  v === 'Infinity' || v === '-Infinity' || v === 'NaN' ? Number(v) : v;

/** Canonical JSON: object keys sorted, so equal specs give equal text; non-finite numbers kept distinct. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => {
    if (typeof v === 'number') return encodeNumber(v);
    if (v && typeof v === 'object' && !Array.isArray(v) && !ArrayBuffer.isView(v)) {
      return Object.fromEntries(
        Object.keys(v)
          .sort()
          .map((k) => [k, (v as Record<string, unknown>)[k]]),
      );
    }
    return v;
  });
}

/** The structural hash: everything but the tensors' contents (their dtype and length count). */
export function hashSpec(spec: Omit<AttentionSpec, 'hash'>): string {
  const { tensors, ...rest } = spec;
  const text = canonicalJson({
    ...rest,
    tensors: tensors.map((t) => ({ dtype: t.dtype, length: t.length })),
  });
  return bytesToHex(sha256(utf8ToBytes(text))).slice(0, 32);
}

/**
 * Validates and normalises an attention config into a frozen spec. Every rule broken throws a
 * SpecError naming the field; nothing is clamped or guessed.
 */
export function defineAttention(config: AttentionConfig): AttentionSpec {
  if (typeof config !== 'object' || config === null)
    throw new SpecError('defineAttention() takes a config object');
  for (const key of Object.keys(config)) {
    if (!(KNOWN_FIELDS as readonly string[]).includes(key)) {
      throw new SpecError(`unknown field '${key}' (known: ${KNOWN_FIELDS.join(', ')})`);
    }
  }
  const batch = positiveInt('batch', config.batch);
  const headsQ = positiveInt('headsQ', config.headsQ);
  const headsKV = positiveInt('headsKV', config.headsKV ?? headsQ);
  if (headsQ % headsKV !== 0)
    throw new SpecError(`headsQ (${headsQ}) must be a multiple of headsKV (${headsKV})`);
  const seqQ = positiveInt('seqQ', config.seqQ);
  const seqKV = positiveInt('seqKV', config.seqKV ?? seqQ);
  const headDim = positiveInt('headDim', config.headDim);
  const headDimV = positiveInt('headDimV', config.headDimV ?? headDim);
  const layout = oneOf('layout', config.layout ?? 'bhsd', LAYOUTS);
  const dtype = oneOf('dtype', config.dtype ?? 'f32', DTYPES);
  const scale = config.scale ?? 1 / Math.sqrt(headDim);
  if (typeof scale !== 'number' || !Number.isFinite(scale))
    throw new SpecError(`scale must be finite (got ${String(scale)})`);
  if (scale === 0) throw new SpecError('scale must be non-zero (got 0)');
  for (const [name, n] of [
    ['q', batch * headsQ * seqQ * headDim],
    ['k', batch * headsKV * seqKV * headDim],
    ['v', batch * headsKV * seqKV * headDimV],
  ] as const) {
    if (n > 2 ** 40) throw new SpecError(`${name} would have ${n} elements, more than 2^40`);
  }
  const kernel = normaliseKernel(config.kernel, headDim);

  if (config.mask !== undefined && !isMask(config.mask)) {
    throw new SpecError('mask must be a Mask (from maskMod() or @tessera/patterns)');
  }
  if (config.scoreMod !== undefined && !isScoreMod(config.scoreMod)) {
    throw new SpecError('scoreMod must be a ScoreMod (from scoreMod())');
  }
  const slots: TensorRef[] = [];
  const mask = config.mask
    ? { name: config.mask.name, expr: resolveTensors(config.mask.expr.node, slots) }
    : null;
  const mod = config.scoreMod
    ? { name: config.scoreMod.name, expr: resolveTensors(config.scoreMod.expr.node, slots) }
    : null;

  if (kernel.type === 'linear') {
    if (mod)
      throw new SpecError(`kernel 'linear' cannot apply a score modification (got '${mod.name}')`);
    if (mask && !isCausalExpr(mask.expr)) {
      throw new SpecError(
        `kernel 'linear' supports no mask or a causal mask only (got mask '${mask.name}')`,
      );
    }
  }

  const tensors: TensorSlot[] = slots.map((t) =>
    Object.freeze({ dtype: t.dtype, length: t.length, data: t.data }),
  );
  const body = {
    version: 1 as const,
    batch,
    headsQ,
    headsKV,
    seqQ,
    seqKV,
    headDim,
    headDimV,
    layout,
    dtype,
    scale,
    kernel: Object.freeze(kernel),
    mask: mask ? Object.freeze(mask) : null,
    scoreMod: mod ? Object.freeze(mod) : null,
    tensors: Object.freeze(tensors),
    tiling: Object.freeze(normaliseTiling(config.tiling)),
  };
  const spec: AttentionSpec = Object.freeze({ ...body, hash: hashSpec(body) });
  madeSpecs.add(spec);
  if (config.mask?.layout) analyticLayouts.set(spec, config.mask.layout);
  return spec;
}

const CAUSAL_FORMS = [
  canonicalJson(vars.q.ge(vars.kv).node),
  canonicalJson(vars.kv.le(vars.q).node),
];

/** True when a mask expression is exactly `q >= kv` (what linear kernels can honour by prefix sums). */
export function isCausalExpr(expr: ExprNode): boolean {
  return CAUSAL_FORMS.includes(canonicalJson(expr));
}

/** Query heads per KV head. */
export const groupSize = (spec: AttentionSpec): number => spec.headsQ / spec.headsKV;

/** The KV head that query head `h` reads (GQA/MQA head mapping). */
export const kvHeadOf = (spec: AttentionSpec, h: number): number => Math.floor(h / groupSize(spec));

/** Element counts of q, k, v and out. */
export function tensorSizes(spec: AttentionSpec): {
  q: number;
  k: number;
  v: number;
  out: number;
  lse: number;
} {
  const { batch: B, headsQ: H, headsKV: HK, seqQ: SQ, seqKV: SK, headDim: D, headDimV: DV } = spec;
  return {
    q: B * H * SQ * D,
    k: B * HK * SK * D,
    v: B * HK * SK * DV,
    out: B * H * SQ * DV,
    lse: B * H * SQ,
  };
}

/**
 * The slot of a captured tensor in `spec.tensors` (where `backward`'s `grads` holds its gradient),
 * found by its data; -1 when the spec does not capture it.
 */
export function tensorSlot(
  spec: AttentionSpec,
  ref: TensorRef | Float32Array | Int32Array,
): number {
  const data = ref instanceof TensorRef ? ref.data : ref;
  return spec.tensors.findIndex((t) => t.data === data);
}

/** A JSON string holding the whole spec, tensor contents included. */
export function specToJSON(spec: AttentionSpec): string {
  return JSON.stringify(
    {
      ...spec,
      tensors: spec.tensors.map((t) => ({
        dtype: t.dtype,
        length: t.length,
        values: Array.from(t.data),
      })),
    },
    (_k, v) => encodeNumber(v),
  );
}

/**
 * Rebuilds a spec from specToJSON's text, validating it as defineAttention does. A pattern's
 * analytic layout does not travel; layouts of the revived spec are derived from its expression.
 */
export function specFromJSON(text: string): AttentionSpec {
  // Only expression literals (`value`) and tensor contents can hold non-finite numbers.
  if (typeof text !== 'string')
    throw new SpecError(
      `specFromJSON() takes a JSON string (got ${text === null ? 'null' : typeof text})`,
    );
  let raw: // biome-ignore lint/suspicious/noExplicitAny: parsed JSON, checked field by field below
  any;
  try {
    raw = JSON.parse(text, function (this: unknown, key, v) {
      return key === 'value' || (Array.isArray(this) && typeof v === 'string')
        ? decodeNumber(v)
        : v;
    });
  } catch (e) {
    throw new SpecError(`specFromJSON(): the text is not JSON (${(e as Error).message})`);
  }
  if (raw?.version !== 1)
    throw new SpecError(`spec version must be 1 (got ${JSON.stringify(raw?.version)})`);
  if (!Array.isArray(raw.tensors))
    throw new SpecError(`spec tensors must be an array (got ${JSON.stringify(raw.tensors)})`);
  const tensors = (raw.tensors as { dtype: string; values: number[] }[]).map((t, i) => {
    if (typeof t !== 'object' || t === null || !Array.isArray(t.values))
      throw new SpecError(`tensors[${i}] must be { dtype, length, values: number[] }`);
    if (t.dtype === 'f32') return new TensorRef(Float32Array.from(t.values));
    if (t.dtype === 'i32') return new TensorRef(Int32Array.from(t.values));
    throw new SpecError(
      `tensors[${i}].dtype must be 'f32' or 'i32' (got ${JSON.stringify(t.dtype)})`,
    );
  });
  const revive = (n: ExprNode): BuilderNode =>
    mapTensors(n, (slot) => {
      const t = tensors[slot];
      if (!t)
        throw new SpecError(
          `load node refers to tensor slot ${slot}, which the spec does not have`,
        );
      return t;
    });
  const config: AttentionConfig = {
    batch: raw.batch,
    headsQ: raw.headsQ,
    headsKV: raw.headsKV,
    seqQ: raw.seqQ,
    seqKV: raw.seqKV,
    headDim: raw.headDim,
    headDimV: raw.headDimV,
    layout: raw.layout,
    dtype: raw.dtype,
    scale: raw.scale,
    kernel: raw.kernel,
    tiling: raw.tiling,
  };
  if (raw.mask)
    config.mask = { kind: 'mask', name: raw.mask.name, expr: new Expr(revive(raw.mask.expr)) };
  if (raw.scoreMod)
    config.scoreMod = {
      kind: 'scoreMod',
      name: raw.scoreMod.name,
      expr: new Expr(revive(raw.scoreMod.expr)),
    };
  const spec = defineAttention(config);
  if (raw.hash !== undefined && raw.hash !== spec.hash) {
    throw new SpecError(`spec hash ${raw.hash} does not match its contents (${spec.hash})`);
  }
  return spec;
}
