// Every code sample the site shows lives in samples/*.ts and is included into the pages with
// VitePress's `<<< @/../samples/<file>#<region>`. This test runs each sample against the real
// packages (in Node: the CPU backend; WebGPU through the `webgpu` package where this machine has an
// adapter; CUDA only where there is a GPU, else the sample reports it unavailable), checks its
// results against an independent dense computation, and checks that each `// prints: X` comment
// is what the sample printed. The browser sample takes its CPU path here (Node has no
// navigator.gpu); the browser test (e2e.test.ts) runs it in Chromium on WebGPU.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { format } from 'node:util';
import {
  compileJs,
  compileMask,
  exactBlockLayout,
  layoutContext,
  layoutsEqual,
} from '@tessera/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { denseAttention, maxAbsError, seededRandom } from './reference.js';

const docsDir = join(import.meta.dirname, '..');
const samplesDir = join(docsDir, 'samples');
const siteDir = join(docsDir, 'site');

/** f32 outputs of an f64-accumulating backend vs the f64 dense loops above. */
const CPU_TOL = 2e-6;
/** f32 arithmetic on a device (WebGPU, CUDA) vs the CPU reference. */
const DEVICE_TOL = 1e-4;

const samples = readdirSync(samplesDir)
  .filter((f) => f.endsWith('.ts'))
  .map((f) => f.replace(/\.ts$/, ''))
  .sort();

// biome-ignore lint/suspicious/noExplicitAny: a sample module's exports are checked per sample
type Module = Record<string, any>;

/** Imports a sample with Math.random seeded and console.log captured. */
async function runSample(name: string, seed: number): Promise<{ mod: Module; logs: string[] }> {
  const logs: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
    logs.push(format(...args));
  });
  vi.spyOn(Math, 'random').mockImplementation(seededRandom(seed));
  const mod = (await import(join(samplesDir, `${name}.ts`))) as Module;
  vi.restoreAllMocks();
  const expected = [
    ...readFileSync(join(samplesDir, `${name}.ts`), 'utf8').matchAll(/\/\/ prints: (.*)$/gm),
  ];
  for (const [, text] of expected)
    expect(logs, `${name}.ts should print "${text}"; it printed:\n${logs.join('\n')}\n`).toContain(
      text,
    );
  return { mod, logs };
}

afterEach(() => {
  vi.restoreAllMocks();
});

function markdownFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (e.name.startsWith('.') || e.name === 'api' || e.name === 'public') return [];
    const path = join(dir, e.name);
    return e.isDirectory() ? markdownFiles(path) : e.name.endsWith('.md') ? [path] : [];
  });
}

describe('the pages take their code from samples/', () => {
  const pages = markdownFiles(siteDir).map((path) => ({
    path: relative(siteDir, path),
    text: readFileSync(path, 'utf8'),
  }));
  const includes = pages.flatMap((p) =>
    [...p.text.matchAll(/^<<< @\/\.\.\/samples\/([\w-]+)\.ts(?:#([\w-]+))?/gm)].map((m) => ({
      page: p.path,
      sample: m[1] as string,
      region: m[2],
    })),
  );

  it('has no inline TypeScript or JavaScript code blocks that no test runs', () => {
    const inline = pages.flatMap((p) =>
      [...p.text.matchAll(/^```(ts|typescript|js|javascript|vue)\b/gm)].map(
        (m) => `${p.path}: ${m[0]}`,
      ),
    );
    expect(inline).toEqual([]);
  });

  it('includes only samples and regions that exist, and every sample somewhere', () => {
    expect(includes.length).toBeGreaterThan(10);
    for (const inc of includes) {
      expect(samples, `${inc.page} includes samples/${inc.sample}.ts`).toContain(inc.sample);
      if (inc.region) {
        const text = readFileSync(join(samplesDir, `${inc.sample}.ts`), 'utf8');
        expect(text, `${inc.page}: region ${inc.region} of ${inc.sample}.ts`).toContain(
          `// #region ${inc.region}\n`,
        );
        expect(text).toContain(`// #endregion ${inc.region}\n`);
      }
    }
    expect(new Set(includes.map((i) => i.sample))).toEqual(new Set(samples));
  });
});

