// The built site in a real browser: Debian's Chromium, driven by playwright-core, with the flags
// that give it a WebGPU adapter (SwiftShader). Visits every page reachable from the home page
// (no console errors, no broken internal links or anchors), runs the playground on WebGPU and
// checks its result against the CPU reference, and saves a screenshot of the playground in
// test-artifacts/playground.png.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineAttention } from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { causal } from '@tessera/patterns';
import { build } from 'esbuild';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configure, makeInputs, maxAbsDiff, TOLERANCE } from '../lib/engine.js';
import { parseState } from '../lib/state.js';
import { serveStatic } from '../scripts/static-server.mjs';

const docsDir = join(import.meta.dirname, '..');
const repoRoot = join(docsDir, '..', '..');
const dist = join(docsDir, 'site', '.vitepress', 'dist');
const artifacts = join(docsDir, 'test-artifacts');
const CHROMIUM = '/usr/bin/chromium';
const FLAGS = [
  '--enable-unsafe-webgpu',
  '--enable-features=Vulkan',
  '--headless=new',
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/** Newest modification time of the files under `dir`, skipping build outputs. */
function newest(dir: string): number {
  if (!existsSync(dir)) return 0;
  const skip = new Set([
    'node_modules',
    'dist',
    'cache',
    'generated',
    'api',
    '.tmp',
    'test-artifacts',
  ]);
  let t = statSync(dir).mtimeMs;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (skip.has(e.name) || e.name.startsWith('.turbo')) continue;
    const path = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(path) : statSync(path).mtimeMs);
  }
  return t;
}

/** Reuses site/.vitepress/dist when it is newer than everything it is built from, else builds. */
function ensureFreshBuild(): void {
  const builtAt = existsSync(join(dist, 'index.html'))
    ? statSync(join(dist, 'index.html')).mtimeMs
    : 0;
  const inputs = [
    ...['site', 'lib', 'scripts'].map((d) => join(docsDir, d)),
    ...readdirSync(join(repoRoot, 'packages')).map((p) => join(repoRoot, 'packages', p, 'src')),
    join(repoRoot, 'results'),
  ];
  if (inputs.every((dir) => newest(dir) < builtAt)) return;
  execFileSync(process.execPath, [join(docsDir, 'scripts', 'build.mjs')], {
    cwd: docsDir,
    stdio: 'inherit',
    timeout: 150_000,
  });
}

let server: { url: string; close: () => Promise<void> };
let context: BrowserContext;
let profile: string;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)`,
    );
  }
  ensureFreshBuild();
  server = await serveStatic(dist);
  profile = mkdtempSync(join(tmpdir(), 'tessera-docs-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1400, height: 1000 },
  });
}, 240_000);

afterAll(async () => {
  await context?.close();
  await server?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** Console errors, uncaught exceptions and failed same-origin requests of one page. */
function watch(page: Page): string[] {
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console.error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}`));
  page.on('requestfailed', (r) => {
    // Prefetches cut short by the next navigation are aborted, not broken; a missing file is a 404.
    const error = r.failure()?.errorText ?? '';
    if (error !== 'net::ERR_ABORTED') problems.push(`request failed: ${r.url()} ${error}`);
  });
  page.on('response', (r) => {
    if (r.url().startsWith(server.url) && r.status() >= 400) {
      problems.push(`HTTP ${r.status()} for ${r.url()}`);
    }
  });
  return problems;
}

