// Vitest glue: `describeConformance` and `describeGradientConformance` emit one `it` per
// catalogue case. Kept out of the main entry so that importing the catalogue does not import Vitest.
import type { AttentionBackend, ProgramBackend } from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conformanceCases } from './cases.js';
import { type Reference, type RunCaseOptions, runCase } from './compare.js';
import {
  type GradientReference,
  gradientCases,
  type RunGradientCaseOptions,
  runGradientCase,
} from './gradients.js';
import {
  type ProgramReference,
  type RunProgramCaseOptions,
  runProgramCase,
} from './program-run.js';
import { type ProgramCatalogueOptions, programCases } from './programs.js';
import { runSystemCase, systemCases } from './systems.js';
import type { CatalogueOptions, ConformanceCase } from './types.js';

export interface DescribeConformanceOptions extends CatalogueOptions, RunCaseOptions {
  /** What the backend is compared with; default: a fresh `createCpuBackend()`. */
  readonly reference?: () => Reference | Promise<Reference>;
  /**
   * Cases this backend skips, by case id or tag, each with its reason (shown in the test name).
   * Keep it short; an entry that matches no case is an error, so stale entries do not linger.
   */
  readonly skip?: Readonly<Record<string, string>>;
  /** Timeout of each case in milliseconds (default 60 000). */
  readonly timeout?: number;
}

function skipReason(
  c: Pick<ConformanceCase, 'id' | 'tags'>,
  skip: Readonly<Record<string, string>>,
): string | undefined {
  if (skip[c.id] !== undefined) return skip[c.id];
  for (const tag of c.tags) if (skip[tag] !== undefined) return skip[tag];
  return undefined;
}

/** Throws on a skip entry that matches no case, so stale entries do not linger. */
function checkSkip(
  where: string,
  name: string,
  cases: readonly Pick<ConformanceCase, 'id' | 'tags'>[],
  skip: Readonly<Record<string, string>>,
): void {
  for (const key of Object.keys(skip)) {
    if (!cases.some((c) => c.id === key || c.tags.includes(key))) {
      throw new Error(`${where}('${name}'): skip entry '${key}' matches no case`);
    }
  }
}

/** What one catalogue's Vitest glue needs: its cases, how to run one, and its options. */
interface CatalogueSuite<B, R, C extends { id: string; summary: string; tags: readonly string[] }> {
  readonly where: string;
  readonly title: string;
  readonly cases: readonly C[];
  readonly factory: () => B | Promise<B>;
  readonly reference?: () => R | Promise<R>;
  readonly skip?: Readonly<Record<string, string>>;
  readonly timeout: number;
  readonly concurrent?: boolean;
  run(
    backend: B,
    c: C,
    reference: R | AttentionBackend,
  ): Promise<{ pass: boolean; message: string }>;
}

/**
 * The one driver behind every describe*Conformance: starts the backend and its reference (a fresh
 * cpu backend unless one is given), emits one `it` per case (skip entries, with reasons, checked
 * for staleness) and disposes of both afterwards.
 */
function describeCatalogue<
  B,
  R,
  C extends { id: string; summary: string; tags: readonly string[] },
>(name: string, suite: CatalogueSuite<B, R, C>): void {
  const skip = suite.skip ?? {};
  checkSkip(suite.where, name, suite.cases, skip);
  describe(`${suite.title}: ${name}`, () => {
    let backend: B | undefined;
    let reference: R | AttentionBackend | undefined;
    let ownReference: AttentionBackend | undefined;
    beforeAll(async () => {
      backend = await suite.factory();
      if (suite.reference) reference = await suite.reference();
      else reference = ownReference = await createCpuBackend();
    }, suite.timeout);
    afterAll(async () => {
      await (backend as Partial<AttentionBackend> | undefined)?.dispose?.();
      await ownReference?.dispose();
    });
    const run = suite.concurrent ? it.concurrent : it;
    for (const c of suite.cases) {
      const title = `${c.id} [${c.summary}]`;
      const reason = skipReason(c, skip);
      if (reason !== undefined) {
        it.skip(`${title} (skipped: ${reason})`, () => {});
        continue;
      }
      run(
        title,
        async () => {
          if (backend === undefined || reference === undefined)
            throw new Error('backend or reference failed to start');
          const r = await suite.run(backend, c, reference);
          if (!r.pass) expect.fail(`${c.id} [${c.summary}]: ${r.message}`);
          expect(r.pass).toBe(true);
        },
        suite.timeout,
      );
    }
  });
}

/**
 * Runs the conformance catalogue against a backend, one Vitest `it` per case:
 *
 *   describeConformance('webgpu', () => createWebGpuBackend(), { skip: { 'dtype:f16': 'no shader-f16' } });
 */
