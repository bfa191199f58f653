import type { BinaryFn, ExprNode, ScalarType, UnaryFn, VarName } from './nodes.js';

/** A rendered sub-expression: an atom (a literal, a variable or a temporary) and its type. */
export interface RenderedOperand {
  readonly code: string;
  readonly type: ScalarType;
}

/**
 * One target language. Each method returns source text for one node kind; operands are always
 * atoms, so a renderer may repeat them freely. The WGSL and CUDA renderers implement this too.
 */
export interface ExprRenderer {
  literal(value: number, type: ScalarType): string;
  variable(name: VarName): string;
  unary(fn: UnaryFn, a: RenderedOperand, type: ScalarType): string;
  binary(fn: BinaryFn, a: RenderedOperand, b: RenderedOperand, type: ScalarType): string;
  select(cond: RenderedOperand, a: RenderedOperand, b: RenderedOperand, type: ScalarType): string;
  cast(a: RenderedOperand, to: ScalarType): string;
  /** Reads element `index` of captured tensor `slot`; out-of-range reads must give 0. */
  load(slot: number, type: ScalarType, index: RenderedOperand): string;
  /** The counter hash of i32 arguments as an f32 in [0, 1) (see hash32.ts for the algorithm). */
  hash(args: readonly RenderedOperand[]): string;
  /** A statement binding `name` to `value`. */
  declare(name: string, type: ScalarType, value: string): string;
}

export interface LoweredExpr {
  /** Statements to place before `result` is used, in order. */
  readonly statements: readonly string[];
  /** An atom holding the expression's value. */
  readonly result: string;
  readonly type: ScalarType;
}

/**
 * Lowers an expression to straight-line code: one temporary per distinct interior node
 * (structurally equal sub-trees share one), leaves inlined. Deterministic for a given node.
 */
export function lowerExpr(
  root: ExprNode,
  renderer: ExprRenderer,
  options: { prefix?: string } = {},
): LoweredExpr {
  const { statements, results } = lowerExprs([root], renderer, options);
  const [r] = results as [RenderedOperand];
  return { statements, result: r.code, type: r.type };
}

/**
 * Lowers several expressions into one straight-line block that shares temporaries between them
 * (a score modification and its gradient read the same sub-expressions).
 */
export function lowerExprs(
  roots: readonly ExprNode[],
  renderer: ExprRenderer,
  options: { prefix?: string } = {},
): { statements: readonly string[]; results: readonly RenderedOperand[] } {
  const prefix = options.prefix ?? 't';
  const statements: string[] = [];
  const byKey = new Map<string, RenderedOperand>();
  const byNode = new Map<ExprNode, RenderedOperand>();

  const visit = (node: ExprNode): RenderedOperand => {
    const done = byNode.get(node);
    if (done) return done;
    let out: RenderedOperand;
    if (node.op === 'const')
      out = { code: renderer.literal(node.value, node.type), type: node.type };
    else if (node.op === 'var') out = { code: renderer.variable(node.name), type: node.type };
    else {
      let key: string;
      let code: () => string;
      switch (node.op) {
        case 'unary': {
          const a = visit(node.a);
          key = `u:${node.fn}:${a.code}`;
          code = () => renderer.unary(node.fn, a, node.type);
          break;
        }
        case 'binary': {
          const a = visit(node.a);
          const b = visit(node.b);
          key = `b:${node.fn}:${node.type}:${a.code}:${b.code}`;
          code = () => renderer.binary(node.fn, a, b, node.type);
          break;
        }
        case 'select': {
          const c = visit(node.cond);
          const a = visit(node.a);
          const b = visit(node.b);
          key = `s:${node.type}:${c.code}:${a.code}:${b.code}`;
          code = () => renderer.select(c, a, b, node.type);
          break;
        }
        case 'cast': {
          const a = visit(node.a);
          key = `c:${node.type}:${a.code}`;
          code = () => renderer.cast(a, node.type);
          break;
        }
        case 'load': {
          const i = visit(node.index);
          key = `l:${node.tensor}:${i.code}`;
          code = () => renderer.load(node.tensor, node.type, i);
          break;
        }
        case 'hash': {
          const args = node.args.map(visit);
          key = `h:${args.map((a) => a.code).join(',')}`;
          code = () => renderer.hash(args);
          break;
        }
      }
      const shared = byKey.get(key);
      if (shared) out = shared;
      else {
        const name = `${prefix}${byKey.size}`;
        statements.push(renderer.declare(name, node.type, code()));
        out = { code: name, type: node.type };
        byKey.set(key, out);
      }
    }
    byNode.set(node, out);
    return out;
  };

  const results = roots.map(visit);
  return { statements, results };
}
