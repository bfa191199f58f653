import { SpecError } from '../errors.js';
import { type BuilderNode, TensorRef } from './builder.js';
import type { ExprNode } from './nodes.js';

/** Rebuilds an expression with each tensor reference mapped by `f`; rejects unknown node kinds. */
export function mapTensors<A, B>(node: ExprNode<A>, f: (t: A) => B): ExprNode<B> {
  const rec = (n: ExprNode<A>): ExprNode<B> => {
    switch (n?.op) {
      case 'const':
      case 'var':
        return Object.freeze({ ...n });
      case 'unary':
      case 'cast':
        return Object.freeze({ ...n, a: rec(n.a) });
      case 'binary':
        return Object.freeze({ ...n, a: rec(n.a), b: rec(n.b) });
      case 'select':
        return Object.freeze({ ...n, cond: rec(n.cond), a: rec(n.a), b: rec(n.b) });
      case 'hash':
        return Object.freeze({ ...n, args: Object.freeze(n.args.map(rec)) });
      case 'load':
        return Object.freeze({
          op: 'load',
          type: n.type,
          tensor: f(n.tensor),
          index: rec(n.index),
        });
      default:
        throw new SpecError(
          `unknown expression node ${JSON.stringify((n as { op?: unknown })?.op)}`,
        );
    }
  };
  return rec(node);
}

/** Replaces captured-tensor objects by slots in one shared table. */
export function resolveTensors(node: BuilderNode, slots: TensorRef[]): ExprNode {
  return mapTensors(node, (t) => {
    if (!(t instanceof TensorRef))
      throw new SpecError('load node must refer to a tensor() capture');
    const slot = slots.indexOf(t);
    return slot >= 0 ? slot : slots.push(t) - 1;
  });
}