export function describeConformance(
  name: string,
  factory: () => AttentionBackend | Promise<AttentionBackend>,
  options: DescribeConformanceOptions = {},
): void {
  describeCatalogue(name, {
    where: 'describeConformance',
    title: 'conformance',
    cases: conformanceCases(options),
    factory,
    reference: options.reference,
    skip: options.skip,
    timeout: options.timeout ?? 60_000,
    run: (backend, c, reference) => runCase(backend, c, reference as Reference, options),
  });
}

export interface DescribeGradientConformanceOptions
  extends CatalogueOptions,
    RunGradientCaseOptions {
  /** What the backend's gradients are compared with; default: a fresh `createCpuBackend()`. */
  readonly reference?: () => GradientReference | Promise<GradientReference>;
  /** As describeConformance's: by case id or tag, with reasons; stale entries are an error. */
  readonly skip?: Readonly<Record<string, string>>;
  /** Timeout of each case in milliseconds (default 120 000: a backward costs ~2.5 forwards). */
  readonly timeout?: number;
}

/**
 * Runs the gradient half of the catalogue against a backend's `backward`, one Vitest `it` per
 * case; out and lse come from the cpu forward, so both sides get identical inputs:
 *
 *   describeGradientConformance('webgpu', () => createWebGpuBackend(), { profile: 'ci' });
 */
export function describeGradientConformance(
  name: string,
  factory: () => AttentionBackend | Promise<AttentionBackend>,
  options: DescribeGradientConformanceOptions = {},
): void {
  describeCatalogue(name, {
    where: 'describeGradientConformance',
    title: 'gradient conformance',
    cases: gradientCases(options),
    factory,
    reference: options.reference,
    skip: options.skip,
    timeout: options.timeout ?? 120_000,
    run: (backend, c, reference) =>
      runGradientCase(backend, c, reference as GradientReference, options),
  });
}

/**
 * Runs every standard system of @tessera/variants (programs) on a backend against the CPU, one
 * Vitest `it` per system and shape.
 */
export function describeSystemConformance(
  name: string,
  factory: () => (AttentionBackend & ProgramBackend) | Promise<AttentionBackend & ProgramBackend>,
  options: { seq?: number; headDim?: number; profile?: 'all' | 'ci'; timeout?: number } = {},
): void {
  const cases = systemCases(options);
  describe(`system conformance: ${name}`, () => {
    let backend: (AttentionBackend & ProgramBackend) | undefined;
    let reference: AttentionBackend | undefined;
    beforeAll(async () => {
      backend = await factory();
      reference = await createCpuBackend();
    });
    afterAll(async () => {
      await backend?.dispose();
      await reference?.dispose();
    });
    for (const c of cases) {
      it(
        c.id,
        async () => {
          if (!backend || !reference) throw new Error('backend or reference failed to start');
          const r = await runSystemCase(backend, c, reference);
          if (!r.pass) expect.fail(`${c.id}: ${r.message}`);
          expect(r.pass).toBe(true);
        },
        options.timeout ?? 120_000,
      );
    }
  });
}

export interface DescribeProgramConformanceOptions
  extends ProgramCatalogueOptions,
    RunProgramCaseOptions {
  /** What the backend is compared with; default: a fresh `createCpuBackend()`. */
  readonly reference?: () => ProgramReference | Promise<ProgramReference>;
  /** As describeConformance's: by case id or tag, with reasons; stale entries are an error. */
  readonly skip?: Readonly<Record<string, string>>;
  /** Timeout of each case in milliseconds (default 120 000). */
  readonly timeout?: number;
  /** Run the cases with `it.concurrent` (one case's kernels compile while another's run). */
  readonly concurrent?: boolean;
}

/**
 * Runs the program catalogue against a backend, one Vitest `it` per case; pass `inspect` so
 * selections and groupings are compared entry for entry:
 *
 *   describeProgramConformance('webgpu', () => createWebGpuBackend(), {
 *     inspect: (v) => gpu.program.readSelection(v),
 *   });
 */
export function describeProgramConformance(
  name: string,
  factory: () => ProgramBackend | Promise<ProgramBackend>,
  options: DescribeProgramConformanceOptions = {},
): void {
  describeCatalogue(name, {
    where: 'describeProgramConformance',
    title: 'program conformance',
    cases: programCases(options),
    factory,
    reference: options.reference,
    skip: options.skip,
    timeout: options.timeout ?? 120_000,
    concurrent: options.concurrent,
    run: (backend, c, reference) =>
      runProgramCase(backend, c, reference as ProgramReference, options),
  });
}
