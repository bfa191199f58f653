#!/usr/bin/env node
// Merges the report.json of several runs (e.g. one per device command) into one report, written
// with the bench's own writeReport: report.json, report.md, time.svg, memory.svg. Backends of the
// same name and device are joined case by case; peers are concatenated; commands are joined by
// " && ". Needs the built bench (node tooling/scripts/run.mjs turbo run build).
//   node apps/bench/scripts/merge-reports.mjs <out-dir> <report.json> [more report.json …]
import { readFileSync } from 'node:fs';
import { writeReport } from '../dist/index.js';

const [outDir, ...files] = process.argv.slice(2);
if (!outDir || files.length === 0) {
  console.error('usage: merge-reports.mjs <out-dir> <report.json> [more report.json …]');
  process.exit(2);
}
const reports = files.map((f) => JSON.parse(readFileSync(f, 'utf8')));
for (const [i, r] of reports.entries()) {
  if (r.schema !== 'tessera-bench' || r.version !== reports[0].version)
    throw new Error(`${files[i]}: not a tessera-bench report of version ${reports[0].version}`);
}
const backends = [];
for (const b of reports.flatMap((r) => r.backends)) {
  const same = backends.find((x) => x.name === b.name && x.device === b.device);
  if (same) same.results.push(...b.results);
  else backends.push({ ...b, results: [...b.results] });
}
const merged = {
  ...reports[0],
  createdAt: reports
    .map((r) => r.createdAt)
    .sort()
    .at(-1),
  command: reports.map((r) => r.command).join(' && '),
  backends,
  peers: reports.flatMap((r) => r.peers),
};
console.log((await writeReport(merged, outDir)).join('\n'));
