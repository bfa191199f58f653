import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { BackwardCaseResult, BackwardResult } from './backward.js';
import type { StrategyResult } from './measure.js';
import type { PeerResult } from './peers.js';
import { formatBytes } from './units.js';

export const SCHEMA_VERSION = 1;

export interface BenchReport {
  readonly schema: 'tessera-bench';
  readonly version: typeof SCHEMA_VERSION;
  readonly createdAt: string;
  readonly command: string;
  readonly machine: { readonly node: string; readonly platform: string; readonly cpus: number };
  readonly backends: readonly {
    readonly name: string;
    readonly device?: string;
    /** Per case; `backward` is present in backward mode (`--backward`). */
    readonly results: readonly BackwardCaseResult[];
  }[];
  readonly peers: readonly PeerResult[];
}

const fmt = (x: number | undefined, digits = 2) => (x === undefined ? '—' : x.toFixed(digits));

function cell(s: StrategyResult | undefined): { ms: string; tf: string; mem: string; err: string } {
  if (!s) return { ms: '', tf: '', mem: '', err: '' };
  if (s.status !== 'ok')
    return { ms: s.status, tf: '', mem: formatBytes(s.estimatedExtraBytes), err: '' };
  const mem =
    s.measuredExtraBytes != null
      ? formatBytes(s.measuredExtraBytes)
      : `~${formatBytes(s.estimatedExtraBytes)}`;
  return {
    ms: `${fmt(s.ms?.median, 3)} (${fmt(s.ms?.p10, 3)}–${fmt(s.ms?.p90, 3)})`,
    tf: s.tflops === undefined ? '—' : s.tflops.toPrecision(3),
    mem,
    err: s.relError === undefined ? '—' : s.relError.toExponential(1),
  };
}

