/**
 * The expression IR: a small closed set of node kinds, plain JSON data.
 * Every backend renders each kind to its own source; nothing else exists.
 */

export type ScalarType = 'f32' | 'i32' | 'bool';

/** Index variables of a mask or score modification; `score` exists only in score modifications. */
export type VarName = 'score' | 'b' | 'h' | 'q' | 'kv';

export const UNARY_FNS = [
  'neg',
  'abs',
  'exp',
  'exp2',
  'log',
  'tanh',
  'sqrt',
  'floor',
  'not',
] as const;
export type UnaryFn = (typeof UNARY_FNS)[number];

export const ARITH_FNS = ['add', 'sub', 'mul', 'div', 'mod', 'min', 'max'] as const;
export const COMPARE_FNS = ['lt', 'le', 'gt', 'ge', 'eq', 'ne'] as const;
export const LOGIC_FNS = ['and', 'or'] as const;
export type ArithFn = (typeof ARITH_FNS)[number];
export type CompareFn = (typeof COMPARE_FNS)[number];
export type LogicFn = (typeof LOGIC_FNS)[number];
export type BinaryFn = ArithFn | CompareFn | LogicFn;

/**
 * `T` is how a captured tensor is referred to: an object while an expression is being built,
 * a slot number in the spec's `tensors` table once the spec is normalised.
 */
export type ExprNode<T = number> =
  | { readonly op: 'const'; readonly type: ScalarType; readonly value: number }
  | { readonly op: 'var'; readonly type: ScalarType; readonly name: VarName }
  | {
      readonly op: 'unary';
      readonly type: ScalarType;
      readonly fn: UnaryFn;
      readonly a: ExprNode<T>;
    }
  | {
      readonly op: 'binary';
      readonly type: ScalarType;
      readonly fn: BinaryFn;
      readonly a: ExprNode<T>;
      readonly b: ExprNode<T>;
    }
  | {
      readonly op: 'select';
      readonly type: ScalarType;
      readonly cond: ExprNode<T>;
      readonly a: ExprNode<T>;
      readonly b: ExprNode<T>;
    }
  | { readonly op: 'cast'; readonly type: ScalarType; readonly a: ExprNode<T> }
  | {
      readonly op: 'load';
      readonly type: ScalarType;
      readonly tensor: T;
      readonly index: ExprNode<T>;
    }
  | { readonly op: 'hash'; readonly type: 'f32'; readonly args: readonly ExprNode<T>[] };

export const VAR_TYPES: Readonly<Record<VarName, ScalarType>> = {
  score: 'f32',
  b: 'i32',
  h: 'i32',
  q: 'i32',
  kv: 'i32',
};

/** Children of a node, in evaluation order. */
export function children<T>(node: ExprNode<T>): readonly ExprNode<T>[] {
  switch (node.op) {
    case 'const':
    case 'var':
      return [];
    case 'unary':
    case 'cast':
      return [node.a];
    case 'binary':
      return [node.a, node.b];
    case 'select':
      return [node.cond, node.a, node.b];
    case 'load':
      return [node.index];
    case 'hash':
      return node.args;
  }
}

/** Names of the index variables an expression reads. */
export function varsUsed<T>(node: ExprNode<T>): Set<VarName> {
  const seen = new Set<VarName>();
  const visit = (n: ExprNode<T>): void => {
    if (n.op === 'var') seen.add(n.name);
    for (const c of children(n)) visit(c);
  };
  visit(node);
  return seen;
}
