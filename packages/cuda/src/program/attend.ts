/**
 * `attend` restricted to a selection: the spec's flash kernel walking the selection's layout
 * instead of the static one. A kernel that cannot take the selection's key blocks walks the
 * selection expanded on the device into its own key blocks; blocks no flash kernel takes are
 * walked by a per-row kernel (f32 specs).
 */
import { type AttendStep, type BlockLayout, ceilDiv, UnsupportedError } from '@tessera/core';
import { SIMT_BLOCK_KV } from '../emit/flash-simt.js';
import { type CudaModuleSource, emitCuda, launchGeometry, packParams } from '../emit/index.js';
import type { DeviceBuffer } from '../runtime/device.js';
import { PROGRAM_THREADS } from './emit.js';
import {
  emitExpandSelection,
  emitSelectedRows,
  SELECTED_ROWS_MAX_COLUMNS,
} from './emit-attention.js';
import type { ProgramRunner } from './runner.js';
import { type CudaSelectionValue, type CudaTensorValue, type Env, tensorOf } from './values.js';

/** A flash module that walks a selection, and the key block it walks it in. */
export interface SelectedFlash {
  readonly module: CudaModuleSource;
  readonly blockKV: number;
}

/**
 * How an attend walks `sel`: a flash module (selectedModule) when one takes the selection's blocks,
 * else, for f32 specs, the per-row kernel ('rows'); a 16-bit spec on such blocks is refused with
 * an UnsupportedError naming the dtype.
 */
export function selectedWalk(step: AttendStep, sel: CudaSelectionValue): SelectedFlash | 'rows' {
  try {
    return selectedModule(step, sel);
  } catch (e) {
    if (!(e instanceof UnsupportedError)) throw e;
    if (step.spec.dtype === 'f32') return 'rows';
    throw new UnsupportedError(
      `${e.message}; the per-row kernel for such blocks runs f32 specs only (got dtype '${step.spec.dtype}')`,
    );
  }
}

/**
 * The flash module that walks `sel` for `step`: at the selection's blocks when the kernel takes
 * them, else at the CUDA-core key block when that divides the selection's (the selection is then
 * expanded); otherwise UnsupportedError naming the step, the selection and the blocks.
 */
function selectedModule(step: AttendStep, sel: CudaSelectionValue): SelectedFlash {
  const { blockQ, blockKV } = sel.layout;
  let first: UnsupportedError;
  try {
    return { module: emitCuda(step.spec, { blockQ, blockKV }), blockKV };
  } catch (e) {
    if (!(e instanceof UnsupportedError)) throw e;
    first = e;
  }
  if (blockKV % SIMT_BLOCK_KV === 0) {
    try {
      const module = emitCuda(step.spec, { blockQ, blockKV: SIMT_BLOCK_KV });
      return { module, blockKV: SIMT_BLOCK_KV };
    } catch (e) {
      if (!(e instanceof UnsupportedError)) throw e;
    }
  }
  throw new UnsupportedError(
    `cuda: attend '${step.out}' cannot walk selection '${step.selection}' (blocks ${blockQ}×${blockKV}): ${first.message}`,
  );
}

/**
 * The spec's flash kernel at the selection's block shape, walking the selection's layout. A
 * kernel that cannot take the selection's key blocks (the CUDA-core one takes 32 keys) walks
 * the selection expanded on the device into its own key blocks (same keys, see expandSelection).
 */
export async function runFlashOnSelection(
  runner: ProgramRunner,
  step: AttendStep,
  sel: CudaSelectionValue,
  flash: SelectedFlash,
  q: bigint,
  k: bigint,
  v: bigint,
  out: bigint,
  lse: bigint,
): Promise<void> {
  const { spec } = step;
  const { module, blockKV } = flash;
  if (spec.batch > 65535 || spec.headsQ > 65535)
    throw new UnsupportedError(
      `cuda: batch and headsQ must be at most 65535 (got ${spec.batch}, ${spec.headsQ})`,
    );
  const { blockQ } = sel.layout;
  const label = `${spec.hash}-${module.path}-${blockQ}x${blockKV}-selected`;
  const { functions } = await runner.context.loadModule(module, label);
  const entry = module.kernels[0];
  const fn = functions[0];
  if (!entry || fn === undefined) throw new Error('softmax module has no kernel');
  const captured = await runner.capturedOf(spec);
  const temps: DeviceBuffer[] = [];
  try {
    const walk =
      blockKV === sel.layout.blockKV ? sel : await expandSelection(runner, sel, blockKV, temps);
    const geometry = launchGeometry(spec, module, walk.layout);
    const values: Record<string, bigint | number> = {
      q,
      k,
      v,
      out,
      lse,
      row_start: walk.rowStart.ptr,
      kv_blocks: walk.kvBlocks.ptr,
      full: walk.full.ptr,
      layout_batches: walk.layout.batches,
      layout_heads: walk.layout.heads,
    };
    captured.forEach((b, i) => {
      values[`t${i}`] = b.ptr;
    });
    if (geometry.order) {
      const order = runner.alloc(geometry.order.byteLength);
      temps.push(order);
      await runner.upload(order, geometry.order);
      values.q_order = order.ptr;
    }
    runner.context.launch(fn, entry, geometry.grid, packParams(entry.params, values));
  } finally {
    // Later work on the default stream is ordered after this launch, so reuse is safe.
    for (const t of temps) t.release();
  }
}

