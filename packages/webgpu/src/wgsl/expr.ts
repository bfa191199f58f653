/**
 * WGSL target of core's expression IR, node by node beside core's expr/js.ts. Semantics match
 * the reference: i32 wraps, integer x / 0 and x % 0 are 0, out-of-range tensor loads give 0, and
 * the hash is the same u32 arithmetic as core's hash32.ts. WGSL evaluates expressions made only
 * of literals at shader creation and rejects overflow there, so an operation whose operands are
 * all literals routes one through an identity function (`rt_*`), which makes it a runtime value.
 */
import type { AttentionSpec, ExprNode, ScalarType, VarName } from '@tessera/core';
import {
  type BinaryFn,
  type ExprRenderer,
  HASH_ARG_OFFSET,
  HASH_MUL_1,
  HASH_MUL_2,
  type LoweredExpr,
  lowerExpr,
  type RenderedOperand,
  type UnaryFn,
} from '@tessera/core/backend';

/** Where a captured tensor lives in the shared `tensors` buffer (32-bit words). */
export interface TensorPlacement {
  readonly dtype: 'f32' | 'i32';
  readonly offset: number;
  readonly length: number;
}

const WGSL_TYPE: Record<ScalarType, string> = { f32: 'f32', i32: 'i32', bool: 'bool' };
const hex = (x: number): string => `0x${(x >>> 0).toString(16)}u`;

/** A renderer that also records which helper functions its output calls. */
export class WgslExprRenderer implements ExprRenderer {
  /** Helper names used so far; `helperSource` emits them. */
  readonly used = new Set<string>();
  private readonly literals = new Set<string>();

  constructor(private readonly tensors: readonly TensorPlacement[]) {}

  literal(value: number, type: ScalarType): string {
    let code: string;
    if (type === 'bool') code = value ? 'true' : 'false';
    else if (type === 'i32') {
      code = value === -2147483648 ? 'i32(-2147483648)' : value < 0 ? `(${value}i)` : `${value}i`;
    } else if (!Number.isFinite(value)) {
      this.used.add('rt_u32');
      code = `bitcast<f32>(rt_u32(${value > 0 ? '0x7f800000u' : '0xff800000u'}))`;
      return code; // already a runtime value
    } else {
      const f = Math.fround(value);
      const s = Object.is(f, -0) ? '-0.0' : String(f);
      const body = /[.e]/.test(s) ? s : `${s}.0`;
      code = f < 0 || Object.is(f, -0) ? `(${body}f)` : `${body}f`;
    }
    this.literals.add(code);
    return code;
  }

  variable(name: VarName): string {
    return name;
  }

  /** Makes `a` a runtime value when every operand is a literal (see the module comment). */
  private runtime(ops: readonly RenderedOperand[]): string[] {
    const codes = ops.map((o) => o.code);
    if (ops.length > 0 && ops.every((o) => this.literals.has(o.code))) {
      const first = ops[0] as RenderedOperand;
      const fn = `rt_${WGSL_TYPE[first.type]}`;
      this.used.add(fn);
      codes[0] = `${fn}(${first.code})`;
    }
    return codes;
  }

  unary(fn: UnaryFn, a: RenderedOperand, type: ScalarType): string {
    const [x] = this.runtime([a]) as [string];
    switch (fn) {
      case 'neg':
        return `-${x}`;
      case 'abs':
        return `abs(${x})`;
      case 'exp':
        return `exp(${x})`;
      case 'exp2':
        return `exp2(${x})`;
      case 'log':
        return `log(${x})`;
      case 'tanh':
        // tanh(±15) is ±1 in f32; clamping keeps drivers that expand tanh through exp from overflowing.
        return `tanh(clamp(${x}, -15.0f, 15.0f))`;
      case 'sqrt':
        return `sqrt(${x})`;
      case 'floor':
        return type === 'i32' ? x : `floor(${x})`;
      case 'not':
        return `!${x}`;
    }
  }

  binary(fn: BinaryFn, a: RenderedOperand, b: RenderedOperand, type: ScalarType): string {
    let [x, y] = this.runtime([a, b]) as [string, string];
    const int = type === 'i32';
    if (int && (fn === 'div' || fn === 'mod') && this.literals.has(y)) {
      // WGSL rejects an integer division by a literal zero even when the dividend is not constant.
      this.used.add('rt_i32');
      y = `rt_i32(${y})`;
    }
    switch (fn) {
      case 'add':
        return `${x} + ${y}`;
      case 'sub':
        return `${x} - ${y}`;
      case 'mul':
        return `${x} * ${y}`;
      case 'div':
        return int ? `select(${x} / ${y}, 0i, ${y} == 0i)` : `${x} / ${y}`;
      case 'mod':
        return int ? `select(${x} % ${y}, 0i, ${y} == 0i)` : `${x} % ${y}`;
      case 'min':
        return `min(${x}, ${y})`;
      case 'max':
        return `max(${x}, ${y})`;
      case 'lt':
        return `${x} < ${y}`;
      case 'le':
        return `${x} <= ${y}`;
      case 'gt':
        return `${x} > ${y}`;
      case 'ge':
        return `${x} >= ${y}`;
      case 'eq':
        return `${x} == ${y}`;
      case 'ne':
        return `${x} != ${y}`;
      // Operands are already-evaluated atoms: the non-short-circuit forms keep the code branch-free.
      case 'and':
        return `${x} & ${y}`;
      case 'or':
        return `${x} | ${y}`;
    }
  }