describe('every sample runs and computes what the page says', () => {
  it('has a test for each sample file', () => {
    expect(samples).toEqual([
      'backends',
      'block-layouts',
      'cuda',
      'custom-variant',
      'expressions',
      'learnable-bias',
      'quickstart-browser',
      'quickstart-node',
      'spec',
      'variants',
    ]);
  });

  it('variants: a named system and a hand-written program, against independent dense attention', async () => {
    const { mod, logs } = await runSample('variants', 13);
    const shape = { batch: 1, headsQ: 4, headsKV: 4, seqQ: 512, seqKV: 512, headDim: 32 };
    const ref = denseAttention(shape, mod.q, mod.k, mod.v, { allowed: (_b, _h, q, kv) => kv <= q });
    // The error the sample reports is the error against an independent computation.
    let num = 0;
    let den = 0;
    for (let i = 0; i < ref.out.length; i++) {
      num += (mod.approx.out[i] - ref.out[i]) ** 2;
      den += ref.out[i] ** 2;
    }
    expect(Math.abs(Math.sqrt(num / den) - mod.err.relative)).toBeLessThan(1e-5);
    expect(mod.err.relative).toBeGreaterThan(0);
    expect(maxAbsError(mod.outputs.out, ref.out)).toBeLessThan(2);
    expect(maxAbsError(mod.outputs.out, ref.out)).toBeGreaterThan(0);
    expect(logs).toEqual(['sparse-projected true', '65536 true']);
  });

  it('quickstart-node: sliding-window GQA attention on the CPU', async () => {
    const { mod } = await runSample('quickstart-node', 11);
    const ref = denseAttention(
      { batch: 1, headsQ: 8, headsKV: 2, seqQ: 1024, seqKV: 1024, headDim: 64 },
      mod.q,
      mod.k,
      mod.v,
      { allowed: (_b, _h, q, kv) => kv <= q && q - kv < 128 },
    );
    expect(maxAbsError(mod.out, ref.out)).toBeLessThan(CPU_TOL);
    expect(maxAbsError(mod.lse, ref.lse)).toBeLessThan(CPU_TOL);
  });

  it('quickstart-browser: causal attention (CPU path in Node)', async () => {
    const { mod, logs } = await runSample('quickstart-browser', 12);
    expect(mod.backend.name).toBe('cpu');
    expect(logs[0]).toMatch(/^cpu on .+: \d+\.\d ms$/);
    const ref = denseAttention(
      { batch: 1, headsQ: 4, headsKV: 4, seqQ: 256, seqKV: 256, headDim: 32 },
      mod.q,
      mod.k,
      mod.v,
      { allowed: (_b, _h, q, kv) => kv <= q },
    );
    expect(maxAbsError(mod.out, ref.out)).toBeLessThan(CPU_TOL);
    expect(maxAbsError(mod.lse, ref.lse)).toBeLessThan(CPU_TOL);
  });

  it('spec: defaults, hash, JSON round trip and a SpecError', async () => {
    const { mod, logs } = await runSample('spec', 13);
    expect(mod.spec.scale).toBe(1 / Math.sqrt(128));
    expect(logs[0]).toBe(String(1 / Math.sqrt(128)));
    expect(mod.spec.hash).toMatch(/^[0-9a-f]{16,}$/);
    expect(logs).toContain(mod.spec.hash);
    expect(mod.copy.hash).toBe(mod.spec.hash);
    expect(mod.message).toContain('headsQ (12) must be a multiple of headsKV (5)');
  });

  it('expressions: ALiBi over a window matches dense attention; the other mods mean what they say', async () => {
    const { mod, logs } = await runSample('expressions', 14);
    const slopes = Array.from({ length: 4 }, (_, h) => 2 ** ((-8 * (h + 1)) / 4));
    const ref = denseAttention(
      { batch: 1, headsQ: 4, headsKV: 4, seqQ: 256, seqKV: 256, headDim: 32 },
      mod.q,
      mod.k,
      mod.v,
      {
        allowed: (_b, _h, q, kv) => kv <= q && q - kv < 64,
        modify: (s, _b, h, q, kv) => s - (slopes[h] as number) * (q - kv),
      },
    );
    expect(maxAbsError(mod.out, ref.out)).toBeLessThan(CPU_TOL);
    expect(maxAbsError(mod.lse, ref.lse)).toBeLessThan(CPU_TOL);
    // The page shows the printed JavaScript as text: it must be exactly what the sample printed.
    const page = readFileSync(join(siteDir, 'concepts', 'expressions.md'), 'utf8');
    const shown = page.match(/```text\n([\s\S]*?)\n```/)?.[1];
    expect(shown).toContain('function window(b, h, q, kv, score) {');
    expect(logs).toContain(shown);

    const softcap = compileJs(mod.softcap.expr.node);
    expect(softcap(0, 0, 0, 0, 100)).toBeCloseTo(30 * Math.tanh(100 / 30), 5);
    const sink = compileJs(mod.sinkBonus.expr.node);
    expect(sink(0, 0, 5, 0, 2)).toBe(3);
    expect(sink(0, 0, 5, 1, 2)).toBe(2);
    const drop = compileMask(mod.dropHalf);
    let kept = 0;
    for (let q = 0; q < 64; q++) for (let kv = 0; kv < 64; kv++) if (drop(0, 0, q, kv)) kept++;
    expect(kept / 4096).toBeGreaterThan(0.45);
    expect(kept / 4096).toBeLessThan(0.55);
  });

  it('block-layouts: the derived layout is the one the mask implies, block by block', async () => {
    const { mod } = await runSample('block-layouts', 15);
    const allowed = (q: number, kv: number) => (kv <= q && q - kv < 256) || kv < 64;
    // Classify query block 10's key blocks by brute force.
    const expected: string[] = [];
    for (let j = 0; j < 64; j++) {
      let on = 0;
      for (let q = 640; q < 704; q++)
        for (let kv = j * 64; kv < j * 64 + 64; kv++) if (allowed(q, kv)) on++;
      if (on > 0) expected.push(`${j}${on === 64 * 64 ? ' (full)' : ''}`);
    }
    expect(mod.visits).toEqual(expected);
    const ctx = layoutContext(mod.spec, { blockQ: 64, blockKV: 64 });
    expect(layoutsEqual(mod.layout, exactBlockLayout(mod.spec.mask.expr, [], ctx))).toBe(true);
    expect(mod.tiled.flops).toBeLessThan(mod.naive.flops / 4);
    expect(mod.tiled.peakExtraBytes).toBeLessThan(mod.naive.peakExtraBytes / 100);
  });

  it('backends: every available backend agrees with the naive reference', async () => {
    const { mod } = await runSample('backends', 16);
    const ref = denseAttention(
      { batch: 1, headsQ: 2, headsKV: 2, seqQ: 300, seqKV: 300, headDim: 32 },
      mod.inputs.q,
      mod.inputs.k,
      mod.inputs.v,
      { allowed: (_b, _h, q, kv) => kv <= q && q - kv < 48 },
    );
    expect(maxAbsError(mod.reference.out, ref.out)).toBeLessThan(CPU_TOL);
    expect(mod.results.cpu).toBeLessThan(CPU_TOL);
    for (const [name, err] of Object.entries(mod.results)) {
      expect(err, name).toBeLessThan(DEVICE_TOL);
    }
    expect(mod.inputMessage).toMatch(/\bk\b/);
  });

  it('custom-variant: sinks + window + decay + softcap, on every backend this machine has', async () => {
    const { mod } = await runSample('custom-variant', 17);
    const decay = Array.from({ length: 4 }, (_, h) => Math.fround(0.01 * 2 ** h));
    const ref = denseAttention(
      { batch: 1, headsQ: 4, headsKV: 2, seqQ: 640, seqKV: 640, headDim: 64 },
      mod.inputs.q,
      mod.inputs.k,
      mod.inputs.v,
      {
        allowed: (_b, _h, q, kv) => kv <= q && (q - kv < 192 || kv < 4),
        modify: (s, _b, h, q, kv) => Math.tanh((s - (decay[h] as number) * (q - kv)) / 20) * 20,
      },
    );
    expect(maxAbsError(mod.reference.out, ref.out)).toBeLessThan(CPU_TOL);
    expect(maxAbsError(mod.reference.lse, ref.lse)).toBeLessThan(CPU_TOL);
    expect(mod.errors.cpu).toBeLessThan(CPU_TOL);
    for (const [name, err] of Object.entries(mod.errors))
      expect(err, name).toBeLessThan(DEVICE_TOL);
    expect(mod.js).toContain('function sinksAndWindow(b, h, q, kv, score) {');
    expect(mod.wgsl).toContain('tanh');
    expect(mod.cuda).toContain('tanh');
  });

  it('learnable-bias: every backend recovers the hidden teacher slopes from its outputs', async () => {
    const { mod, logs } = await runSample('learnable-bias', 19);
    expect(
      logs.some((l) => l.startsWith('cpu: slopes after 300 steps [0.500, 0.250, 0.125, 0.06')),
    ).toBe(true);
    expect(Object.keys(mod.fitted)).toContain('cpu');
    // The student starts at 0.1 for every head and never sees the teacher's slopes.
    for (const [name, slopes] of Object.entries(mod.fitted as Record<string, Float32Array>)) {
      for (let h = 0; h < 4; h++)
        expect(
          Math.abs((slopes[h] as number) - (mod.teacherSlopes[h] as number)),
          `${name} h${h}`,
        ).toBeLessThan(2e-3);
    }
    // Every backend lands on the same values (they follow the same gradients from the same start).
    const cpu = mod.fitted.cpu as Float32Array;
    for (const slopes of Object.values(mod.fitted as Record<string, Float32Array>))
      for (let h = 0; h < 4; h++)
        expect(Math.abs((slopes[h] as number) - (cpu[h] as number))).toBeLessThan(1e-3);
  }, 120_000);

  it('cuda: emits CUDA C++ without a GPU, and says when there is none', async () => {
    const { mod, logs } = await runSample('cuda', 18);
    expect(mod.module.source).toContain('__global__');
    expect(mod.module.kernels.length).toBeGreaterThan(0);
    if (!mod.available) expect(logs.some((l) => l.startsWith('no CUDA here: '))).toBe(true);
  });
});
