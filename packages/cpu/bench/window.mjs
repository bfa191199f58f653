// Causal sliding window 256 (B=1, H=4, D=64): blockwise ('tiled') vs naive strategy, time and
// peak RSS, each measurement in a fresh child process so peaks do not mix.
//
//   node tooling/scripts/run.mjs turbo run build --filter=@tessera/cpu   # builds core + cpu dist
//   node packages/cpu/bench/window.mjs                                  # N = 65536 and N = 4096
//
// Options: --n 65536 --small 4096 --window 256. Not a test: it prints a Markdown table.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { defineAttention, estimateCost, maskMod } from '@tessera/core';
import { createCpuBackend } from '../dist/index.js';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const WINDOW = opt('window', 256);
const shape = { batch: 1, headsQ: 4, headDim: 64 };

function specFor(n) {
  const mask = maskMod(({ q, kv }) => q.ge(kv).and(q.sub(kv).lt(WINDOW)), {
    name: `sliding-window(${WINDOW}, causal)`,
  });
  return defineAttention({ ...shape, seqQ: n, mask });
}

// xorshift32: cheap seeded inputs in [-1, 1).
function seeded(len, seed) {
  const out = new Float32Array(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x / 2 ** 31 - 1;
  }
  return out;
}

const mb = (bytes) => bytes / 2 ** 20;

async function child(strategy, n) {
  const spec = specFor(n);
  const len = shape.batch * shape.headsQ * n * shape.headDim;
  const inputs = { q: seeded(len, 1), k: seeded(len, 2), v: seeded(len, 3) };
  const backend = await createCpuBackend();
  const rssBefore = process.memoryUsage().rss;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const result = { strategy, n, rssBeforeMiB: mb(rssBefore) };
  try {
    const { out } = await backend.run(spec, inputs, { strategy });
    let sq = 0;
    for (const x of out) sq += x * x;
    result.outNorm = Math.sqrt(sq);
    result.ok = true;
  } catch (e) {
    result.ok = false;
    result.error = `${e.name}: ${e.message}`;
  }
  result.ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  result.cpuMs = (cpu.user + cpu.system) / 1000;
  result.peakRssMiB = process.resourceUsage().maxRSS / 1024; // maxRSS is in KiB
  const cost = estimateCost(spec, { strategy });
  result.computedPairs = cost.computedPairs;
  result.peakExtraBytes = cost.peakExtraBytes;
  process.stdout.write(JSON.stringify(result));
}

/** Both strategies in one process, for the error between them (not for memory). */
async function compare(n) {
  const spec = specFor(n);
  const len = shape.batch * shape.headsQ * n * shape.headDim;
  const inputs = { q: seeded(len, 1), k: seeded(len, 2), v: seeded(len, 3) };
  const backend = await createCpuBackend();
  const a = await backend.run(spec, inputs, { strategy: 'tiled' });
  const b = await backend.run(spec, inputs, { strategy: 'naive' });
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.out.length; i++) {
    num += (a.out[i] - b.out[i]) ** 2;
    den += b.out[i] ** 2;
  }
  let lse = 0;
  for (let i = 0; i < b.lse.length; i++) lse = Math.max(lse, Math.abs(a.lse[i] - b.lse[i]));
  process.stdout.write(JSON.stringify({ relErr: Math.sqrt(num / den), lseErr: lse }));
}

function runChild(strategy, n) {
  const text = execFileSync(
    process.execPath,
    [fileURLToPath(import.meta.url), '--child', strategy, String(n), '--window', String(WINDOW)],
    { encoding: 'utf8', maxBuffer: 1 << 20 },
  );
  return JSON.parse(text);
}

const fmt = (x, d = 0) =>
  x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

function row(r) {
  const time = r.ok ? `${fmt(r.ms / 1000, 2)} s` : `${fmt(r.ms, 1)} ms (refused)`;
  const cpu = r.ok ? `${fmt(r.cpuMs / 1000, 2)} s` : `${fmt(r.cpuMs, 1)} ms`;
  const extra = r.peakRssMiB - r.rssBeforeMiB;
  return `| ${fmt(r.n)} | ${r.strategy} | ${time} | ${cpu} | ${fmt(r.rssBeforeMiB)} MiB | ${fmt(r.peakRssMiB)} MiB | ${fmt(Math.max(0, extra))} MiB | ${r.ok ? fmt(r.computedPairs) : '—'} |`;
}

if (args[0] === '--child') {
  if (args[1] === 'compare') await compare(Number(args[2]));
  else await child(args[1], Number(args[2]));
} else {
  const big = opt('n', 65536);
  const small = opt('small', 4096);
  const results = [];
  for (const n of [big, small]) {
    for (const strategy of ['tiled', 'naive']) {
      const r = runChild(strategy, n);
      results.push(r);
      console.error(`N=${n} ${strategy}: ${r.ok ? `${fmt(r.ms)} ms` : r.error}`);
    }
  }
  console.log(
    `Causal sliding window ${WINDOW}, B=1, H=4, D=64, f32, blocks 64×64; Node ${process.version}.`,
  );
  console.log('');
  console.log(
    '| N | strategy | wall time | CPU time | RSS before run (inputs) | peak RSS | peak − before | (q, kv) pairs computed |',
  );
  console.log('|---:|---|---:|---:|---:|---:|---:|---:|');
  for (const r of results) console.log(row(r));
  for (const r of results.filter((x) => !x.ok))
    console.log(`\nN=${fmt(r.n)} naive: \`${r.error}\``);
  const t = results.find((r) => r.n === small && r.strategy === 'tiled');
  const nv = results.find((r) => r.n === small && r.strategy === 'naive');
  if (t?.ok && nv?.ok) {
    const err = runChild('compare', small);
    console.log(
      `\nN=${fmt(small)}: naive / tiled CPU time ${fmt(nv.cpuMs / t.cpuMs, 1)}×, peak-RSS growth ${fmt(nv.peakRssMiB - nv.rssBeforeMiB)} vs ${fmt(t.peakRssMiB - t.rssBeforeMiB)} MiB; outputs agree to ${err.relErr.toExponential(1)} (relative), lse to ${err.lseErr.toExponential(1)}.`,
    );
  }
}
