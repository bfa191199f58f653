/**
 * The frame every program kernel shares: one invocation per item (an output element or a row),
 * items numbered across a 2-d grid of 64-wide workgroups so that large counts fit the
 * per-dimension limit. Shapes are constants in the source, so the text is deterministic.
 */
import { ResourceLimitError } from '@tessera/core';

export const GRID_THREADS = 64;

/** A WGSL f32 literal of `x` (rounded to f32). */
export function f32Lit(x: number): string {
  const s = String(Math.fround(x));
  return /[.e]/.test(s) ? `${s}f` : `${s}.0f`;
}

export interface GridKernel {
  /** Comment lines at the top (what the kernel computes, for whom). */
  readonly title: readonly string[];
  /** Number of items (invocations that do work). */
  readonly items: number;
  readonly consts: readonly (readonly [string, number | string])[];
  /** `@group(0) @binding(i)` declarations, in binding order. */
  readonly bindings: readonly string[];
  /** Helper functions placed before `main`. */
  readonly helpers?: readonly string[];
  /** The body for item `idx`. */
  readonly body: readonly string[];
}

const constLine = ([name, v]: readonly [string, number | string]): string =>
  `const ${name} = ${typeof v === 'number' ? `${v}u` : v};`;

export function emitGridKernel(k: GridKernel): string {
  return [
    ...k.title.map((l) => `// ${l}`),
    '',
    constLine(['ITEMS', k.items]),
    ...k.consts.map(constLine),
    '',
    ...k.bindings.map((b, i) => `@group(0) @binding(${i}) ${b}`),
    '',
    ...(k.helpers && k.helpers.length > 0 ? [...k.helpers, ''] : []),
    `@compute @workgroup_size(${GRID_THREADS})`,
    'fn main(',
    '  @builtin(workgroup_id) wg: vec3<u32>,',
    '  @builtin(num_workgroups) groups: vec3<u32>,',
    '  @builtin(local_invocation_index) lid: u32,',
    ') {',
    `  let idx = (wg.y * groups.x + wg.x) * ${GRID_THREADS}u + lid;`,
    '  if (idx >= ITEMS) {',
    '    return;',
    '  }',
    ...k.body.map((l) => (l.length > 0 ? `  ${l}` : l)),
    '}',
    '',
  ].join('\n');
}

/** Workgroup counts (x, y) covering `items` invocations within `maxPerDim` per dimension. */
export function gridSize(items: number, maxPerDim: number, what: string): [number, number] {
  const groups = Math.max(1, Math.ceil(items / GRID_THREADS));
  const x = Math.min(groups, maxPerDim);
  const y = Math.ceil(groups / x);
  if (y > maxPerDim)
    throw new ResourceLimitError(
      `${what}: ${items} invocations need a ${x}×${y} grid, beyond maxComputeWorkgroupsPerDimension (${maxPerDim})`,
    );
  return [x, y];
}
