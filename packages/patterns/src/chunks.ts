import {
  BlockLayoutBuilder,
  ceilDiv,
  defineMask,
  type Mask,
  SpecError,
  tensor,
  vars,
} from '@tessera/core';
import { BlockCounter, intervalLayout, lowerBound, unitLayout } from './layout-helpers.js';
import { bool, options, positiveInt } from './validate.js';

const { q, kv } = vars;

/**
 * Block-diagonal: the sequence is cut into chunks of `chunk` tokens and each query attends to
 * every key of its own chunk: `⌊q/chunk⌋ == ⌊kv/chunk⌋`.
 */
export function blockDiagonal(chunk: number): Mask {
  const c = positiveInt('blockDiagonal', 'chunk', chunk);
  return defineMask(q.div(c).eq(kv.div(c)), {
    name: `block-diagonal(${c})`,
    layout: (ctx) => unitLayout(ctx, c, 1, (_h, u) => [u, u + 1]),
  });
}

/**
 * Chunked causal (local causal attention within chunks, as in Llama 4's chunked attention):
 * `⌊q/chunk⌋ == ⌊kv/chunk⌋ && kv ≤ q`.
 */
export function chunkedCausal(chunk: number): Mask {
  const c = positiveInt('chunkedCausal', 'chunk', chunk);
  const id = (x: number): number => Math.floor(x / c);
  return defineMask(q.div(c).eq(kv.div(c)).and(kv.le(q)), {
    name: `chunked-causal(${c})`,
    layout: (ctx) =>
      intervalLayout(
        ctx,
        // Rows [q0, q1) reach keys from their first chunk's start up to q1 − 1, without gaps.
        (q0, q1) => [id(q0) * c, q1],
        (q0, q1, k0, k1) =>
          id(q0) === id(q1 - 1) && id(k0) === id(q0) && id(k1 - 1) === id(q0) && k1 - 1 <= q0,
      ),
  });
}

export interface DocumentOptions {
  /** Also require kv ≤ q (causal attention inside each document). Default false. */
  readonly causal?: boolean;
}

/**
 * Documents packed into one sequence (jagged batches): `ids[t]` is the document of token t, and a
 * query attends to the keys of its own document: `ids[q] == ids[kv]` (and `kv ≤ q` when causal).
 * The ids are captured as a tensor, so every backend reads the same table; they need not be
 * sorted, but the layout is cheapest when each document is one contiguous run. Both sequence
 * lengths must be at most `ids.length`.
 */
export function document(ids: Int32Array | readonly number[], opts?: DocumentOptions): Mask {
  const where = 'document';
  const o = options<DocumentOptions>(where, opts, ['causal']);
  const isCausal = bool(where, 'causal', o.causal, false);
  if (!(ids instanceof Int32Array || Array.isArray(ids)) || ids.length === 0) {
    throw new SpecError(`${where}: ids must be a non-empty Int32Array with one id per token`);
  }
  const table = Int32Array.from(ids as ArrayLike<number>, (x, i) => {
    if (typeof x !== 'number' || !Number.isInteger(x) || x < -2147483648 || x > 2147483647) {
      throw new SpecError(`${where}: ids[${i}] must be an i32 integer (got ${String(x)})`);
    }
    return x;
  });
  // Maximal runs of equal ids, and the runs of each id.
  const runStart: number[] = [];
  const runId: number[] = [];
  const runsOf = new Map<number, number[]>();
  for (let t = 0; t < table.length; t++) {
    const x = table[t] as number;
    if (t > 0 && table[t - 1] === x) continue;
    const list = runsOf.get(x);
    if (list) list.push(runStart.length);
    else runsOf.set(x, [runStart.length]);
    runStart.push(t);
    runId.push(x);
  }
  const runEnd = (r: number): number =>
    r + 1 < runStart.length ? (runStart[r + 1] as number) : table.length;
  const runAt = (t: number): number => lowerBound(runStart, t + 1) - 1;

  const T = tensor(table);
  let expr = T.at(q).eq(T.at(kv));
  if (isCausal) expr = expr.and(kv.le(q));
  return defineMask(expr, {
    name: `document(${runsOf.size} docs${isCausal ? ', causal' : ''})`,
    layout: (ctx) => {
      for (const [k, n] of [
        ['seqQ', ctx.seqQ],
        ['seqKV', ctx.seqKV],
      ] as const) {
        if (n > table.length) {
          throw new SpecError(`${where}: ids has ${table.length} entries but ${k} is ${n}`);
        }
      }
      const { seqQ, seqKV, blockQ, blockKV } = ctx;
      const out = new BlockLayoutBuilder(ctx);
      const counter = new BlockCounter(ctx);
      const nq = ceilDiv(seqQ, blockQ);
      const lastQ = new Map<number, number>();
      for (let i = 0; i < nq; i++) {
        const q0 = i * blockQ;
        const q1 = Math.min(seqQ, q0 + blockQ);
        // The last row of each document present in this Q block.
        lastQ.clear();
        const first = runAt(q0);
        let r = first;
        for (; r < runStart.length && (runStart[r] as number) < q1; r++) {
          lastQ.set(runId[r] as number, Math.min(runEnd(r), q1) - 1);
        }
        const single = r - first === 1 ? (runId[first] as number) : undefined;
        for (const [id, qLast] of lastQ) {
          for (const s of runsOf.get(id) as number[]) {
            const a = runStart[s] as number;
            const b = Math.min(isCausal ? qLast + 1 : seqKV, runEnd(s), seqKV);
            if (a >= b) continue;
            for (let j = Math.floor(a / blockKV); j * blockKV < b; j++) {
              counter.touch(j);
            }
          }
        }
        counter.flush(out, q1 - q0, (j) => {
          if (single === undefined) return false;
          const k0 = j * blockKV;
          const k1 = Math.min(seqKV, k0 + blockKV);
          const s = runAt(k0);
          return runId[s] === single && runEnd(s) >= k1 && (!isCausal || k1 - 1 <= q0);
        });
      }
      return out.finish();
    },
  });
}