/** One Markdown table per backend; peers' ratios where a peer ran the same case. */
export function markdown(report: BenchReport): string {
  const lines: string[] = [`Command: \`${report.command}\``, ''];
  for (const b of report.backends) {
    lines.push(`### ${b.name}${b.device ? ` (${b.device})` : ''}`, '');
    lines.push(
      '| case | B×H×D | dtype | density | tiled ms (p10–p90) | TFLOP/s | extra memory | rel. error | naive ms | naive extra memory | speed-up vs naive | peers (time ratio peer/ours) |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    );
    for (const r of b.results) {
      const t = cell(r.strategies.find((s) => s.strategy === 'tiled'));
      const n = cell(r.strategies.find((s) => s.strategy === 'naive'));
      const tm = r.strategies.find((s) => s.strategy === 'tiled')?.ms?.median;
      const nm = r.strategies.find((s) => s.strategy === 'naive')?.ms?.median;
      const speedup = tm && nm ? `${(nm / tm).toFixed(1)}×` : '';
      const peers = report.peers
        .filter(
          (p) =>
            p.caseId === r.id && p.mode !== 'backward' && p.status === 'ok' && p.ms !== undefined,
        )
        .map(
          (p) => `${p.peer} ${fmt(p.ms, 3)} ms (${tm ? ((p.ms as number) / tm).toFixed(2) : '—'})`,
        )
        .join('; ');
      lines.push(
        `| ${r.id} | ${r.batch}×${r.heads}${r.headsKV !== r.heads ? `/${r.headsKV}` : ''}×${r.dim} | ${r.dtype} | ${r.density.toFixed(3)} | ${t.ms} | ${t.tf} | ${t.mem} | ${t.err} | ${n.ms} | ${n.mem} | ${speedup} | ${peers} |`,
      );
    }
    lines.push('');
    if (b.results.some((r) => r.backward)) lines.push(...backwardTable(report, b.results), '');
  }
  lines.push(
    'Memory: "extra" is memory beyond q, k, v, out and lse; `~` marks the cost model\'s estimate where the backend does not measure it.',
  );
  if (report.backends.some((b) => b.results.some((r) => r.backward))) lines.push('', BACKWARD_NOTE);
  return lines.join('\n');
}

const BACKWARD_NOTE =
  "Backward: bwd ms = median(forward + backward) − median(forward), for ours and the peers alike; TFLOP/s = 2.5 × the forward FLOPs (4·B·H·D per computed pair, whole visited blocks; linear kernels: the cost model's feature-map count) / bwd ms, peers over the same FLOPs. Grad error: relative L2 of dq / dk / dv (and each learnable captured tensor) against the cpu backend's f64 backward, on the same case at the sequence length after `@`. Extra memory: device bytes beyond inputs, outputs and gradients where the backend reports them; peers: peak allocated beyond what was allocated before the call (out and the gradients included).";

function gradCell(r: BackwardResult): string {
  const e = r.gradError;
  if (!e) return '';
  if (e.status !== 'ok') return `${e.status} @${e.seq}`;
  const parts = [e.dq, e.dk, e.dv].map((x) => (x as number).toExponential(1));
  const grads = (e.grads ?? []).filter((x): x is number => x !== null);
  const tensors = grads.length > 0 ? ` / T ${grads.map((x) => x.toExponential(1)).join(', ')}` : '';
  return `${parts.join(' / ')}${tensors} @${e.seq}`;
}

function backwardTable(report: BenchReport, results: readonly BackwardCaseResult[]): string[] {
  const lines = [
    '#### backward',
    '',
    '| case | B×H×D | dtype | fwd ms | fwd+bwd ms (p10–p90) | bwd ms | bwd TFLOP/s | extra memory | grad rel. error dq / dk / dv (/ T) | timing | vs | peers bwd ms (TFLOP/s, ratio peer/ours) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of results) {
    const k = r.backward;
    if (!k) continue;
    const shape = `${r.batch}×${r.heads}${r.headsKV !== r.heads ? `/${r.headsKV}` : ''}×${r.dim}`;
    if (k.status !== 'ok') {
      lines.push(
        `| ${r.id} | ${shape} | ${r.dtype} | ${k.status}: ${(k.message ?? '').replace(/\|/g, '/').slice(0, 120)} | | | | | | | | |`,
      );
      continue;
    }
    const mem =
      k.extraDeviceBytes != null
        ? formatBytes(k.extraDeviceBytes)
        : k.peakDeviceBytes != null
          ? `peak ${formatBytes(k.peakDeviceBytes)}`
          : 'not reported';
    const base = k.bwdMs as number;
    const relTo = r.backwardRelativeTo
      ? results.find((x) => x.variant === r.backwardRelativeTo && x.seq === r.seq)
      : undefined;
    const vs =
      relTo?.backward?.bwdMs && base > 0
        ? `${(base / relTo.backward.bwdMs).toFixed(2)}× ${r.backwardRelativeTo}`
        : '';
    const peers = report.peers
      .filter((p) => p.caseId === r.id && p.mode === 'backward')
      .map((p) => {
        if (p.status !== 'ok' || p.ms === undefined) return `${p.peer} ${p.status}`;
        const tf = p.ms > 0 ? (k.flops / (p.ms * 1e-3) / 1e12).toPrecision(3) : '—';
        const ratio = base > 0 ? (p.ms / base).toFixed(2) : '—';
        const vsPeer = peerRatio(report, r, relTo, p.peer, p.ms);
        return `${p.peer} ${fmt(p.ms, 3)} ms (${tf}, ${ratio})${vsPeer}`;
      })
      .join('; ');
    lines.push(
      `| ${r.id} | ${shape} | ${r.dtype} | ${fmt(k.fwdMs?.median, 3)} | ${fmt(k.fwdBwdMs?.median, 3)} (${fmt(k.fwdBwdMs?.p10, 3)}–${fmt(k.fwdBwdMs?.p90, 3)}) | ${fmt(base, 3)} | ${k.tflops === undefined ? '—' : k.tflops.toPrecision(3)} | ${mem} | ${gradCell(k)} | ${k.timing ?? ''} | ${vs} | ${peers} |`,
    );
  }
  return lines;
}

/** A peer's backward on a case over its backward on the case it is compared with (e.g. causal). */
function peerRatio(
  report: BenchReport,
  r: BackwardCaseResult,
  relTo: BackwardCaseResult | undefined,
  peer: string,
  ms: number,
): string {
  if (!relTo) return '';
  const other = report.peers.find(
    (p) => p.caseId === relTo.id && p.mode === 'backward' && p.peer === peer && p.status === 'ok',
  );
  return other?.ms ? ` = ${(ms / other.ms).toFixed(1)}× its ${r.backwardRelativeTo}` : '';
}

interface Point {
  variant: string;
  seq: number;
  series: string;
  ms?: number;
  bytes?: number;
}

function points(report: BenchReport): Point[] {
  const pts: Point[] = [];
  for (const b of report.backends) {
    for (const r of b.results) {
      for (const s of r.strategies) {
        if (s.status !== 'ok') continue;
        pts.push({
          variant: r.variant,
          seq: r.seq,
          series: `${b.name} ${s.strategy}`,
          ms: s.ms?.median,
          bytes: s.measuredExtraBytes ?? s.estimatedExtraBytes,
        });
      }
      const k = r.backward;
      if (k?.status === 'ok' && k.bwdMs !== undefined && k.bwdMs > 0)
        pts.push({
          variant: r.variant,
          seq: r.seq,
          series: `${b.name} bwd`,
          ms: k.bwdMs,
          ...(k.extraDeviceBytes != null ? { bytes: k.extraDeviceBytes } : {}),
        });
    }
  }
  for (const p of report.peers) {
    if (p.status === 'ok' && p.ms !== undefined)
      pts.push({
        variant: p.variant,
        seq: p.seq,
        series: p.mode === 'backward' ? `${p.peer} bwd` : p.peer,
        ms: p.ms,
      });
  }
  return pts;
}

function chartSpec(pts: Point[], field: 'ms' | 'bytes', title: string): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    data: { values: pts.filter((p) => p[field] !== undefined && (p[field] as number) > 0) },
    facet: { field: 'variant', type: 'nominal', title: null },
    columns: 3,
    spec: {
      width: 260,
      height: 180,
      mark: { type: 'line', point: true },
      encoding: {
        x: {
          field: 'seq',
          type: 'quantitative',
          scale: { type: 'log', base: 2 },
          title: 'sequence length',
        },
        y: {
          field,
          type: 'quantitative',
          scale: { type: 'log' },
          title: field === 'ms' ? 'time (ms)' : 'extra memory (bytes)',
        },
        color: { field: 'series', type: 'nominal', title: 'backend / peer' },
      },
    },
  };
}

/** Renders a vega-lite spec to SVG text headlessly. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

/** Writes report.json, report.md, time.svg and memory.svg into `dir`; returns their paths. */
export async function writeReport(report: BenchReport, dir: string): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const files: [string, string][] = [
    ['report.json', `${JSON.stringify(report, null, 2)}\n`],
    ['report.md', `${markdown(report)}\n`],
  ];
  const pts = points(report);
  if (pts.length > 0) {
    files.push(['time.svg', await renderSvg(chartSpec(pts, 'ms', 'Time vs sequence length'))]);
    files.push([
      'memory.svg',
      await renderSvg(chartSpec(pts, 'bytes', 'Memory beyond inputs and outputs')),
    ]);
  }
  return files.map(([name, text]) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  });
}
