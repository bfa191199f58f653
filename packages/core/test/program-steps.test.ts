// Program steps are defined once (PROGRAM_STEPS) and handled by backends through StepTable, whose
// type makes a missing kind a compile error; typecheck (tsc over test/) checks the ts-expect-error.
import { describe, expect, it } from 'vitest';
import {
  dispatchStep,
  PROGRAM_STEPS,
  type StepEnv,
  type StepTable,
  stepReads,
  stepWrites,
} from '../src/backend-api.js';
import { defineAttention, defineProgram, type ProgramStep, SpecError } from '../src/index.js';

const spec = defineAttention({ batch: 1, headsQ: 2, seqQ: 8, headDim: 4 });
const program = defineProgram({
  inputs: { q: [1, 2, 8, 4], k: [1, 2, 8, 4], v: [1, 2, 8, 4] },
  steps: [
    { op: 'pool', out: 'kp', x: 'k', block: 4 },
    { op: 'pool', out: 'vp', x: 'v', block: 4 },
    { op: 'attend', out: 'a', lse: 'la', spec, q: 'q', k: 'k', v: 'v' },
    {
      op: 'compressed',
      out: 'c',
      lse: 'lc',
      q: 'q',
      k: 'kp',
      v: 'vp',
      block: 4,
      seqKV: 8,
      causal: false,
      scale: 0.5,
    },
    {
      op: 'merge',
      out: 'o',
      branches: [
        { out: 'a', lse: 'la' },
        { out: 'c', lse: 'lc' },
      ],
    },
  ],
  outputs: ['o'],
});

describe('program steps, defined once', () => {
  it('infers shapes and reads/writes from the step definitions', () => {
    expect(program.shapes.kp).toEqual([1, 2, 2, 4]);
    expect(program.shapes.la).toEqual([1, 2, 8, 1]);
    expect(stepReads(program.steps[3] as ProgramStep)).toEqual(['q', 'kp', 'vp']);
    expect(stepWrites(program.steps[2] as ProgramStep)).toEqual(['a', 'la']);
    expect(stepWrites(program.steps[4] as ProgramStep)).toEqual(['o']);
    // Values are freed after their last use; outputs are kept.
    expect(program.lastUse.flat().sort()).toEqual([
      'a',
      'c',
      'k',
      'kp',
      'la',
      'lc',
      'q',
      'v',
      'vp',
    ]);
  });

  it('rejects an unknown kind, naming every known one', () => {
    const bad = () =>
      defineProgram({
        inputs: { x: [1, 1, 4, 4] },
        steps: [{ op: 'sort', out: 'y', x: 'x' } as unknown as ProgramStep],
        outputs: ['y'],
      });
    expect(bad).toThrow(SpecError);
    expect(bad).toThrow(`step 0: op must be one of ${Object.keys(PROGRAM_STEPS).join(', ')}`);
  });

  it('dispatches each step to its kind’s handler', async () => {
    const seen: string[] = [];
    const handler = async (step: ProgramStep) => {
      seen.push(step.op);
      return {};
    };
    const table: StepTable<number> = {
      pool: handler,
      project: handler,
      dense: handler,
      select: handler,
      group: handler,
      attend: handler,
      compressed: handler,
      merge: handler,
      subtract: handler,
      gate: handler,
    };
    const env = {} as StepEnv<number>;
    for (const step of program.steps) await dispatchStep(table, step, env);
    expect(seen).toEqual(['pool', 'pool', 'attend', 'compressed', 'merge']);
    // @ts-expect-error a table without a handler for every kind does not type-check
    const partial: StepTable<number> = { pool: handler };
    expect(Object.keys(partial)).toEqual(['pool']);
  });
});
