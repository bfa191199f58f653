import {
  type AttentionInputs,
  type AttentionOutputs,
  type AttentionSpec,
  type BlockLayout,
  compileJs,
  roundToDtype,
  SpecError,
  type Strategy,
  UnsupportedError,
} from '@tessera/core';
import { hashSpec, isCausalExpr } from '@tessera/core/backend';
import { type LinearKernel, linearKernel, linearNaive, linearPrefix } from './linear.js';
import type { Prepared } from './prepared.js';
import { softmaxNaive, softmaxTiled } from './softmax.js';

/** What is compiled once per spec: the mask and score closures, the linear feature map. */
export interface Compiled {
  readonly mask: Prepared['mask'];
  readonly scoreMod: Prepared['scoreMod'];
  readonly linear: LinearKernel | null;
}

const compiledSpecs = new WeakMap<AttentionSpec, Compiled>();

/** Checks that `spec` is an untouched spec from defineAttention and compiles it (cached). */
export function compile(spec: AttentionSpec): Compiled {
  const hit = compiledSpecs.get(spec);
  if (hit) return hit;
  if (typeof spec !== 'object' || spec === null || spec.version !== 1) {
    throw new SpecError(`run() needs a spec from defineAttention() (got ${describeValue(spec)})`);
  }
  const { hash, ...body } = spec;
  if (typeof hash !== 'string' || hashSpec(body) !== hash) {
    throw new SpecError(
      `spec hash ${String(hash)} does not match its contents: build specs with defineAttention() and do not edit them`,
    );
  }
  const kernel = spec.kernel;
  if (kernel.type !== 'softmax' && kernel.type !== 'linear') {
    throw new UnsupportedError(
      `the cpu backend runs kernels 'softmax' and 'linear' (got '${String((kernel as { type: unknown }).type)}')`,
    );
  }
  if (kernel.type === 'linear' && spec.mask !== null && !isCausalExpr(spec.mask.expr)) {
    throw new SpecError(
      `kernel 'linear' supports no mask or a causal mask only (got mask '${spec.mask.name}')`,
    );
  }
  const tensors = spec.tensors.map((t) => t.data);
  const compiled: Compiled = {
    mask: spec.mask && kernel.type === 'softmax' ? compileJs(spec.mask.expr, tensors) : null,
    scoreMod: spec.scoreMod ? compileJs(spec.scoreMod.expr, tensors) : null,
    linear: kernel.type === 'linear' ? linearKernel(spec) : null,
  };
  compiledSpecs.set(spec, compiled);
  return compiled;
}

/** q, k, v as the kernels see them: rounded to the spec's dtype (unchanged for f32). */
export function roundInputs(spec: AttentionSpec, inputs: AttentionInputs): AttentionInputs {
  if (spec.dtype === 'f32') return inputs;
  return {
    q: roundToDtype(inputs.q, spec.dtype),
    k: roundToDtype(inputs.k, spec.dtype),
    v: roundToDtype(inputs.v, spec.dtype),
  };
}

/**
 * Runs a checked spec on validated inputs: rounds them to the spec's dtype and picks the kernel.
 * `layout` gives the block layout the tiled softmax walks (the spec's, or a program's selection).
 */
export function attendCpu(
  spec: AttentionSpec,
  inputs: AttentionInputs,
  strategy: Strategy,
  layout: (spec: AttentionSpec) => BlockLayout,
): AttentionOutputs {
  const compiled = compile(spec);
  const p: Prepared = {
    spec,
    inputs: roundInputs(spec, inputs),
    mask: compiled.mask,
    scoreMod: compiled.scoreMod,
  };
  if (compiled.linear) {
    return strategy === 'naive'
      ? linearNaive(p, compiled.linear)
      : linearPrefix(p, compiled.linear);
  }
  if (strategy === 'naive') return softmaxNaive(p);
  return softmaxTiled(p, layout(spec));
}

function describeValue(x: unknown): string {
  if (x === null) return 'null';
  if (typeof x !== 'object') return typeof x;
  return `an object with version ${JSON.stringify((x as { version?: unknown }).version)}`;
}
