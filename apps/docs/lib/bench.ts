// Reads the benchmark's report.json (schema 'tessera-bench', version 1, written by apps/bench with
// --out) into the rows of the benchmark results page. Only the fields the page shows are read, and
// each is checked, so a report from a newer bench fails loudly instead of rendering blanks.

export interface BenchRow {
  readonly id: string;
  readonly variant: string;
  readonly seq: number;
  readonly shape: string;
  readonly dtype: string;
  readonly density: string;
  readonly tiledMs: string;
  readonly tflops: string;
  readonly extraMemory: string;
  readonly error: string;
  readonly naiveMs: string;
  readonly speedup: string;
  readonly peers: string;
}

export interface BenchTable {
  readonly backend: string;
  readonly device: string;
  readonly rows: readonly BenchRow[];
}

export interface BenchPage {
  /** Where the report was read, relative to the repository root. */
  readonly source: string;
  readonly createdAt: string;
  readonly command: string;
  readonly machine: string;
  readonly tables: readonly BenchTable[];
  /** Site paths of the charts the bench drew beside the report (time.svg, memory.svg). */
  readonly charts: readonly { readonly title: string; readonly src: string }[];
}

export class BenchReportError extends Error {
  override name = 'BenchReportError';
}

type Json = Record<string, unknown>;

function obj(x: unknown, where: string): Json {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) {
    throw new BenchReportError(`${where} must be an object`);
  }
  return x as Json;
}
function arr(x: unknown, where: string): unknown[] {
  if (!Array.isArray(x)) throw new BenchReportError(`${where} must be an array`);
  return x;
}
function str(x: unknown, where: string): string {
  if (typeof x !== 'string') throw new BenchReportError(`${where} must be a string`);
  return x;
}
function num(x: unknown, where: string): number {
  if (typeof x !== 'number' || !Number.isFinite(x)) {
    throw new BenchReportError(`${where} must be a finite number`);
  }
  return x;
}
const optNum = (x: unknown, where: string): number | undefined =>
  x === undefined || x === null ? undefined : num(x, where);

export function formatBytes(x: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = x;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

const ms = (x: number | undefined) => (x === undefined ? '' : x.toFixed(x < 1 ? 3 : 2));

interface Strategy {
  status: string;
  median?: number;
  p10?: number;
  p90?: number;
  tflops?: number;
  extra: string;
  relError?: number;
}

function strategy(x: unknown, where: string): [string, Strategy] {
  const s = obj(x, where);
  const name = str(s.strategy, `${where}.strategy`);
  const status = str(s.status, `${where}.status`);
  const estimated = num(s.estimatedExtraBytes, `${where}.estimatedExtraBytes`);
  const measured = optNum(s.measuredExtraBytes, `${where}.measuredExtraBytes`);
  const t = s.ms === undefined ? undefined : obj(s.ms, `${where}.ms`);
  return [
    name,
    {
      status,
      median: t ? num(t.median, `${where}.ms.median`) : undefined,
      p10: t ? num(t.p10, `${where}.ms.p10`) : undefined,
      p90: t ? num(t.p90, `${where}.ms.p90`) : undefined,
      tflops: optNum(s.tflops, `${where}.tflops`),
      extra: measured === undefined ? `~${formatBytes(estimated)}` : formatBytes(measured),
      relError: optNum(s.relError, `${where}.relError`),
    },
  ];
}

/** The page's view of one report; throws BenchReportError naming the first field it cannot read. */
export function benchPage(
  raw: unknown,
  source: string,
  charts: BenchPage['charts'] = [],
): BenchPage {
  const report = obj(raw, source);
  if (report.schema !== 'tessera-bench' || report.version !== 1) {
    throw new BenchReportError(
      `${source}: expected schema 'tessera-bench' version 1 (got ${JSON.stringify(report.schema)} version ${JSON.stringify(report.version)})`,
    );
  }
  const machine = obj(report.machine, 'machine');
  const peers = arr(report.peers, 'peers').map((p, i) => obj(p, `peers[${i}]`));
  const tables = arr(report.backends, 'backends').map((b, bi): BenchTable => {
    const backend = obj(b, `backends[${bi}]`);
    const rows = arr(backend.results, `backends[${bi}].results`).map((r, ri): BenchRow => {
      const where = `backends[${bi}].results[${ri}]`;
      const c = obj(r, where);
      const id = str(c.id, `${where}.id`);
      const heads = num(c.heads, `${where}.heads`);
      const headsKV = num(c.headsKV, `${where}.headsKV`);
      const strategies = new Map(
        arr(c.strategies, `${where}.strategies`).map((s, si) =>
          strategy(s, `${where}.strategies[${si}]`),
        ),
      );
      const tiled = strategies.get('tiled');
      const naive = strategies.get('naive');
      const tiledOk = tiled?.status === 'ok' ? tiled : undefined;
      const naiveOk = naive?.status === 'ok' ? naive : undefined;
      const peerText = peers
        .filter((p) => p.caseId === id && p.status === 'ok' && typeof p.ms === 'number')
        .map((p) => `${String(p.peer)} ${ms(p.ms as number)} ms`)
        .join('; ');
      return {
        id,
        variant: str(c.variant, `${where}.variant`),
        seq: num(c.seq, `${where}.seq`),
        shape: `${num(c.batch, `${where}.batch`)}×${heads}${headsKV !== heads ? `/${headsKV}` : ''}×${num(c.dim, `${where}.dim`)}`,
        dtype: str(c.dtype, `${where}.dtype`),
        density: num(c.density, `${where}.density`).toFixed(3),
        tiledMs: tiledOk
          ? `${ms(tiledOk.median)} (${ms(tiledOk.p10)}–${ms(tiledOk.p90)})`
          : (tiled?.status ?? ''),
        tflops: tiledOk?.tflops === undefined ? '' : tiledOk.tflops.toPrecision(3),
        extraMemory: tiled?.extra ?? '',
        error: tiledOk?.relError === undefined ? '' : tiledOk.relError.toExponential(1),
        naiveMs: naiveOk ? ms(naiveOk.median) : (naive?.status ?? ''),
        speedup:
          tiledOk?.median && naiveOk?.median
            ? `${(naiveOk.median / tiledOk.median).toFixed(1)}×`
            : '',
        peers: peerText,
      };
    });
    return {
      backend: str(backend.name, `backends[${bi}].name`),
      device: backend.device === undefined ? '' : str(backend.device, `backends[${bi}].device`),
      rows,
    };
  });
  return {
    source,
    createdAt: str(report.createdAt, 'createdAt'),
    command: str(report.command, 'command'),
    machine: `${str(machine.platform, 'machine.platform')}, ${num(machine.cpus, 'machine.cpus')} CPUs, Node ${str(machine.node, 'machine.node')}`,
    tables,
    charts,
  };
}
