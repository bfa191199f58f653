/**
 * Feature maps for `compressed` steps with a kernel and for grouped linear `attend` steps: the
 * linear spec a step's kernel names, and the device features of its queries and keys/summaries,
 * written by that spec's linear-module feature kernel (emit/linear.ts), so the maps, input
 * scaling, stabilisers and random matrix are the linear path's.
 */
import {
  type AttentionSpec,
  type CompressedStep,
  defineAttention,
  type Shape,
  UnsupportedError,
} from '@tessera/core';
import {
  compressedKernelConfig,
  featureDim,
  linearInputScales,
  randomFeatureMatrix,
} from '@tessera/core/backend';
import { type CudaModuleSource, emitCuda, packParams } from '../emit/index.js';
import type { CudaContext } from '../runtime/context.js';
import type { DeviceBuffer } from '../runtime/device.js';

interface DeviceTensor {
  readonly shape: Shape;
  readonly buffer: DeviceBuffer;
}

/** Writes feature rows on one device; holds the random matrices it uploaded until dispose. */
export class FeatureWriter {
  private readonly matrices = new Map<string, Promise<DeviceBuffer>>();

  constructor(
    private readonly context: CudaContext,
    private readonly alloc: (bytes: number) => DeviceBuffer,
  ) {}

  async dispose(): Promise<void> {
    for (const m of this.matrices.values()) (await m.catch(() => null))?.release();
    this.matrices.clear();
  }

  /**
   * The stabilised features of the queries and of the summaries of a compressed step with a
   * kernel, written by the feature kernel of the linear module for the same feature map (so the
   * maps, scaling and stabilisers are the linear path's); buffers go to `temps`.
   */
  write(
    step: CompressedStep,
    q: DeviceTensor,
    k: DeviceTensor,
    temps: DeviceBuffer[],
  ): Promise<Record<string, bigint>> {
    return this.writeFor(
      compressedSpec(step, q.shape, k.shape),
      `compressed '${step.out}'`,
      q,
      k,
      temps,
    );
  }

  /**
   * The stabilised features (`phi_q`, `stab_q`, `phi_k`, `stab_k`) of `q` and `k` under the linear
   * spec `spec`, written by its linear module's feature kernel; `what` names the step in errors.
   */
  async writeFor(
    spec: AttentionSpec,
    what: string,
    q: DeviceTensor,
    k: DeviceTensor,
    temps: DeviceBuffer[],
  ): Promise<Record<string, bigint>> {
    if (spec.kernel.type !== 'linear') throw new Error('not a linear spec');
    let module: CudaModuleSource;
    try {
      module = emitCuda(spec);
    } catch (e) {
      if (e instanceof UnsupportedError) throw new UnsupportedError(`cuda: ${what}: ${e.message}`);
      throw e;
    }
    const { functions } = await this.context.loadModule(module, `${spec.hash}-features`);
    const entry = module.kernels[0];
    const fn = functions[0];
    if (!entry || fn === undefined) throw new Error('linear module has no feature kernel');
    const F = featureDim(spec);
    const { featureMap } = spec.kernel;
    const random = featureMap === 'favor+' || featureMap === 'trig-rf';
    const w = random ? await this.matrix(spec) : null;
    const scales = linearInputScales(spec.scale);
    const ptrs: Record<string, bigint> = {};
    for (const [name, t, mul] of [
      ['q', q, scales.query],
      ['k', k, scales.key],
    ] as const) {
      const [B, heads, seq, D] = t.shape;
      const phi = this.alloc(4 * B * heads * seq * F);
      temps.push(phi);
      const stab = this.alloc(4 * B * heads * seq);
      temps.push(stab);
      const params = packParams(entry.params, {
        src: t.buffer.ptr,
        phi: phi.ptr,
        stab: stab.ptr,
        w: w?.ptr ?? 0n,
        s_b: heads * seq * D,
        s_h: seq * D,
        s_r: D,
        heads,
        seq,
        scale: mul,
      });
      const grid = [Math.ceil((B * heads * seq) / 4), 1, 1] as const; // 4 rows (warps) per block
      this.context.launch(fn, entry, grid, params);
      ptrs[`phi_${name}`] = phi.ptr;
      ptrs[`stab_${name}`] = stab.ptr;
    }
    return ptrs;
  }

  /** Core's random feature matrix of a favor+ spec on the device, uploaded once per matrix. */
  private matrix(spec: AttentionSpec): Promise<DeviceBuffer> {
    if (spec.kernel.type !== 'linear') throw new Error('not a linear spec');
    const kernel = spec.kernel;
    const key = `${kernel.featureMap}|${kernel.features}|${kernel.seed}|${spec.headDim}`;
    let m = this.matrices.get(key);
    if (!m) {
      m = (async () => {
        const data = randomFeatureMatrix(kernel, spec.headDim);
        const b = this.alloc(data.byteLength);
        try {
          await this.context.cuda.upload(b, data);
        } catch (e) {
          b.release();
          throw e;
        }
        return b;
      })();
      this.matrices.set(key, m);
      m.catch(() => this.matrices.delete(key));
    }
    return m;
  }
}

const specCache = new WeakMap<CompressedStep, AttentionSpec>();

/**
 * The linear spec whose feature map a compressed step's kernel names (as the cpu reference builds
 * it): queries are its q rows, summaries its keys. Its feature kernel is launched, not its scan.
 */
export function compressedSpec(step: CompressedStep, q: Shape, k: Shape): AttentionSpec {
  const hit = specCache.get(step);
  if (hit) return hit;
  const km = step.kernel;
  if (!km) throw new Error('compressed step without a kernel');
  const kernel = compressedKernelConfig(km);
  const spec = defineAttention({
    batch: q[0],
    headsQ: q[1],
    headsKV: k[1],
    seqQ: q[2],
    seqKV: k[2],
    headDim: q[3],
    scale: step.scale,
    kernel,
  });
  specCache.set(step, spec);
  return spec;
}
