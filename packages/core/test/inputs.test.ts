import { describe, expect, it } from 'vitest';
import {
  defineAttention,
  elementIndex,
  InputError,
  scoreMod,
  tensor,
  tensorSlot,
  validateBackwardInputs,
  validateInputs,
} from '../src/index.js';

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

describe('validateBackwardInputs', () => {
  const back = () => ({
    ...ok(),
    out: new Float32Array(2 * 4 * 5 * 6).fill(0.1),
    dOut: new Float32Array(2 * 4 * 5 * 6).fill(-0.2),
    lse: new Float32Array(2 * 4 * 5).fill(1.5),
  });
  it('accepts inputs of the right shapes, and -Infinity lse for masked rows', () => {
    const b = back();
    b.lse[3] = Number.NEGATIVE_INFINITY;
    expect(() => validateBackwardInputs(spec, b)).not.toThrow();
  });
  it('names the tensor, its length and its shape', () => {
    expect(() => validateBackwardInputs(spec, { ...back(), dOut: new Float32Array(3) })).toThrow(
      'dOut has 3 elements, expected 240 (batch 2 × headsQ 4 × seqQ 5 × headDimV 6)',
    );
    expect(() => validateBackwardInputs(spec, { ...back(), lse: new Float32Array(41) })).toThrow(
      'lse has 41 elements, expected 40 (batch 2 × headsQ 4 × seqQ 5)',
    );
    expect(() =>
      validateBackwardInputs(spec, { ...back(), out: undefined as unknown as Float32Array }),
    ).toThrow('out must be a Float32Array (got undefined)');
  });
  it('rejects non-finite out and dOut, and NaN or +Infinity lse', () => {
    const b = back();
    b.dOut[7] = Number.NaN;
    expect(() => validateBackwardInputs(spec, b)).toThrow(InputError);
    expect(() => validateBackwardInputs(spec, b)).toThrow('dOut[7] is NaN: it must be finite');
    const c = back();
    c.lse[2] = Number.POSITIVE_INFINITY;
    expect(() => validateBackwardInputs(spec, c)).toThrow('lse[2] is Infinity');
  });
  it('checks q, k and v first, as run() does', () => {
    expect(() => validateBackwardInputs(spec, { ...back(), q: new Float32Array(1) })).toThrow(
      'q has 1 elements',
    );
  });
});

describe('tensorSlot', () => {
  it('finds a captured tensor by its reference or its data, and -1 for others', () => {
    const slopes = tensor(Float32Array.from([0.5, 0.25]));
    const table = tensor(Float32Array.from([1, 2, 3]));
    const s = defineAttention({
      batch: 1,
      headsQ: 2,
      seqQ: 4,
      headDim: 8,
      scoreMod: scoreMod(({ score, h, q, kv }) =>
        score.add(table.at(q.sub(kv).abs())).sub(slopes.at(h)),
      ),
    });
    expect(tensorSlot(s, table)).toBe(0);
    expect(tensorSlot(s, slopes.data)).toBe(1);
    expect(tensorSlot(s, tensor(Float32Array.from([0.5, 0.25])))).toBe(-1);
  });
});
