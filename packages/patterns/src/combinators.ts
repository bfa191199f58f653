import {
  type BlockLayout,
  BlockLayoutBuilder,
  ceilDiv,
  compileMask,
  defineMask,
  type Expr,
  isMask,
  type LayoutContext,
  layoutSlice,
  type Mask,
  SpecError,
} from '@tessera/core';
import { classifyBlock, varsUsed } from '@tessera/core/backend';
import { maskLayout } from './layout-helpers.js';

type Op = 'union' | 'intersect' | 'difference' | 'not';

/** A block's class in one operand: not listed, partial, or full. */
const EMPTY = 0;
const PARTIAL = 1;
const FULL = 2;
type Cls = 0 | 1 | 2;

/** The combined class when the operands decide it, or undefined when only elements can. */
function decide(op: Op, cls: readonly Cls[]): Cls | undefined {
  switch (op) {
    case 'union': {
      if (cls.includes(FULL)) return FULL;
      const partial = cls.filter((c) => c === PARTIAL).length;
      // Two partial blocks may cover each other's gaps.
      return partial === 0 ? EMPTY : partial === 1 ? PARTIAL : undefined;
    }
    case 'intersect': {
      if (cls.includes(EMPTY)) return EMPTY;
      const partial = cls.filter((c) => c === PARTIAL).length;
      // Two partial blocks may not overlap at all.
      return partial === 0 ? FULL : partial === 1 ? PARTIAL : undefined;
    }
    case 'difference': {
      const [a, b] = cls as [Cls, Cls];
      if (a === EMPTY || b === FULL) return EMPTY;
      if (b === EMPTY) return a;
      // b is partial: a full block keeps a gap; a partial one may be wiped out.
      return a === FULL ? PARTIAL : undefined;
    }
    case 'not':
      return (2 - (cls[0] as number)) as Cls;
  }
}

/**
 * The exact layout of a combination: rows of the operands' layouts merged block by block, and
 * only blocks whose class the operands leave open (e.g. two partial blocks in a union) classified
 * element by element with the combined expression. Cost: the operands' layouts plus, for `not`,
 * every block; plus up to one block's elements per undecided block.
 */
function combinedLayout(
  op: Op,
  masks: readonly Mask[],
  combined: Expr,
  ctx: LayoutContext,
): BlockLayout {
  const layouts = masks.map((m) => maskLayout(m, ctx));
  const used = varsUsed(combined.node);
  const batches = Math.max(used.has('b') ? ctx.batch : 1, ...layouts.map((l) => l.batches));
  const heads = Math.max(used.has('h') ? ctx.headsQ : 1, ...layouts.map((l) => l.heads));
  const out = new BlockLayoutBuilder(ctx, { batches, heads });
  const nq = ceilDiv(ctx.seqQ, ctx.blockQ);
  const nk = ceilDiv(ctx.seqKV, ctx.blockKV);
  let f: ((b: number, h: number, q: number, kv: number) => boolean) | undefined;
  const cursor = new Int32Array(layouts.length);
  const ends = new Int32Array(layouts.length);
  const cls: Cls[] = layouts.map(() => EMPTY);

  for (let b = 0; b < batches; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < nq; i++) {
        layouts.forEach((l, n) => {
          const r = layoutSlice(l, b, h) * l.numQBlocks + i;
          cursor[n] = l.rowStart[r] as number;
          ends[n] = l.rowStart[r + 1] as number;
        });
        const q0 = i * ctx.blockQ;
        const q1 = Math.min(ctx.seqQ, q0 + ctx.blockQ);
        let j = op === 'not' ? 0 : nextListed(layouts, cursor, ends, -1, nk);
        while (j < nk) {
          layouts.forEach((l, n) => {
            const e = cursor[n] as number;
            if (e < (ends[n] as number) && l.kvBlocks[e] === j) {
              cls[n] = l.full[e] ? FULL : PARTIAL;
              cursor[n] = e + 1;
            } else {
              cls[n] = EMPTY;
            }
          });
          let c = decide(op, cls);
          if (c === undefined) {
            f ??= compileMask(defineMask(combined));
            const k0 = j * ctx.blockKV;
            const k1 = Math.min(ctx.seqKV, k0 + ctx.blockKV);
            const cell = classifyBlock(undefined, f, b, h, q0, q1, k0, k1);
            c = cell === 'full' ? FULL : cell === 'partial' ? PARTIAL : EMPTY;
          }
          if (c !== EMPTY) out.push(j, c === FULL);
          j = op === 'not' ? j + 1 : nextListed(layouts, cursor, ends, j, nk);
        }
        out.endRow();
      }
    }
  }
  return out.finish();
}

/** The smallest KV block after `j` that some operand lists (every operand's row ascends). */
function nextListed(
  layouts: readonly BlockLayout[],
  cursor: Int32Array,
  ends: Int32Array,
  j: number,
  nk: number,
): number {
  let best = nk;
  layouts.forEach((l, n) => {
    const e = cursor[n] as number;
    if (e < (ends[n] as number)) best = Math.min(best, l.kvBlocks[e] as number);
  });
  return best > j ? best : nk;
}

function operands(where: string, masks: readonly unknown[], min: number): Mask[] {
  if (masks.length < min)
    throw new SpecError(`${where}: needs at least ${min} masks (got ${masks.length})`);
  masks.forEach((m, i) => {
    if (!isMask(m)) throw new SpecError(`${where}: argument ${i} is not a Mask`);
  });
  return masks as Mask[];
}

/** Builds a combined mask; `name` overrides the generated one (systems built from parts). */
export function combine(op: Op, masks: readonly Mask[], name?: string): Mask {
  const exprs = masks.map((m) => m.expr);
  const expr =
    op === 'union'
      ? exprs.reduce((a, b) => a.or(b))
      : op === 'intersect'
        ? exprs.reduce((a, b) => a.and(b))
        : op === 'difference'
          ? (exprs[0] as Expr).and((exprs[1] as Expr).not())
          : (exprs[0] as Expr).not();
  return defineMask(expr, {
    name: name ?? `${op}(${masks.map((m) => m.name).join(', ')})`,
    layout: (ctx) => combinedLayout(op, masks, expr, ctx),
  });
}

/** Union: a pair is unmasked when any of the masks unmasks it. */
export function union(...masks: Mask[]): Mask {
  return combine('union', operands('union', masks, 1));
}

/** Intersection: a pair is unmasked when every mask unmasks it. */
export function intersect(...masks: Mask[]): Mask {
  return combine('intersect', operands('intersect', masks, 1));
}

/** Difference: unmasked by `a` and not by `b`. */
export function difference(a: Mask, b: Mask): Mask {
  return combine('difference', operands('difference', [a, b], 2));
}

/** Complement: unmasked exactly where `mask` masks. The layout lists every block it does not fill. */
export function not(mask: Mask): Mask {
  return combine('not', operands('not', [mask], 1));
}