describe('the docs site in Chromium', () => {
  it('serves every page without console errors, broken links or missing anchors', async () => {
    const page = await context.newPage();
    const problems = watch(page);
    const origin = server.url;
    const queue = ['/'];
    const seen = new Set(queue);
    const idsOf = new Map<string, Set<string>>();
    const links: { from: string; path: string; hash: string }[] = [];
    const errors: string[] = [];
    while (queue.length > 0) {
      const path = queue.shift() as string;
      const response = await page.goto(origin + path, { waitUntil: 'load' });
      expect(response?.status(), `status of ${path}`).toBe(200);
      // VitePress hydrates after load; give late errors (hydration mismatches) a moment to show.
      await page.waitForFunction(() => document.querySelector('#app')?.hasChildNodes());
      await page.waitForTimeout(150);
      errors.push(...problems.splice(0).map((p) => `${path}: ${p}`));
      const found = await page.evaluate(() => ({
        ids: Array.from(document.querySelectorAll('[id]'), (e) => e.id),
        hrefs: Array.from(
          document.querySelectorAll('a[href]'),
          (a) => (a as HTMLAnchorElement).href,
        ),
      }));
      idsOf.set(path, new Set(found.ids));
      for (const href of found.hrefs) {
        const url = new URL(href);
        if (url.origin !== origin) continue;
        links.push({ from: path, path: url.pathname, hash: decodeURIComponent(url.hash.slice(1)) });
        // Clean URLs are pages; a path with a file extension is a file (an image, a chart, a source).
        const isPage = !/\.[a-z0-9]+$/i.test(url.pathname) || url.pathname.endsWith('.html');
        if (isPage && !seen.has(url.pathname)) {
          seen.add(url.pathname);
          queue.push(url.pathname);
        }
      }
    }
    await page.close();

    const expected = [
      '/',
      '/guide/getting-started',
      '/guide/custom-variant',
      '/guide/cuda',
      '/concepts/spec',
      '/concepts/expressions',
      '/concepts/block-layouts',
      '/concepts/backends',
      '/gallery',
      '/variants',
      '/benchmarks',
      '/playground',
      '/api/',
      '/api/@tessera/core',
    ];
    expect([...seen]).toEqual(expect.arrayContaining(expected));
    expect(errors).toEqual([]);

    const broken = new Set<string>();
    for (const link of links) {
      const ids = idsOf.get(link.path);
      if (!ids) {
        // Not a page (an image or chart): it must still be served.
        const res = await fetch(origin + link.path);
        if (res.status !== 200) broken.add(`${link.from} → ${link.path} (HTTP ${res.status})`);
        continue;
      }
      if (link.hash && !ids.has(link.hash)) broken.add(`${link.from} → ${link.path}#${link.hash}`);
    }
    expect([...broken]).toEqual([]);
  }, 120_000);

  it('runs the playground on WebGPU and matches the CPU reference', async () => {
    const page = await context.newPage();
    const problems = watch(page);
    const adapter = await (async () => {
      await page.goto(`${server.url}/`);
      return page.evaluate(async () => {
        const a = await navigator.gpu?.requestAdapter();
        return a
          ? `${a.info?.vendor ?? ''} ${a.info?.architecture ?? ''}`.trim() || 'adapter'
          : null;
      });
    })();
    expect(adapter, 'Chromium offers a WebGPU adapter with these flags').not.toBeNull();

    const search =
      '?pattern=bigbird&window=3&globalBlocks=1&randomBlocks=2&block=16&maskSeed=7&seq=160&heads=2&dim=32&tile=32&backend=webgpu';
    await page.goto(`${server.url}/playground${search}`);
    await page.getByTestId('run').waitFor();
    // The controls show the configuration of the link.
    expect(await page.getByTestId('pattern').inputValue()).toBe('bigbird');
    expect(await page.getByTestId('seq').inputValue()).toBe('160');
    expect(await page.getByTestId('param-randomBlocks').inputValue()).toBe('2');
    expect(await page.getByTestId('density').textContent()).toMatch(/^\d+\.\d\d%$/);

    await page.getByTestId('run').click();
    await page
      .locator('[data-testid="status"][data-status="done"], [data-testid="run-error"]')
      .first()
      .waitFor({ timeout: 60_000 });
    expect(
      await page.getByTestId('run-error').count(),
      (await page.getByTestId('status').textContent()) ?? '',
    ).toBe(0);
    expect(await page.getByTestId('result-backend').textContent()).toBe('webgpu');
    expect(await page.getByTestId('verdict').getAttribute('data-matches')).toBe('true');
    const shownError = Number(await page.getByTestId('out-error').textContent());
    expect(shownError).toBeLessThanOrEqual(TOLERANCE.out);

    // Recompute the reference here, in Node, from the same configuration and seeded inputs.
    const run = await page.evaluate(() => {
      const r = (
        window as unknown as {
          __tesseraLastRun: {
            search: string;
            backend: string;
            out: Float32Array;
            lse: Float32Array;
          };
        }
      ).__tesseraLastRun;
      return {
        search: r.search,
        backend: r.backend,
        out: Array.from(r.out),
        lse: Array.from(r.lse),
      };
    });
    expect(run.backend).toBe('webgpu');
    const { state, problems: urlProblems } = parseState(run.search);
    expect(urlProblems).toEqual([]);
    const { spec } = configure(state);
    const cpu = await createCpuBackend();
    const ref = await cpu.run(spec, makeInputs(spec, state.seed), { strategy: 'naive' });
    const outError = maxAbsDiff(Float32Array.from(run.out), ref.out);
    const lseError = maxAbsDiff(Float32Array.from(run.lse), ref.lse);
    expect(outError).toBeLessThanOrEqual(TOLERANCE.out);
    expect(lseError).toBeLessThanOrEqual(TOLERANCE.lse);
    expect(Math.max(...ref.out.map(Math.abs))).toBeGreaterThan(0.01); // not a run on zeros

    // The generated WGSL is on view.
    await page.getByTestId('wgsl-details').locator('summary').click();
    await expect.poll(() => page.getByTestId('wgsl').textContent()).toContain('@compute');

    await page.getByTestId('param-randomBlocks').fill('3');
    await expect
      .poll(() => page.evaluate(() => window.location.search))
      .toContain('randomBlocks=3');

    mkdirSync(artifacts, { recursive: true });
    await page.getByTestId('param-randomBlocks').fill('2');
    await page.getByTestId('run').click();
    await page.locator('[data-testid="status"][data-status="done"]').waitFor({ timeout: 60_000 });
    // A tall viewport rather than fullPage: fixed headers would otherwise be painted mid-page.
    await page.setViewportSize({ width: 1400, height: 2000 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(artifacts, 'playground.png') });
    expect(problems).toEqual([]);
    await page.close();
  }, 120_000);

  it('falls back to the CPU backend when asked, and still matches the reference', async () => {
    const page = await context.newPage();
    const problems = watch(page);
    await page.goto(
      `${server.url}/playground?pattern=document&docLen=20&causal=1&seq=100&heads=1&dim=16&tile=16&backend=cpu&seed=3`,
    );
    await page.getByTestId('run').click();
    await page.locator('[data-testid="status"][data-status="done"]').waitFor({ timeout: 30_000 });
    expect(await page.getByTestId('result-backend').textContent()).toBe('cpu');
    expect(await page.getByTestId('verdict').getAttribute('data-matches')).toBe('true');
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  it('falls back to the CPU backend in a browser without WebGPU, and still shows the WGSL', async () => {
    const page = await context.newPage();
    const problems = watch(page);
    await page.addInitScript(() => {
      Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined });
    });
    await page.goto(
      `${server.url}/playground?pattern=strided&stride=8&seq=64&heads=1&dim=16&tile=16`,
    );
    expect(await page.getByTestId('backend').inputValue()).toBe('auto');
    await page.getByTestId('run').click();
    await page.locator('[data-testid="status"][data-status="done"]').waitFor({ timeout: 30_000 });
    expect(await page.getByTestId('result-backend').textContent()).toBe('cpu');
    expect(await page.getByTestId('fallback-note').textContent()).toContain('no WebGPU');
    expect(await page.getByTestId('verdict').getAttribute('data-matches')).toBe('true');
    await page.getByTestId('wgsl-details').locator('summary').click();
    await expect.poll(() => page.getByTestId('wgsl').textContent()).toContain('@compute');
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  it('runs the getting-started browser sample in Chromium on WebGPU', async () => {
    // The sample as a reader would bundle it, plus a line that hands its results to the test.
    const bundle = await build({
      stdin: {
        contents: [
          "import * as s from './samples/quickstart-browser.ts';",
          'window.__sample = { backend: s.backend.name, q: s.q, k: s.k, v: s.v, out: s.out, lse: s.lse };',
        ].join('\n'),
        resolveDir: docsDir,
        loader: 'ts',
      },
      bundle: true,
      format: 'esm',
      platform: 'browser',
      conditions: ['source'],
      write: false,
      logLevel: 'silent',
    });
    const page = await context.newPage();
    const problems = watch(page);
    await page.goto(`${server.url}/`);
    await page.addScriptTag({ type: 'module', content: bundle.outputFiles[0]?.text ?? '' });
    await page.waitForFunction(() => 'window' in globalThis && '__sample' in window, null, {
      timeout: 60_000,
    });
    const got = await page.evaluate(() => {
      const r = (window as unknown as { __sample: Record<string, Float32Array | string> }).__sample;
      const list = (x: Float32Array | string) => Array.from(x as Float32Array);
      return {
        backend: r.backend as string,
        q: list(r.q),
        k: list(r.k),
        v: list(r.v),
        out: list(r.out),
        lse: list(r.lse),
      };
    });
    expect(got.backend).toBe('webgpu');
    const spec = defineAttention({
      batch: 1,
      headsQ: 4,
      headsKV: 4,
      seqQ: 256,
      seqKV: 256,
      headDim: 32,
      dtype: 'f32',
      mask: causal(),
    });
    const cpu = await createCpuBackend();
    const f32 = (x: number[]) => Float32Array.from(x);
    const ref = await cpu.run(
      spec,
      { q: f32(got.q), k: f32(got.k), v: f32(got.v) },
      { strategy: 'naive' },
    );
    expect(maxAbsDiff(f32(got.out), ref.out)).toBeLessThanOrEqual(TOLERANCE.out);
    expect(maxAbsDiff(f32(got.lse), ref.lse)).toBeLessThanOrEqual(TOLERANCE.lse);
    expect(problems).toEqual([]);
    await page.close();
  }, 90_000);
});
