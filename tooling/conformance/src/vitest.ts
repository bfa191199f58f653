// Vitest glue: `describeConformance` emits one `it` per catalogue case. Kept out of the main
// entry so that importing the catalogue does not import Vitest.
import type { AttentionBackend, ProgramBackend } from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conformanceCases } from './cases.js';
import { type Reference, type RunCaseOptions, runCase } from './compare.js';
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
  c: ConformanceCase,
  skip: Readonly<Record<string, string>>,
): string | undefined {
  if (skip[c.id] !== undefined) return skip[c.id];
  for (const tag of c.tags) if (skip[tag] !== undefined) return skip[tag];
  return undefined;
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
  const cases = conformanceCases(options);
  const skip = options.skip ?? {};
  for (const key of Object.keys(skip)) {
    if (!cases.some((c) => c.id === key || c.tags.includes(key))) {
      throw new Error(`describeConformance('${name}'): skip entry '${key}' matches no case`);
    }
  }
  describe(`conformance: ${name}`, () => {
    let backend: AttentionBackend | undefined;
    let reference: Reference | undefined;
    let ownReference: AttentionBackend | undefined;
    beforeAll(async () => {
      backend = await factory();
      if (options.reference) reference = await options.reference();
      else reference = ownReference = await createCpuBackend();
    });
    afterAll(async () => {
      await backend?.dispose();
      await ownReference?.dispose();
    });
    for (const c of cases) {
      const title = `${c.id} [${c.summary}]`;
      const reason = skipReason(c, skip);
      if (reason !== undefined) {
        it.skip(`${title} (skipped: ${reason})`, () => {});
        continue;
      }
      it(
        title,
        async () => {
          if (!backend || !reference) throw new Error('backend or reference failed to start');
          const r = await runCase(backend, c, reference, options);
          if (!r.pass) expect.fail(`${c.id} [${c.summary}]: ${r.message}`);
          expect(r.pass).toBe(true);
        },
        options.timeout ?? 60_000,
      );
    }
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
