/**
 * The `variants` suite: every standard system of @tessera/variants against exact attention on the
 * same backend, side by side in one run — time, peak memory of the program's device values, the
 * decode state a system keeps instead of the KV cache, and the error of its output.
 */
import {
  type AttentionBackend,
  DeviceValue,
  InputError,
  type ProgramInput,
  type Shape,
} from '@tessera/core';
import {
  adaptInputs,
  compactGrouped,
  compress,
  errorStats,
  exact,
  runSystem,
  type System,
  standardBlock,
  standardSystems,
  structuredInputs,
} from '@tessera/variants';
import { loadFixture as readFixture } from '@tessera/variants/fixtures';
import { formatSeq } from './units.js';

export interface QKV {
  readonly q: Float32Array;
  readonly k: Float32Array;
  readonly v: Float32Array;
}

export interface VariantsInput {
  /** 'structured' (seeded synthetic) or the fixture's name. */
  readonly source: string;
  readonly heads: number;
  readonly seq: number;
  readonly dim: number;
  readonly qkv: QKV;
}

export interface VariantRow {
  readonly system: string;
  readonly source: string;
  readonly seq: number;
  readonly status: 'ok' | 'failed';
  readonly message?: string;
  /** Median wall time of a run (inputs already on the device; includes reading `out` back). */
  readonly ms?: number;
  readonly exactMs?: number;
  readonly peakBytes?: number;
  readonly exactPeakBytes?: number;
  readonly kvState: number;
  readonly exactKvState: number;
  readonly relError?: number;
  readonly cosError?: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};

/** Uploads a host tensor once, so timed runs start with their inputs on the device. */
async function resident(
  backend: AttentionBackend,
  data: Float32Array,
  shape: Shape,
): Promise<DeviceValue> {
  const ops = backend.program;
  if (!ops) throw new InputError(`backend '${backend.name}' does not run programs`);
  return new DeviceValue(ops, shape, await ops.upload(data, shape));
}

/** Runs every standard system on one input set; rows in catalogue order, exact first. */
export async function measureVariants(
  backend: AttentionBackend,
  input: VariantsInput,
  opts: { causal: boolean; warmup: number; repeat: number; only?: readonly string[] },
  onSystem?: (name: string) => void,
): Promise<VariantRow[]> {
  const shape = { headsQ: input.heads, seq: input.seq, headDim: input.dim, causal: opts.causal };
  const systems = standardSystems(shape).filter(
    (s) => s.name === 'exact' || !opts.only || opts.only.includes(s.name),
  );
  const held: DeviceValue[] = [];
  const upload = async (data: Float32Array, sh: Shape) => {
    const d = await resident(backend, data, sh);
    held.push(d);
    return d;
  };
  const rows: VariantRow[] = [];
  let exactOut: Float32Array | null = null;
  let exactRow: VariantRow | null = null;
  try {
    const full: Record<number, Record<'q' | 'k' | 'v', DeviceValue>> = {};
    const inputsFor = async (sys: System) => {
      const hk = sys.shape.headsKV;
      if (!full[hk]) {
        const a = adaptInputs(sys, input.qkv, input.heads);
        const s = (h: number): Shape => [1, h, input.seq, input.dim];
        full[hk] = {
          q: await upload(a.q, s(input.heads)),
          k: await upload(a.k, s(hk)),
          v: await upload(a.v, s(hk)),
        };
      }
      return full[hk] as Record<'q' | 'k' | 'v', DeviceValue>;
    };
    for (const sys of systems) {
      onSystem?.(sys.name);
      const base = {
        system: sys.name,
        source: input.source,
        seq: input.seq,
        kvState: sys.kvState,
        exactKvState: (systems[0] as System).kvState,
      };
      try {
        const qkv = await inputsFor(sys);
        const weights: Record<string, ProgramInput> = {};
        // Routers' centroids are fitted (k-means) to this input's own queries and keys, as an
        // online k-means router tracks the data it sees.
        const fitted = sys.calibrate?.(adaptInputs(sys, input.qkv, input.heads)) ?? {};
        for (const [name, w] of Object.entries({ ...sys.weights, ...fitted })) {
          const sh = sys.program.inputs[name] ?? sys.shared?.inputs[name];
          if (sh && name in sys.program.inputs) weights[name] = await upload(w, sh);
        }
        let last: Awaited<ReturnType<typeof runSystem>> | null = null;
        const times: number[] = [];
        for (let r = 0; r < opts.warmup + opts.repeat; r++) {
          const t0 = performance.now();
          last = await runSystem(backend, sys, qkv, undefined, weights);
          if (r >= opts.warmup) times.push(performance.now() - t0);
        }
        const res = last as NonNullable<typeof last>;
        if (!res.out.every(Number.isFinite)) throw new Error('output has non-finite values');
        if (sys.name === 'exact') exactOut = res.out;
        const err = exactOut ? errorStats(res.out, exactOut, input.dim) : undefined;
        const row: VariantRow = {
          ...base,
          status: 'ok',
          ms: median(times),
          peakBytes: res.peakBytes,
          ...(exactRow ? { exactMs: exactRow.ms, exactPeakBytes: exactRow.peakBytes } : {}),
          ...(err ? { relError: err.relative, cosError: err.cosine } : {}),
        };
        if (sys.name === 'exact') {
          exactRow = row;
          rows.push({ ...row, exactMs: row.ms, exactPeakBytes: row.peakBytes });
        } else rows.push(row);
      } catch (e) {
        rows.push({ ...base, status: 'failed', message: (e as Error).message.split('\n')[0] });
      }
    }
  } finally {
    for (const d of held) d.release();
  }
  return rows;
}

