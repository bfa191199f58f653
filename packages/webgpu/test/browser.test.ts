// The browser example, end to end: bundle examples/browser/main.ts, serve the page on localhost,
// open it in Debian's headless Chromium (SwiftShader WebGPU) through playwright-core, and compare
// what the page computed with the CPU reference.
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createCpuBackend } from '@tessera/cpu';
import { build } from 'esbuild';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exampleInputs, exampleSpec } from '../examples/browser/main.js';
import { maxRelError } from './reference.js';

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
const dir = join(import.meta.dirname, '..', 'examples', 'browser');

let server: Server;
let origin = '';

beforeAll(async () => {
  const bundle = await build({
    entryPoints: [join(dir, 'main.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    conditions: ['source'],
    write: false,
    logLevel: 'warning',
  });
  const js = bundle.outputFiles[0]?.text ?? '';
  const html = readFileSync(join(dir, 'index.html'), 'utf8');
  server = createServer((req, res) => {
    if (req.url === '/' || req.url === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html' }).end(html);
    } else if (req.url === '/main.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(js);
    } else res.writeHead(404).end();
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  origin = `http://localhost:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((ok) => server?.close(ok));
});

describe('browser example', () => {
  it('runs the backend in headless Chromium and matches the CPU reference', async () => {
    expect(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`).toBe(true);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${origin}/index.html`);
      await page.waitForFunction(
        () => (window as { tessera?: unknown }).tessera !== undefined,
        null,
        {
          timeout: 90_000,
        },
      );
      const result = (await page.evaluate(() => (window as { tessera?: unknown }).tessera)) as {
        ok: boolean;
        error?: string;
        adapter?: string;
        out: number[];
        lse: number[];
      };
      expect(errors).toEqual([]);
      expect(result.error ?? '').toBe('');
      expect(result.ok).toBe(true);
      const spec = exampleSpec();
      const cpu = await createCpuBackend();
      const want = await cpu.run(spec, exampleInputs(spec));
      await cpu.dispose();
      expect(maxRelError(Float32Array.from(result.out), want.out)).toBeLessThan(1e-4);
      expect(maxRelError(Float32Array.from(result.lse), want.lse)).toBeLessThan(1e-4);
      expect(await page.textContent('#status')).toMatch(/^done on /);
    } finally {
      await browser.close();
    }
  }, 180_000);
});
