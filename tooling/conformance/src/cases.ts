import { defineAttention } from '@tessera/core';
import {
  dtypeCases,
  edgeCases,
  fullOnlyCases,
  layoutCases,
  linearCases,
  patternCases,
  sizeCases,
} from './groups.js';
import { seededInputs, seedOf } from './inputs.js';
import {
  type CaseDef,
  type CatalogueOptions,
  type ConformanceCase,
  DTYPE_TOLERANCE,
  GRADIENT_TOLERANCE,
  type Profile,
  type Shape,
} from './types.js';

const DEFAULT_MAX_WORK: Readonly<Record<Profile, number>> = {
  ci: 2e9,
  full: Number.POSITIVE_INFINITY,
};

function summaryOf(s: Shape): string {
  const dv = s.headDimV ?? s.headDim;
  return `B${s.batch} H${s.headsQ}/${s.headsKV} S${s.seqQ}×${s.seqKV} D${s.headDim}/${dv} ${s.dtype ?? 'f32'} ${s.layout ?? 'bhsd'}`;
}

function toCase(def: CaseDef): ConformanceCase {
  const s = def.shape;
  const dtype = s.dtype ?? 'f32';
  // 31 bits: pattern seeds are i32.
  const seed = seedOf(def.id) >>> 1;
  const tags = [
    ...new Set([
      ...def.tags,
      `dtype:${dtype}`,
      `layout:${s.layout ?? 'bhsd'}`,
      ...(def.id.startsWith('pattern/')
        ? [`heads:${def.id.split('/')[2]}`, `mod:${def.id.split('/')[3]}`]
        : []),
      ...(s.seqQ !== s.seqKV ? ['seqQ≠seqKV'] : []),
    ]),
  ];
  return Object.freeze({
    id: def.id,
    tags: Object.freeze(tags),
    summary: summaryOf(s),
    dtype,
    work: 2 * s.batch * s.headsQ * s.seqQ * s.seqKV * (s.headDim + (s.headDimV ?? s.headDim)),
    tolerance: def.tolerance ?? DTYPE_TOLERANCE[dtype],
    gradientTolerance: def.gradientTolerance ?? GRADIENT_TOLERANCE[dtype],
    build() {
      const spec = defineAttention({ ...s, ...def.extra?.(seed) });
      return { spec, inputs: seededInputs(spec, seed, def.amp ?? 1) };
    },
  });
}

/**
 * The conformance catalogue. Enumerating is cheap (no spec or tensor is built until a case's
 * `build()` is called), and ids are stable, so skip lists can name them.
 */
export function conformanceCases(options: CatalogueOptions = {}): ConformanceCase[] {
  const profile = options.profile ?? 'ci';
  if (profile !== 'ci' && profile !== 'full') {
    throw new TypeError(`profile must be 'ci' or 'full' (got ${JSON.stringify(profile)})`);
  }
  const maxWork = options.maxWork ?? DEFAULT_MAX_WORK[profile];
  const cross = options.crossProduct ?? (profile === 'ci' ? 'cover' : 'all');
  if (cross !== 'cover' && cross !== 'all') {
    throw new TypeError(`crossProduct must be 'cover' or 'all' (got ${JSON.stringify(cross)})`);
  }
  const defs = [
    ...patternCases(profile, cross),
    ...sizeCases(),
    ...edgeCases(),
    ...linearCases(),
    ...dtypeCases(),
    ...layoutCases(),
    ...(profile === 'full' ? fullOnlyCases() : []),
  ];
  return defs
    .map(toCase)
    .filter((c) => c.work <= maxWork && (options.filter ? options.filter(c) : true));
}
