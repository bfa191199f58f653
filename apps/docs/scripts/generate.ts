// Build-time content of the site, bundled by scripts/build.mjs against the packages' sources:
//   - the pattern gallery: one PNG per catalog pattern, drawn by @tessera/patterns' `render`,
//     and its numbers from `stats`, in site/.vitepress/generated/gallery.json;
//   - the benchmark results: every results/**/report.json of the repository (schema
//     'tessera-bench' v1) with the charts beside it, in site/.vitepress/generated/bench.json.
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { render, stats } from '@tessera/patterns';
import { type BenchPage, benchPage } from '../lib/bench.js';
import { catalog, defaultParams } from '../lib/catalog.js';

export interface GalleryItem {
  readonly id: string;
  readonly title: string;
  readonly summary: string;
  readonly code: string;
  readonly image: string;
  readonly seq: number;
  readonly block: number;
  readonly density: number;
  readonly blockDensity: number;
  readonly fullBlocks: number;
  readonly partialBlocks: number;
}

export const GALLERY_SEQ = 256;
export const GALLERY_BLOCK = 32;

function gallery(siteDir: string): GalleryItem[] {
  const imageDir = join(siteDir, 'public', 'generated', 'gallery');
  rmSync(imageDir, { recursive: true, force: true });
  mkdirSync(imageDir, { recursive: true });
  return catalog.map((entry) => {
    const p = defaultParams(entry);
    const mask = entry.build(p, GALLERY_SEQ);
    const blocks = { blockQ: GALLERY_BLOCK, blockKV: GALLERY_BLOCK };
    const picture = render(mask, GALLERY_SEQ, GALLERY_SEQ, { size: 256, ...blocks });
    writeFileSync(join(imageDir, `${entry.id}.png`), picture.png);
    const s = stats(mask, GALLERY_SEQ, GALLERY_SEQ, blocks);
    return {
      id: entry.id,
      title: entry.title,
      summary: entry.summary,
      code: entry.code(p, GALLERY_SEQ),
      image: `/generated/gallery/${entry.id}.png`,
      seq: GALLERY_SEQ,
      block: GALLERY_BLOCK,
      density: s.density,
      blockDensity: s.blockDensity,
      fullBlocks: s.fullBlocks,
      partialBlocks: s.partialBlocks,
    };
  });
}

/** report.json files under `dir`, at most three folders deep, sorted by path. */
function findReports(dir: string, depth = 0): string[] {
  if (!existsSync(dir) || depth > 3) return [];
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => {
      const path = join(dir, e.name);
      if (e.isDirectory()) return findReports(path, depth + 1);
      return e.name === 'report.json' ? [path] : [];
    })
    .sort();
}

export interface BenchData {
  readonly pages: readonly BenchPage[];
  /** Reports that were found but could not be read, with the reason. */
  readonly problems: readonly string[];
}

function bench(siteDir: string, repoRoot: string): BenchData {
  const chartDir = join(siteDir, 'public', 'generated', 'bench');
  rmSync(chartDir, { recursive: true, force: true });
  const pages: BenchPage[] = [];
  const problems: string[] = [];
  findReports(join(repoRoot, 'results')).forEach((file, i) => {
    const source = relative(repoRoot, file);
    const dir = join(file, '..');
    const charts: { title: string; src: string }[] = [];
    for (const [name, title] of [
      ['time.svg', 'Time vs sequence length'],
      ['memory.svg', 'Memory beyond inputs and outputs'],
    ] as const) {
      if (!existsSync(join(dir, name))) continue;
      mkdirSync(join(chartDir, String(i)), { recursive: true });
      copyFileSync(join(dir, name), join(chartDir, String(i), name));
      charts.push({ title, src: `/generated/bench/${i}/${name}` });
    }
    try {
      pages.push(benchPage(JSON.parse(readFileSync(file, 'utf8')), source, charts));
    } catch (e) {
      problems.push(`${source}: ${e instanceof Error ? e.message : String(e)}`);
    }
  });
  return { pages, problems };
}

export async function generate({ docsDir, repoRoot }: { docsDir: string; repoRoot: string }) {
  const siteDir = join(docsDir, 'site');
  const generatedDir = join(siteDir, '.vitepress', 'generated');
  mkdirSync(generatedDir, { recursive: true });
  const items = gallery(siteDir);
  writeFileSync(join(generatedDir, 'gallery.json'), `${JSON.stringify(items, null, 2)}\n`);
  const data = bench(siteDir, repoRoot);
  writeFileSync(join(generatedDir, 'bench.json'), `${JSON.stringify(data, null, 2)}\n`);
  for (const p of data.problems) console.warn(`docs: benchmark report skipped: ${p}`);
}