/**
 * Reads one layer of a real-attention fixture (qkv.json + qkv-L<layer>.bin, f16, bhsd; default
 * the last layer) with @tessera/variants' fixture loader, as an input set of this suite.
 */
export async function loadFixture(
  dir: string,
  layer?: number,
): Promise<VariantsInput & { readonly layers: readonly number[] }> {
  const fx = await readFixture(dir, layer);
  return {
    source: `fixture-L${fx.layer}`,
    heads: fx.heads,
    seq: fx.seq,
    dim: fx.headDim,
    qkv: { q: fx.q, k: fx.k, v: fx.v },
    layers: fx.meta.layers,
  };
}

export function structured(heads: number, seq: number, dim: number, seed = 1): VariantsInput {
  return {
    source: 'structured',
    heads,
    seq,
    dim,
    qkv: structuredInputs({ headsQ: heads, seq, headDim: dim }, seed),
  };
}

const mib = (b?: number) => (b === undefined ? '—' : (b / 2 ** 20).toFixed(1));
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** The variants table in Markdown. */
export function variantsMarkdown(backend: string, rows: readonly VariantRow[]): string {
  const lines = [
    `### variants on ${backend}`,
    '',
    '| system | input | N | ms | time vs exact | peak MiB | peak vs exact | decode state saved | rel. error | 1 − cos |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    if (r.status === 'failed') {
      lines.push(
        `| ${r.system} | ${r.source} | ${formatSeq(r.seq)} | failed: ${r.message} | | | | | | |`,
      );
      continue;
    }
    const t = r.ms !== undefined && r.exactMs ? `${(r.ms / r.exactMs).toFixed(2)}×` : '—';
    const m =
      r.peakBytes && r.exactPeakBytes ? `${(r.peakBytes / r.exactPeakBytes).toFixed(2)}×` : '—';
    lines.push(
      `| ${r.system} | ${r.source} | ${formatSeq(r.seq)} | ${r.ms?.toFixed(2)} | ${t} | ${mib(r.peakBytes)} | ${m} | ${pct(1 - r.kvState / r.exactKvState)} | ${r.relError?.toExponential(2) ?? '—'} | ${r.cosError?.toExponential(2) ?? '—'} |`,
    );
  }
  return lines.join('\n');
}

export interface CrossLayerRow {
  /** Whose keys and values the shared compression was computed from. */
  readonly compression: string;
  readonly status: 'ok' | 'failed';
  readonly message?: string;
  /** Median time of the attention program alone (the compression already on the device). */
  readonly ms?: number;
  readonly relError?: number;
  readonly cosError?: number;
}

/**
 * Cross-layer reuse of Compact Grouped's compression on the fixture: layer `to`'s attention with
 * its own compression, and with the one computed once from layer `from`'s keys and values, both
 * against exact attention of layer `to`.
 */
export async function measureCrossLayer(
  backend: AttentionBackend,
  from: VariantsInput,
  to: VariantsInput,
  opts: { warmup: number; repeat: number },
): Promise<CrossLayerRow[]> {
  const shape = { headsQ: to.heads, seq: to.seq, headDim: to.dim, causal: true };
  const sys = compactGrouped(shape, { block: standardBlock(to.seq), fraction: 0.175, seed: 10 });
  const exactOut = (await runSystem(backend, exact(shape), to.qkv)).out;
  const rows: CrossLayerRow[] = [];
  for (const [label, source] of [
    [`own (${to.source})`, to],
    [`shared from ${from.source}`, from],
  ] as const) {
    let shared: Awaited<ReturnType<typeof compress>> | null = null;
    try {
      shared = await compress(backend, sys, source.qkv);
      const times: number[] = [];
      let out: Float32Array | null = null;
      for (let r = 0; r < opts.warmup + opts.repeat; r++) {
        const t0 = performance.now();
        out = (await runSystem(backend, sys, to.qkv, shared.values)).out;
        if (r >= opts.warmup) times.push(performance.now() - t0);
      }
      const err = errorStats(out as Float32Array, exactOut, to.dim);
      rows.push({
        compression: label,
        status: 'ok',
        ms: median(times),
        relError: err.relative,
        cosError: err.cosine,
      });
    } catch (e) {
      rows.push({
        compression: label,
        status: 'failed',
        message: (e as Error).message.split('\n')[0],
      });
    } finally {
      for (const v of Object.values(shared?.values ?? {})) v.release();
    }
  }
  return rows;
}

export function crossLayerMarkdown(backend: string, rows: readonly CrossLayerRow[]): string {
  return [
    `### cross-layer reuse (compact-grouped) on ${backend}`,
    '',
    '| compression | ms (attention only) | rel. error | 1 − cos |',
    '|---|---|---|---|',
    ...rows.map((r) =>
      r.status === 'failed'
        ? `| ${r.compression} | failed: ${r.message} | | |`
        : `| ${r.compression} | ${r.ms?.toFixed(2)} | ${r.relError?.toExponential(2)} | ${r.cosError?.toExponential(2)} |`,
    ),
  ].join('\n');
}