  select(cond: RenderedOperand, a: RenderedOperand, b: RenderedOperand): string {
    const [c, x, y] = this.runtime([cond, a, b]) as [string, string, string];
    return `select(${y}, ${x}, ${c})`;
  }

  cast(a: RenderedOperand, to: ScalarType): string {
    const [x] = this.runtime([a]) as [string];
    if (a.type === 'bool') return `select(${to === 'i32' ? '0i, 1i' : '0.0f, 1.0f'}, ${x})`;
    return `${WGSL_TYPE[to]}(${x})`;
  }

  load(slot: number, _type: ScalarType, index: RenderedOperand): string {
    if (!this.tensors[slot]) throw new Error(`expression reads tensor slot ${slot}, not placed`);
    const fn = `load_t${slot}`;
    this.used.add(fn);
    return `${fn}(${index.code})`;
  }

  hash(args: readonly RenderedOperand[]): string {
    this.used.add('hash');
    let h = '0u';
    for (const a of args) h = `hash_step(${h}, ${a.code})`;
    return `hash_unit(${h})`;
  }

  declare(name: string, type: ScalarType, value: string): string {
    return `let ${name}: ${WGSL_TYPE[type]} = ${value};`;
  }

  /** WGSL source of every helper used so far, in a fixed order. `tensors` names the buffer. */
  helperSource(tensorBuffer = 'tensors'): string {
    const out: string[] = [];
    for (const t of ['bool', 'f32', 'i32', 'u32']) {
      if (this.used.has(`rt_${t}`)) out.push(`fn rt_${t}(x: ${t}) -> ${t} { return x; }`);
    }
    this.tensors.forEach((t, slot) => {
      if (!this.used.has(`load_t${slot}`)) return;
      const value = t.dtype === 'f32' ? 'bitcast<f32>(w)' : 'bitcast<i32>(w)';
      const zero = t.dtype === 'f32' ? '0.0f' : '0i';
      out.push(
        [
          `fn load_t${slot}(i: i32) -> ${t.dtype} {`,
          `  let w = ${tensorBuffer}[${t.offset}u + min(u32(i), ${t.length - 1}u)];`,
          `  return select(${zero}, ${value}, u32(i) < ${t.length}u);`,
          '}',
        ].join('\n'),
      );
    });
    if (this.used.has('hash')) {
      out.push(
        [
          'fn mix32(x: u32) -> u32 {',
          '  var h = x;',
          '  h ^= h >> 16u;',
          `  h *= ${hex(HASH_MUL_1)};`,
          '  h ^= h >> 15u;',
          `  h *= ${hex(HASH_MUL_2)};`,
          '  h ^= h >> 16u;',
          '  return h;',
          '}',
          'fn hash_step(h: u32, a: i32) -> u32 {',
          `  return mix32(h ^ mix32(bitcast<u32>(a) + ${hex(HASH_ARG_OFFSET)}));`,
          '}',
          'fn hash_unit(h: u32) -> f32 {',
          '  return f32(h >> 8u) * (1.0f / 16777216.0f);',
          '}',
        ].join('\n'),
      );
    }
    return out.join('\n');
  }
}

/** Lowers `node` with a fresh renderer; the caller emits `renderer.helperSource()` once per module. */
export function lowerWgsl(node: ExprNode, renderer: WgslExprRenderer, prefix = 't'): LoweredExpr {
  return lowerExpr(node, renderer, { prefix });
}

/** The spec's `score_mod` and `mask` WGSL functions (those it has), lowered through `renderer`. */
export function specFunctions(spec: AttentionSpec, renderer: WgslExprRenderer): string[] {
  const fns: string[] = [];
  if (spec.scoreMod) {
    const low = lowerWgsl(spec.scoreMod.expr, renderer, 's');
    fns.push(
      `// score modification '${spec.scoreMod.name}'`,
      'fn score_mod(score: f32, b: i32, h: i32, q: i32, kv: i32) -> f32 {',
      ...low.statements.map((s) => `  ${s}`),
      `  return ${low.result};`,
      '}',
    );
  }
  if (spec.mask) {
    const low = lowerWgsl(spec.mask.expr, renderer, 'm');
    fns.push(
      `// mask '${spec.mask.name}'`,
      'fn mask(b: i32, h: i32, q: i32, kv: i32) -> bool {',
      ...low.statements.map((s) => `  ${s}`),
      `  return ${low.result};`,
      '}',
    );
  }
  return fns;
}

/** Places a spec's captured tensors back to back in one buffer of 32-bit words. */
export function placeTensors(
  tensors: readonly { dtype: 'f32' | 'i32'; length: number }[],
): TensorPlacement[] {
  let offset = 0;
  return tensors.map((t) => {
    const p = { dtype: t.dtype, offset, length: t.length };
    offset += t.length;
    return p;
  });
}
