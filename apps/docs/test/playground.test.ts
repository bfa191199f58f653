// The playground's pure parts: the pattern catalog (its code strings build the very masks it
// uses), the URL round trip, and the comparison against the CPU reference.

import { defineAttention, specToJSON } from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import * as patterns from '@tessera/patterns';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { catalog, defaultParams } from '../lib/catalog.js';
import { compare, configure, formatBytes, formatCount, maxAbsDiff } from '../lib/engine.js';
import {
  DEFAULT_STATE,
  type PlaygroundState,
  parseState,
  SHAPE_KEYS,
  stateToSearch,
} from '../lib/state.js';
import { denseAttention, maxAbsError } from './reference.js';

/** Evaluates a catalog code string with @tessera/patterns' exports in scope. */
function evaluate(code: string): unknown {
  const names = Object.keys(patterns);
  return new Function(...names, `return ${code};`)(
    ...names.map((n) => (patterns as Record<string, unknown>)[n]),
  );
}

const specOf = (mask: unknown) =>
  specToJSON(
    defineAttention({
      batch: 1,
      headsQ: 1,
      seqQ: 256,
      headDim: 16,
      mask: mask as ReturnType<typeof patterns.causal>,
    }),
  );

describe('the pattern catalog', () => {
  it('shows code that builds exactly the mask it uses, at defaults and at the parameter bounds', () => {
    for (const entry of catalog) {
      const settings = [
        defaultParams(entry),
        Object.fromEntries(entry.params.map((d) => [d.key, d.kind === 'bool' ? 0 : d.min])),
      ];
      for (const p of settings) {
        let built: unknown;
        try {
          built = entry.build(p, 256);
        } catch {
          continue; // some minimums do not fit 256 tokens; the playground shows that error
        }
        expect(specOf(evaluate(entry.code(p, 256))), `${entry.id} ${JSON.stringify(p)}`).toBe(
          specOf(built),
        );
      }
    }
  });

  it('has unique ids, defaults inside their bounds, and no parameter named like a shape key', () => {
    expect(new Set(catalog.map((e) => e.id)).size).toBe(catalog.length);
    for (const entry of catalog) {
      for (const d of entry.params) {
        expect(d.default, `${entry.id}.${d.key}`).toBeGreaterThanOrEqual(d.min);
        expect(d.default, `${entry.id}.${d.key}`).toBeLessThanOrEqual(d.max);
        expect(SHAPE_KEYS, `${entry.id}.${d.key}`).not.toContain(d.key);
      }
    }
  });
});

describe('the URL state', () => {
  const stateArb = fc
    .record({
      entry: fc.constantFrom(...catalog),
      seq: fc.integer({ min: 1, max: 4096 }),
      heads: fc.integer({ min: 1, max: 16 }),
      headDim: fc.constantFrom(16, 32, 64, 128),
      block: fc.constantFrom(16, 32, 64, 128),
      backend: fc.constantFrom('auto', 'webgpu', 'cpu'),
      seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      raw: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 8, maxLength: 8 }),
    })
    .map(
      ({ entry, raw, ...rest }): PlaygroundState => ({
        ...rest,
        backend: rest.backend as PlaygroundState['backend'],
        pattern: entry.id,
        params: Object.fromEntries(
          entry.params.map((d, i) => [d.key, d.min + Math.floor((raw[i] ?? 0) * (d.max - d.min))]),
        ),
      }),
    );

  it('reads back what it writes', () => {
    fc.assert(
      fc.property(stateArb, (state) => {
        const parsed = parseState(stateToSearch(state));
        expect(parsed.problems).toEqual([]);
        expect(parsed.state).toEqual(state);
      }),
    );
  });

  it('uses defaults for an empty query', () => {
    expect(parseState('')).toEqual({ state: DEFAULT_STATE, problems: [] });
  });

  it('names each value it cannot use, and falls back to the default for it', () => {
    const { state, problems } = parseState(
      '?pattern=bigbird&window=x&seq=99999&dim=48&backend=cuda&zoom=2&randomBlocks=5',
    );
    expect(state.pattern).toBe('bigbird');
    expect(state.params.randomBlocks).toBe(5);
    expect(state.params.window).toBe(3);
    expect(state.seq).toBe(DEFAULT_STATE.seq);
    expect(problems).toEqual([
      'window=x is not an integer in [1, 63]; using 3',
      'zoom is not a parameter of bigbird; ignored',
      'seq=99999 is not an integer in [1, 4096]; using 256',
      'dim=48 is not one of 16, 32, 64, 128; using 32',
      'backend=cuda is not one of auto, webgpu, cpu; using auto',
    ]);
    expect(parseState('?pattern=nope').problems).toEqual([
      'pattern=nope is not one of ' +
        catalog.map((e) => e.id).join(', ') +
        '; using sliding-window',
    ]);
  });
});

describe('configure and compare', () => {
  it('estimates cost against dense attention and compares a run with the reference', async () => {
    const state = parseState(
      '?pattern=chunked-causal&chunk=24&seq=96&heads=2&dim=16&tile=16',
    ).state;
    const c = configure(state);
    expect(c.code).toBe('chunkedCausal(24)');
    expect(c.stats.density).toBeCloseTo((4 * (24 * 25)) / 2 / (96 * 96), 12);
    expect(c.tiled.flops).toBeLessThan(c.denseTiled.flops);
    expect(c.tiled.peakExtraBytes).toBeLessThan(c.denseNaive.peakExtraBytes);

    const cpu = await createCpuBackend();
    const result = await compare(cpu, cpu, c.spec, state.seed);
    expect(result.matches).toBe(true);
    expect(result.referenceStrategy).toBe('naive');
    // The compared output is attention itself, checked independently here.
    const { makeInputs } = await import('../lib/engine.js');
    const inputs = makeInputs(c.spec, state.seed);
    const ref = denseAttention(
      { batch: 1, headsQ: 2, headsKV: 2, seqQ: 96, seqKV: 96, headDim: 16 },
      inputs.q,
      inputs.k,
      inputs.v,
      { allowed: (_b, _h, q, kv) => kv <= q && Math.floor(q / 24) === Math.floor(kv / 24) },
    );
    expect(maxAbsError(result.outputs.out, ref.out)).toBeLessThan(2e-6);
  });

  it('counts an infinity or NaN on one side only as an infinite error', () => {
    const a = Float32Array.of(0, Number.NEGATIVE_INFINITY, 1);
    expect(maxAbsDiff(a, Float32Array.of(0, Number.NEGATIVE_INFINITY, 1.5))).toBe(0.5);
    expect(maxAbsDiff(a, Float32Array.of(0, 0, 1))).toBe(Number.POSITIVE_INFINITY);
    expect(maxAbsDiff(a, Float32Array.of(0, Number.NaN, 1))).toBe(Number.POSITIVE_INFINITY);
    expect(maxAbsDiff(a, Float32Array.of(0, 1))).toBe(Number.POSITIVE_INFINITY);
  });

  it('formats counts and bytes', () => {
    expect(formatCount(999)).toBe('999');
    expect(formatCount(1_234_567)).toBe('1.23 M');
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.50 KiB');
    expect(formatBytes(3 * 1024 ** 3)).toBe('3.00 GiB');
  });
});