/**
 * Selected attend for key blocks the flash kernel cannot take (fewer than 32 keys, or not a
 * multiple of 32): one warp per query row walks its query block's selected blocks on the device
 * (emitSelectedRows), with the spec's mask and score pipeline. f32 specs (selectedWalk checks).
 */
export async function runRowsOnSelection(
  runner: ProgramRunner,
  step: AttendStep,
  sel: CudaSelectionValue,
  env: Env,
): Promise<Record<string, CudaTensorValue>> {
  const { spec } = step;
  if (spec.headDimV > SELECTED_ROWS_MAX_COLUMNS)
    throw new UnsupportedError(
      `cuda: attend '${step.out}' on selection '${step.selection}' (blocks ${sel.layout.blockQ}×${sel.layout.blockKV}) takes at most ${SELECTED_ROWS_MAX_COLUMNS} value columns (got ${spec.headDimV})`,
    );
  if (spec.batch > 65535 || spec.headsQ > 65535)
    throw new UnsupportedError(
      `cuda: batch and headsQ must be at most 65535 (got ${spec.batch}, ${spec.headsQ})`,
    );
  const [q, k, v] = [step.q, step.k, step.v].map((n) => tensorOf(env, n)) as [
    CudaTensorValue,
    CudaTensorValue,
    CudaTensorValue,
  ];
  const { blockQ, blockKV, batches, heads } = sel.layout;
  const kernel = emitSelectedRows(spec, { blockQ, blockKV, batches, heads });
  const captured = await runner.capturedOf(spec);
  const out = runner.output(env, step.out);
  const lse =
    step.lse !== undefined
      ? runner.output(env, step.lse)
      : { buffer: runner.alloc(4 * spec.batch * spec.headsQ * spec.seqQ) };
  try {
    const values: Record<string, bigint> = {
      q: q.buffer.ptr,
      k: k.buffer.ptr,
      v: v.buffer.ptr,
      out: out.buffer.ptr,
      lse: lse.buffer.ptr,
      sel_start: sel.rowStart.ptr,
      sel_blocks: sel.kvBlocks.ptr,
    };
    captured.forEach((b, i) => {
      values[`t${i}`] = b.ptr;
    });
    await runner.launch(kernel, values);
  } catch (e) {
    out.buffer.release();
    lse.buffer.release();
    throw e;
  }
  if (step.lse === undefined) {
    lse.buffer.release(); // ordered after the launch on the default stream
    return { [step.out]: out };
  }
  return { [step.out]: out, [step.lse]: lse as CudaTensorValue };
}

/**
 * `sel` as a selection of `blockKV`-key blocks, built on the device from its entries (they never
 * leave it); buffers go to `temps`. Its host layout's row starts are upper bounds (M × the
 * selection's): the exact ones, less the sub-blocks past the last key, are on the device.
 */
async function expandSelection(
  runner: ProgramRunner,
  sel: CudaSelectionValue,
  blockKV: number,
  temps: DeviceBuffer[],
): Promise<Pick<CudaSelectionValue, 'layout' | 'rowStart' | 'kvBlocks' | 'full'>> {
  const l = sel.layout;
  const m = l.blockKV / blockKV;
  const rows = l.rowStart.length - 1;
  const bound = m * (l.rowStart[rows] as number);
  const buffer = (bytes: number): DeviceBuffer => {
    const b = runner.alloc(bytes);
    temps.push(b);
    return b;
  };
  const drops = buffer(4 * PROGRAM_THREADS);
  const rowStart = buffer(4 * (rows + 1));
  const kvBlocks = buffer(4 * bound);
  const full = buffer(bound); // partial, as the selection's: the mask applies
  runner.context.cuda.fill(full, 0);
  await runner.launch(emitExpandSelection({ rows, blockKV: l.blockKV, seqKV: l.seqKV }, blockKV), {
    sel_start: sel.rowStart.ptr,
    sel_blocks: sel.kvBlocks.ptr,
    drops: drops.ptr,
    out_start: rowStart.ptr,
    out_blocks: kvBlocks.ptr,
  });
  const layout: BlockLayout = {
    ...l,
    blockKV,
    numKVBlocks: ceilDiv(l.seqKV, blockKV),
    rowStart: l.rowStart.map((x) => m * x),
  };
  return { layout, rowStart, kvBlocks, full };
}
