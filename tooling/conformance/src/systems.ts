import type { ProgramBackend } from '@tessera/core';
import {
  adaptInputs,
  runSystem,
  type System,
  standardSystems,
  structuredInputs,
} from '@tessera/variants';

/** One system on one shape: every backend must give the CPU's output within `tolerance`. */
export interface SystemCase {
  readonly id: string;
  readonly system: System;
  readonly inputs: { q: Float32Array; k: Float32Array; v: Float32Array };
}

/** Largest |backend − reference| allowed per element (outputs are O(1); f32 kernels vs f64). */
export const SYSTEM_TOLERANCE = 5e-4;

/**
 * Every standard system at small ragged shapes: causal and bidirectional MHA, and causal GQA
 * (headsKV 2 of 4), on structured inputs (so selections and gates have real signal). Profile
 * 'ci' keeps causal MHA for every system plus bidirectional Linformer (software GPUs are slow).
 */
export function systemCases(
  opts: { seq?: number; headDim?: number; profile?: 'all' | 'ci' } = {},
): SystemCase[] {
  const seq = opts.seq ?? 80;
  const headDim = opts.headDim ?? 16;
  const shapes = [
    { headsQ: 4, headsKV: 4, seq, headDim, causal: true },
    { headsQ: 4, headsKV: 4, seq, headDim, causal: false },
    { headsQ: 4, headsKV: 2, seq, headDim, causal: true },
  ];
  const out: SystemCase[] = [];
  // 'ci': causal MHA for every system, plus the one system only a bidirectional shape has.
  const keep = (name: string, causal: boolean, kv: number) =>
    opts.profile !== 'ci' || (causal && kv === 4) || (!causal && name === 'linformer');
  for (const shape of shapes) {
    const base = structuredInputs(shape, 5);
    const tag = `${shape.causal ? 'causal' : 'bidir'}-h${shape.headsQ}kv${shape.headsKV}-n${seq}`;
    for (const system of standardSystems(shape)) {
      if (!keep(system.name, shape.causal, shape.headsKV)) continue;
      out.push({
        id: `${system.name}/${tag}`,
        system,
        inputs: adaptInputs(system, base, shape.headsKV),
      });
    }
  }
  return out;
}

/** Runs a case on a backend and the reference; `message` says where they differ most. */
export async function runSystemCase(
  backend: ProgramBackend,
  c: SystemCase,
  reference: ProgramBackend,
  tolerance = SYSTEM_TOLERANCE,
): Promise<{ pass: boolean; maxAbs: number; message: string }> {
  const got = (await runSystem(backend, c.system, c.inputs)).out;
  const want = (await runSystem(reference, c.system, c.inputs)).out;
  let maxAbs = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs((got[i] as number) - (want[i] as number));
    if (!(d <= maxAbs)) {
      maxAbs = d;
      at = i;
    }
  }
  const pass = got.length === want.length && maxAbs <= tolerance;
  return {
    pass,
    maxAbs,
    message: pass
      ? `max |diff| ${maxAbs.toExponential(2)}`
      : `max |diff| ${maxAbs} at element ${at} (got ${got[at]}, want ${want[at]}), tolerance ${tolerance}`,
  };
}
