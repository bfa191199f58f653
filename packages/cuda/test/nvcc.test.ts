// Every kernel the generator emits for the conformance catalogue (and this package's own generator
// cases) must compile with `nvcc -cubin` for sm_80 and sm_90, without register spills. CI has nvcc
// but no GPU; a missing nvcc fails this test with a clear message rather than skipping it.
// Sources are deduplicated by hash, wrapped in one namespace each and compiled a few dozen per
// translation unit (nvcc's start-up dominates single kernels), one nvcc per core. A unit that
// compiled cleanly leaves a marker keyed by its text, the architecture and nvcc's version under
// node_modules/.cache, so an unchanged unit is not rebuilt on the next run of the same checkout.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import type { AttentionSpec } from '@tessera/core';
import { describe, expect, it } from 'vitest';
import { emitCuda, type KernelEntry } from '../src/emit/index.js';
import { compileWithNvcc, findNvcc, nvccVersion } from '../src/runtime/compiler.js';
import { generatorCases } from './cases.js';
import { catalogueSpecs } from './catalogue.js';

const ARCHS = ['sm_80', 'sm_90'];
const PER_UNIT = 24;
const MAX_SPILL_BYTES = 64;
const MARKERS = join(
  import.meta.dirname,
  '..',
  '..',
  '..',
  'node_modules',
  '.cache',
  'tessera-cuda-nvcc',
);

interface Unit {
  readonly source: string;
  /** First line of each case in `source`, ascending, for naming the case an error is in. */
  readonly starts: readonly { line: number; name: string }[];
  /** Kernel name → case name. */
  readonly kernels: ReadonlyMap<string, string>;
}

function units(
  sources: readonly { name: string; source: string; kernels: readonly KernelEntry[] }[],
): Unit[] {
  const out: Unit[] = [];
  for (let i = 0; i < sources.length; i += PER_UNIT) {
    let text = '';
    let line = 1;
    const starts: { line: number; name: string }[] = [];
    const kernels = new Map<string, string>();
    sources.slice(i, i + PER_UNIT).forEach((s, j) => {
      starts.push({ line, name: s.name });
      for (const k of s.kernels) kernels.set(k.name, s.name);
      const block = `// case ${s.name}\nnamespace tsr_case_${i + j} {\n${s.source}\n}  // namespace\n`;
      text += block;
      line += block.split('\n').length - 1;
    });
    out.push({ source: text, starts, kernels });
  }
  return out;
}

function caseAtLine(unit: Unit, line: number): string {
  let name = '?';
  for (const s of unit.starts) if (s.line <= line) name = s.name;
  return name;
}

async function pool<T>(
  items: readonly T[],
  width: number,
  f: (x: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await f(items[next++] as T);
    }),
  );
}

describe('generated CUDA compiles with nvcc', () => {
  it('finds nvcc (CI has the CUDA toolkit; set NVCC or CUDA_HOME if it lives elsewhere)', () => {
    expect(
      findNvcc(),
      'nvcc not found: looked at $NVCC, $CUDA_HOME/bin, /usr/local/cuda/bin and PATH',
    ).not.toBeNull();
  });

  it('compiles every catalogue and generator kernel for sm_80 and sm_90 without spills', async () => {
    const specs: [string, AttentionSpec][] = [
      ...catalogueSpecs(),
      ...Object.entries(generatorCases),
    ];
    const byHash = new Map<
      string,
      { name: string; source: string; kernels: readonly KernelEntry[] }
    >();
    for (const [name, spec] of specs) {
      const m = emitCuda(spec);
      const key = createHash('sha256').update(m.source).digest('hex');
      if (!byHash.has(key)) byHash.set(key, { name, source: m.source, kernels: m.kernels });
    }
    expect(byHash.size).toBeGreaterThan(Object.keys(generatorCases).length);
    const jobs = units([...byHash.values()]).flatMap((unit) =>
      ARCHS.map((arch) => ({ unit, arch })),
    );
    const failures: string[] = [];
    const spills: string[] = [];
    let compiled = 0;
    let cached = 0;
    const nvcc = findNvcc() as string;
    const version = await nvccVersion(nvcc);
    mkdirSync(MARKERS, { recursive: true });
    await pool(jobs, Math.max(2, cpus().length), async ({ unit, arch }) => {
      const marker = join(
        MARKERS,
        createHash('sha256').update(`${version}\0${arch}\0${unit.source}`).digest('hex'),
      );
      if (existsSync(marker)) {
        compiled += unit.kernels.size;
        cached++;
        return;
      }
      try {
        const { log } = await compileWithNvcc(unit.source, { arch, extraArgs: ['-Xptxas', '-v'] });
        const before = spills.length;
        let current = '';
        for (const line of log.split('\n')) {
          const fn = /Function properties for (\S+)/.exec(line);
          if (fn) current = fn[1] as string;
          const spill = /(\d+) bytes spill stores/.exec(line);
          if (spill && Number(spill[1]) > MAX_SPILL_BYTES)
            spills.push(`${unit.kernels.get(current) ?? current} (${arch}): ${spill[0]}`);
        }
        compiled += unit.kernels.size;
        if (spills.length === before)
          writeFileSync(marker, `${arch} ${unit.kernels.size} kernels\n`);
      } catch (e) {
        const log = (e as { log?: string }).log ?? (e as Error).message;
        const errors = log
          .split('\n')
          .filter((l) => /error/.test(l))
          .slice(0, 5)
          .map((l) => {
            const at = /\((\d+)\): error/.exec(l);
            return `${at ? caseAtLine(unit, Number(at[1])) : '?'} (${arch}): ${l.trim()}`;
          });
        failures.push(...(errors.length > 0 ? errors : [`(${arch}): ${log.slice(0, 2000)}`]));
      }
    });
    console.log(
      `nvcc ${version}: ${byHash.size} distinct kernels × ${ARCHS.length} archs in ${jobs.length} units (${cached} unchanged since a clean compile)`,
    );
    expect(failures).toEqual([]);
    expect(spills).toEqual([]);
    expect(compiled).toBeGreaterThanOrEqual(byHash.size * ARCHS.length);
  }, 900_000);
});
