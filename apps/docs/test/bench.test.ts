// The benchmark results page reads the bench's report.json. The fixture is real output of
// `tessera-bench --backend cpu --suite causal --seq 128,256 --repeat 1 --heads 1 --dim 16 --out …`.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BenchReportError, benchPage } from '../lib/bench.js';

const fixture = JSON.parse(
  readFileSync(join(import.meta.dirname, 'fixtures', 'bench-report.json'), 'utf8'),
);

describe('benchPage', () => {
  it('turns a tessera-bench v1 report into one table per backend', () => {
    const page = benchPage(fixture, 'results/cpu/report.json', [
      { title: 'Time vs sequence length', src: '/generated/bench/0/time.svg' },
    ]);
    expect(page.source).toBe('results/cpu/report.json');
    expect(page.command).toContain('tessera-bench --backend cpu');
    expect(page.machine).toMatch(/^linux-x64, \d+ CPUs, Node v\d+/);
    expect(page.tables.map((t) => t.backend)).toEqual(['cpu']);
    const rows = page.tables[0]?.rows ?? [];
    expect(rows.map((r) => r.id)).toEqual(['causal/128', 'causal/256']);
    const raw = fixture.backends[0].results[0];
    const tiled = raw.strategies.find((s: { strategy: string }) => s.strategy === 'tiled');
    const naive = raw.strategies.find((s: { strategy: string }) => s.strategy === 'naive');
    expect(rows[0]?.shape).toBe('1×1×16');
    expect(rows[0]?.density).toBe(raw.density.toFixed(3));
    expect(rows[0]?.tiledMs.startsWith(tiled.ms.median.toFixed(2))).toBe(true);
    expect(rows[0]?.speedup).toBe(`${(naive.ms.median / tiled.ms.median).toFixed(1)}×`);
    expect(rows[0]?.extraMemory.startsWith('~')).toBe(true); // the CPU backend reports estimates
    expect(page.charts).toHaveLength(1);
  });

  it('rejects another schema or version, naming what it found', () => {
    expect(() => benchPage({ ...fixture, version: 2 }, 'r.json')).toThrow(
      /expected schema 'tessera-bench' version 1 \(got "tessera-bench" version 2\)/,
    );
    expect(() => benchPage({ schema: 'other' }, 'r.json')).toThrow(BenchReportError);
  });

  it('names the first field it cannot read', () => {
    const broken = structuredClone(fixture);
    broken.backends[0].results[1].seq = 'long';
    expect(() => benchPage(broken, 'r.json')).toThrow(
      'backends[0].results[1].seq must be a finite number',
    );
  });
});
