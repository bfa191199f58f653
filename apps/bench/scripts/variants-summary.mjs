#!/usr/bin/env node
// The summary table of the variants suite (packages/variants/README.md and the docs' variants
// page) from the suite's JSON files: decode state saved and peak memory at the largest N, time vs
// exact at every N, error on structured inputs at a chosen N and on the fixture.
//   node apps/bench/scripts/variants-summary.mjs <variants.json> [more.json …] [--error-seq 16384]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { 'error-seq': { type: 'string', default: '16384' } },
});
const errorSeq = Number(values['error-seq']);
const rows = positionals.flatMap((f) =>
  JSON.parse(readFileSync(f, 'utf8')).results.flatMap((r) => r.rows),
);
const ok = rows.filter((r) => r.status === 'ok');
const structured = ok.filter((r) => r.source === 'structured');
const seqs = [...new Set(structured.map((r) => r.seq))].sort((a, b) => a - b);
const top = seqs.at(-1);
const fixture = ok.find((r) => r.source.startsWith('fixture'))?.source;
const k = (n) => (n % 1024 === 0 ? `${n / 1024}k` : String(n));
const pct = (x, d = 1) => `${(100 * x).toFixed(d)}%`;
const find = (system, source, seq) =>
  ok.find(
    (r) => r.system === system && r.source === source && (seq === undefined || r.seq === seq),
  );
const names = [...new Set(rows.map((r) => r.system))];

console.log(
  `| system | decode state saved (${k(top)}) | peak memory vs exact (${k(top)}) | time vs exact ${seqs.map(k).join(' / ')} | error, structured ${k(errorSeq)} (rel. / 1−cos) | error, real (${fixture ?? 'no fixture'}) |`,
);
console.log('|---|---|---|---|---|---|');
for (const name of names) {
  const big = find(name, 'structured', top);
  const times = seqs.map((n) => {
    const r = find(name, 'structured', n);
    return r ? `${(r.ms / r.exactMs).toFixed(2)}×` : '—';
  });
  const err = (r) => (r ? `${pct(r.relError)} / ${pct(r.cosError, 2)}` : '—');
  console.log(
    `| ${name} | ${big ? pct(1 - big.kvState / big.exactKvState) : '—'} | ${big ? `${(big.peakBytes / big.exactPeakBytes).toFixed(2)}×` : '—'} | ${times.join(' / ')} | ${err(find(name, 'structured', errorSeq))} | ${fixture ? err(find(name, fixture)) : '—'} |`,
  );
}
const failed = rows.filter((r) => r.status !== 'ok');
for (const r of failed) console.log(`\nfailed: ${r.system} ${r.source} ${k(r.seq)}: ${r.message}`);
