// The program catalogue itself: coverage of every step kind and of the situations it promises,
// deterministic lazy inputs, and a runner that fails what differs (an output off by a little, a
// −∞ lse made finite, a selection or grouping entry changed, a kept value not reused).
import type { ProgramBackend, ProgramOps } from '@tessera/core';
import { PROGRAM_STEPS } from '@tessera/core/backend';
import { createCpuBackend } from '@tessera/cpu';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DiscreteValue, inspectCpuValue, programCases, runProgramCase } from '../src/index.js';
import { bruteForceProgram } from './program-reference.js';

let cpu: Awaited<ReturnType<typeof createCpuBackend>>;
beforeAll(async () => {
  cpu = await createCpuBackend();
});
afterAll(async () => {
  await cpu.dispose();
});

const byId = (id: string) => {
  const c = programCases().find((x) => x.id === id);
  if (!c) throw new Error(`no case '${id}'`);
  return c;
};

/** cpu with its downloads (or its inspected values) altered by `edit`. */
function altered(edit: (x: Float32Array) => void): ProgramBackend {
  const ops = cpu.program as ProgramOps;
  return {
    name: 'altered',
    program: {
      ...ops,
      async download(v) {
        const x = await ops.download(v);
        edit(x);
        return x;
      },
    },
  };
}

describe('program catalogue', () => {
  it('covers every step kind, the tags it promises, with unique ids', () => {
    const cases = programCases();
    expect(new Set(cases.map((c) => c.id)).size).toBe(cases.length);
    const tags = new Set(cases.flatMap((c) => c.tags));
    for (const op of Object.keys(PROGRAM_STEPS)) expect(tags, op).toContain(`op:${op}`);
    for (const tag of [
      'attend:selection',
      'attend:grouped',
      'compressed:favor+',
      'compressed:elu+1',
      'compressed:relu',
      'compressed:exclude',
      'compressed:only',
      'skip-own-block',
      'heads:gqa',
      'heads:mha',
      'mask:causal',
      'mask:none',
      'dtype:bf16',
      'dtype:f16',
      'empty-rows',
      'exact',
      'ties',
      'keep',
      'direct',
      'small-blocks',
      'grouping:shared',
      'kernel:trig-rf',
    ])
      expect(tags, tag).toContain(tag);
    expect(cases.length).toBeGreaterThan(80);
  });

  it("'full' has the same cases at a GPU's size, and every program is valid there", () => {
    const full = programCases({ profile: 'full' });
    expect(full.length).toBe(programCases().length);
    for (const c of full) {
      expect(Object.keys(c.define().shapes).length, c.id).toBeGreaterThan(0);
    }
  });

  it('builds lazily and deterministically: the same inputs for the same id', () => {
    const a = byId('select/causal/bq16-bk8/top4-local1').build();
    const b = byId('select/causal/bq16-bk8/top4-local1').build();
    expect(Array.from(a.inputs.q ?? [])).toEqual(Array.from(b.inputs.q ?? []));
    expect(a.exact).toEqual(['sel']);
    const other = byId('select/none/bq8-bk8/top3-local0').build();
    expect(other.inputs.q?.[0]).not.toBe(a.inputs.q?.[0]);
  });

  it('the edge cases are what they say: empty rows, ties, −∞ inputs', async () => {
    const empty = programCases().filter((c) => c.tags.includes('empty-rows'));
    for (const c of empty) {
      const b = c.build();
      const r = b.direct
        ? bruteForceProgram(b.program, b.inputs, [])
        : await (async () => {
            const { runProgram } = await import('@tessera/core');
            return runProgram(cpu, b.program, b.inputs);
          })();
      const all = Object.values(r.outputs).flatMap((x) => Array.from(x));
      expect(all.includes(Number.NEGATIVE_INFINITY), c.id).toBe(true);
    }
    const ties = byId('select/ties/bq16-bk32/top3-local1').build();
    const sel = bruteForceProgram(ties.program, ties.inputs, ['sel']).discrete.sel as DiscreteValue;
    // Batch 0: every unforced choice tied, so the lowest candidates were taken.
    expect(sel.kind === 'selection' && Array.from(sel.kvBlocks.subarray(0, 6))).toEqual([
      0, 0, 0, 1, 0, 1,
    ]);
    const sub = byId('subtract/edge-rows').build();
    expect(sub.direct).toBe(true);
    expect(
      Array.from(sub.inputs.lp ?? []).filter((x) => x === Number.NEGATIVE_INFINITY).length,
    ).toBeGreaterThan(0);
  });

  it('the runner passes cpu and fails altered outputs, lses and discrete values', async () => {
    const c = byId('select/causal/bq16-bk8/top4-local1');
    const ok = await runProgramCase(cpu, c, bruteForceProgram, { inspect: inspectCpuValue });
    expect(ok.pass, ok.message).toBe(true);
    expect(ok.exactCompared).toEqual(['sel']);

    const off = await runProgramCase(
      altered((x) => {
        x[3] = (x[3] as number) + 1e-2;
      }),
      c,
      cpu,
    );
    expect(off.pass).toBe(false);
    expect(off.message).toMatch(/\[3\] = /);

    const masked = byId('merge/empty-rows');
    const finite = await runProgramCase(
      altered((x) => {
        for (let i = 0; i < x.length; i++) if (x[i] === Number.NEGATIVE_INFINITY) x[i] = -80;
      }),
      masked,
      cpu,
    );
    expect(finite.pass).toBe(false);
    expect(finite.worst).toBe(Number.POSITIVE_INFINITY);

    const nan = await runProgramCase(
      altered((x) => {
        x[0] = Number.NaN;
      }),
      c,
      cpu,
    );
    expect(nan.pass).toBe(false);

    const wrongBlock = await runProgramCase(cpu, c, cpu, {
      inspect: (v) => {
        const d = inspectCpuValue(v) as DiscreteValue & { kind: 'selection' };
        const kvBlocks = Int32Array.from(d.kvBlocks);
        kvBlocks[5] = (kvBlocks[5] as number) + 1;
        return { ...d, kvBlocks };
      },
    });
    expect(wrongBlock.pass).toBe(false);
    expect(wrongBlock.message).toMatch(/sel\.kvBlocks\[5\]/);

    const g = byId('group/softmax/causal/gqa/size6-c5');
    const wrongRank = await runProgramCase(cpu, g, cpu, {
      inspect: (v) => {
        const d = inspectCpuValue(v) as DiscreteValue & { kind: 'grouping' };
        return { ...d, rank: Int32Array.from(d.rank).reverse() };
      },
    });
    expect(wrongRank.pass).toBe(false);
    expect(wrongRank.message).toMatch(/rank/);
  });

  it('a keep case runs the second program on the kept device values', async () => {
    const c = byId('keep/pooled-keys-reused');
    const built = c.build();
    expect(built.next?.kept).toEqual({ kp: 'kp', vp: 'vp' });
    const r = await runProgramCase(cpu, c, bruteForceProgram);
    expect(r.pass, r.message).toBe(true);
    // A second program that reads something else than the kept value is caught.
    const ops = cpu.program as ProgramOps;
    let runs = 0;
    const second: ProgramBackend = {
      name: 'forgets',
      program: {
        ...ops,
        async download(v) {
          const x = await ops.download(v);
          if (++runs > 2) x.fill(0); // the second program's outputs
          return x;
        },
      },
    };
    const bad = await runProgramCase(second, c, cpu);
    expect(bad.pass).toBe(false);
    expect(bad.message).toMatch(/next\./);
  });
});
