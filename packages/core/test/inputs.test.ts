import { describe, expect, it } from 'vitest';
import { defineAttention, elementIndex, InputError, validateInputs } from '../src/index.js';

const spec = defineAttention({
  batch: 2,
  headsQ: 4,
  headsKV: 2,
  seqQ: 5,
  seqKV: 7,
  headDim: 3,
  headDimV: 6,
});
const ok = () => ({
  q: new Float32Array(2 * 4 * 5 * 3).fill(0.5),
  k: new Float32Array(2 * 2 * 7 * 3).fill(0.25),
  v: new Float32Array(2 * 2 * 7 * 6).fill(1),
});

describe('validateInputs', () => {
  it('accepts inputs of the right shapes', () => {
    expect(() => validateInputs(spec, ok())).not.toThrow();
  });
  it('names the tensor and both lengths', () => {
    const f = () => validateInputs(spec, { ...ok(), k: new Float32Array(10) });
    expect(f).toThrow(InputError);
    expect(f).toThrow('k has 10 elements, expected 84 (batch 2 × headsKV 2 × seqKV 7 × headDim 3)');
    expect(() => validateInputs(spec, { ...ok(), v: new Float32Array(84) })).toThrow(
      'v has 84 elements, expected 168 (batch 2 × headsKV 2 × seqKV 7 × headDimV 6)',
    );
  });
  it('names the wrong type', () => {
    expect(() =>
      validateInputs(spec, { ...ok(), q: new Float64Array(120) as unknown as Float32Array }),
    ).toThrow('q must be a Float32Array (got Float64Array)');
    expect(() => validateInputs(spec, { q: ok().q, k: ok().k } as never)).toThrow(
      'v must be a Float32Array (got undefined)',
    );
  });
  it('rejects non-finite values with their position', () => {
    const bad = ok();
    bad.v[17] = Number.NaN;
    expect(() => validateInputs(spec, bad)).toThrow('v[17] is NaN: inputs must be finite');
    const inf = ok();
    inf.q[3] = Number.NEGATIVE_INFINITY;
    expect(() => validateInputs(spec, inf)).toThrow('q[3] is -Infinity: inputs must be finite');
  });
});

describe('elementIndex', () => {
  it('enumerates every element once in both layouts', () => {
    for (const layout of ['bhsd', 'bshd'] as const) {
      const seen = new Set<number>();
      for (let b = 0; b < 2; b++)
        for (let h = 0; h < 3; h++)
          for (let s = 0; s < 4; s++)
            for (let d = 0; d < 5; d++) seen.add(elementIndex(layout, 3, 4, 5, b, h, s, d));
      expect(seen.size).toBe(120);
      expect(Math.max(...seen)).toBe(119);
    }
    expect(elementIndex('bshd', 3, 4, 5, 1, 2, 3, 4)).toBe(((1 * 4 + 3) * 3 + 2) * 5 + 4);
    expect(elementIndex('bhsd', 3, 4, 5, 1, 2, 3, 4)).toBe(((1 * 3 + 2) * 4 + 3) * 5 + 4);
  });
});
