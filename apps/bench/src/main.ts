import { join, resolve } from 'node:path';
import type { AttentionBackend, Dtype } from '@tessera/core';
import { createCpuBackend, referenceRows } from '@tessera/cpu';
import { SingleBar } from 'cli-progress';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { BACKENDS, type BackendName, loadBackend, loadBest } from './backends.js';
import {
  type BackwardCaseResult,
  type GradientErrors,
  type GradientReference,
  measureBackward,
} from './backward.js';
import { measureCase } from './measure.js';
import { type PeerResult, runPeers } from './peers.js';
import { type BenchReport, markdown, SCHEMA_VERSION, writeReport } from './report.js';
import './patterns.js';
import { buildCases, SUITES, type SuiteName } from './suites.js';
import { parseInts, parseSizes } from './units.js';
import {
  type CrossLayerRow,
  crossLayerMarkdown,
  loadFixture,
  measureCrossLayer,
  measureVariants,
  structured,
  type VariantRow,
  type VariantsInput,
  variantsMarkdown,
} from './variants.js';

interface Flags {
  backend: BackendName | 'all' | 'best';
  suite: string;
  seq?: number[];
  dtype: Dtype;
  batch: number;
  heads?: number;
  kvHeads?: number;
  dim: number;
  repeat?: number;
  warmup: number;
  baseline: boolean;
  peers: boolean;
  emit: boolean;
  out?: string;
  sampleRows: number;
  progress: boolean;
  fixture?: string;
  bidirectional: boolean;
  systems?: string;
  backward: boolean;
  gradCheckSeq: number;
  only?: string;
}

const int = (flag: string) => (v: string) => {
  try {
    return parseInts(v, flag)[0] as number;
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
};

const count = (flag: string) => (v: string) => {
  if (!/^\d+$/.test(v))
    throw new InvalidArgumentError(`${flag}: '${v}' must be a whole number ≥ 0`);
  return Number(v);
};

function parseSuites(text: string): SuiteName[] {
  if (text === 'all') return [...SUITES].filter((s) => s !== 'variants');
  return text.split(',').map((s) => {
    if (!(SUITES as readonly string[]).includes(s)) {
      throw new InvalidArgumentError(`--suite: '${s}' is not one of ${SUITES.join(', ')}, all`);
    }
    return s as SuiteName;
  });
}

/** Runs the CLI with `argv` as process.argv gives it; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = new Command('tessera-bench')
    .description(
      'Speed, memory and error of Tessera attention per variant, backend and size, with peers side by side.',
    )
    .addOption(
      new Option('--backend <name>', 'backend to run')
        .choices([...BACKENDS, 'all', 'best'])
        .default('best'),
    )
    .option('--suite <names>', `comma list of ${SUITES.join(', ')} or all`, 'dense,causal')
    .option(
      '--seq <sizes>',
      'sequence lengths, e.g. 1k,4k,16k (default depends on the backend)',
      (v) => {
        try {
          return parseSizes(v);
        } catch (e) {
          throw new InvalidArgumentError((e as Error).message);
        }
      },
    )
    .addOption(
      new Option('--dtype <dtype>', 'element type').choices(['f32', 'f16', 'bf16']).default('f32'),
    )
    .option('--batch <n>', 'batch size', int('--batch'), 1)
    .option(
      '--heads <n>',
      'query heads (default: 2 on CPUs and software GPU adapters, 16 on GPUs)',
      int('--heads'),
    )
    .option('--kv-heads <n>', 'key/value heads (default: = heads)', int('--kv-heads'))
    .option('--dim <n>', 'head dimension', int('--dim'), 64)
    .option(
      '--repeat <n>',
      'timed runs per case (default: 3 on CPUs and software adapters, 20 on GPUs)',
      int('--repeat'),
    )
    .option('--warmup <n>', 'untimed runs first', count('--warmup'), 1)
    .option('--no-baseline', 'skip the naive (materialised N×N) baseline')
    .option(
      '--peers',
      'also run PyTorch SDPA and FlexAttention (needs python3 with torch and a CUDA GPU)',
      false,
    )
    .option('--emit', 'print the generated kernel source of each case and exit', false)
    .option('--out <dir>', 'write report.json, report.md and SVG charts here')
    .option(
      '--sample-rows <n>',
      'query rows checked against the CPU reference per case',
      int('--sample-rows'),
      8,
    )
    .option(
      '--backward',
      'also measure each case backward: forward+backward, backward TFLOP/s (2.5× forward FLOPs), memory, gradient error (and the peers backward with --peers)',
      false,
    )
    .option(
      '--grad-check-seq <n>',
      'backward mode: gradients are checked against the f64 CPU on the same case at min(seq, n) tokens',
      int('--grad-check-seq'),
      256,
    )
    .option(
      '--only <variants>',
      'keep only the cases of these variants (comma list, e.g. dense,causal: without causal-alibi-learned)',
    )
    .option('--no-progress', 'no progress bar')
    .option(
      '--fixture <dir>',
      'variants suite: also measure error on this real-attention fixture (qkv.json + qkv-L*.bin)',
    )
    .option('--bidirectional', 'variants suite: non-causal systems', false)
    .option(
      '--systems <names>',
      'variants suite: only these systems (comma list; exact always runs)',
    )
    .exitOverride();
  let suites: SuiteName[];
  try {
    program.parse(argv);
  } catch (e) {
    // commander has printed its message already
    if (e instanceof CommanderError) return e.code === 'commander.helpDisplayed' ? 0 : 2;
    throw e;
  }
  try {
    suites = parseSuites(program.opts<Flags>().suite);
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 2;
  }
  const flags = program.opts<Flags>();

  const backends: AttentionBackend[] = [];
  if (flags.backend === 'best') {
    const { backend, skipped } = await loadBest();
    for (const s of skipped) console.error(`note: ${s}`);
    backends.push(backend);
  } else {
    for (const name of flags.backend === 'all' ? BACKENDS : [flags.backend]) {
      const r = await loadBackend(name);
      if (r.backend) backends.push(r.backend);
      else if (flags.backend === 'all') console.error(`note: ${r.reason}`);
      else {
        console.error(`error: ${r.reason}`);
        return 2;
      }
    }
  }
  // CPUs and software GPU adapters (Mesa's llvmpipe, SwiftShader) get small default sizes.
  const onCpu = backends.every(
    (b) => b.name === 'cpu' || /llvmpipe|lavapipe|swiftshader/i.test(b.device ?? ''),
  );
  const heads = flags.heads ?? (onCpu ? 2 : 16);
  const shape = {
    batch: flags.batch,
    heads,
    headsKV: flags.kvHeads ?? heads,
    dim: flags.dim,
    dtype: flags.dtype,
  };
  const seqs = flags.seq ?? (onCpu ? [256, 512, 1024] : [1024, 4096, 16384]);
  const repeat = flags.repeat ?? (onCpu ? 3 : 20);
  const withVariants = suites.includes('variants');
  const allCases = buildCases(
    suites.filter((x) => x !== 'variants'),
    seqs,
    shape,
    { backward: flags.backward },
  );
  const only = flags.only?.split(',');
  const cases = only ? allCases.filter((c) => only.includes(c.variant)) : allCases;
  if (only && cases.length === 0 && allCases.length > 0) {
    const names = [...new Set(allCases.map((c) => c.variant))].join(', ');
    console.error(`error: --only ${flags.only} keeps no case (variants here: ${names})`);
    return 2;
  }

  if (flags.emit) {
    for (const b of backends) {
      for (const c of cases) {
        console.log(`// ===== ${b.name}: ${c.id} =====`);
        console.log(b.emitSource ? b.emitSource(c.build()) : `// ${b.name} generates no source`);
      }
    }
    return 0;
  }

  const bar =
    flags.progress && process.stderr.isTTY
      ? new SingleBar({
          format: ' {bar} {value}/{total} {case}',
          hideCursor: true,
          clearOnComplete: true,
        })
      : null;
  bar?.start(cases.length * backends.length, 0, { case: '' });
  const perBackend: BenchReport['backends'][number][] = [];
  const gradReference = flags.backward ? await cpuGradients() : undefined;
  const checked = new Map<string, GradientErrors>();
  for (const b of backends) {
    const results: BackwardCaseResult[] = [];
    for (const c of cases) {
      bar?.update({ case: `${b.name} ${c.id}` });
      const forward = await measureCase(b, c, {
        warmup: flags.warmup,
        repeat,
        baseline: flags.baseline,
        sampleRows: flags.sampleRows,
        reference: referenceRows,
      });
      const backward = flags.backward
        ? await measureBackward(b, c, {
            warmup: flags.warmup,
            repeat,
            checkSeq: flags.gradCheckSeq,
            checked,
            ...(gradReference ? { reference: gradReference } : {}),
          })
        : undefined;
      results.push(backward ? { ...forward, backward } : forward);
      bar?.increment();
    }
    perBackend.push({ name: b.name, device: b.device, results });
  }
  bar?.stop();

  const variantReports: {
    backend: string;
    device?: string;
    rows: VariantRow[];
    crossLayer?: CrossLayerRow[];
  }[] = [];
  if (withVariants) {
    const inputSets: VariantsInput[] = seqs.map((n) => structured(heads, n, flags.dim));
    const fixture = flags.fixture ? await loadFixture(resolve(flags.fixture)) : undefined;
    if (fixture) inputSets.push(fixture);
    for (const b of backends) {
      const rows: VariantRow[] = [];
      for (const input of inputSets) {
        rows.push(
          ...(await measureVariants(
            b,
            input,
            {
              causal: !flags.bidirectional,
              warmup: flags.warmup,
              repeat,
              ...(flags.systems ? { only: flags.systems.split(',') } : {}),
            },
            (name) => {
              if (flags.progress)
                console.error(`variants: ${b.name} ${input.source} ${input.seq} ${name}`);
            },
          )),
        );
      }
      let crossLayer: CrossLayerRow[] | undefined;
      const layers = fixture?.layers ?? [];
      if (fixture && flags.fixture && layers.length >= 2) {
        const previous = await loadFixture(resolve(flags.fixture), layers[layers.length - 2]);
        crossLayer = await measureCrossLayer(b, previous, fixture, {
          warmup: flags.warmup,
          repeat,
        });
      }
      variantReports.push({
        backend: b.name,
        device: b.device,
        rows,
        ...(crossLayer ? { crossLayer } : {}),
      });
    }
  }

  let peers: PeerResult[] = [];
  if (flags.peers) {
    const r = runPeers(cases, {
      warmup: Math.max(flags.warmup, 3),
      repeat,
      backward: flags.backward,
    });
    if (r.error) console.error(`note: ${r.error}`);
    peers = r.results;
  }
  for (const b of backends) await b.dispose();

  const report: BenchReport = {
    schema: 'tessera-bench',
    version: SCHEMA_VERSION,
    createdAt: new Date().toISOString(),
    command: `tessera-bench ${argv.slice(2).join(' ')}`.trim(),
    machine: {
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
      cpus: (await import('node:os')).cpus().length,
    },
    backends: perBackend,
    peers,
  };
  if (cases.length > 0) console.log(markdown(report));
  const variantsText = variantReports
    .map((v) => {
      const name = `${v.backend} (${v.device ?? ''})`;
      const cross = v.crossLayer ? `\n\n${crossLayerMarkdown(name, v.crossLayer)}` : '';
      return `${variantsMarkdown(name, v.rows)}${cross}`;
    })
    .join('\n\n');
  if (variantsText) console.log(`\n${variantsText}`);
  if (flags.out) {
    const dir = resolve(flags.out);
    const files = cases.length > 0 ? await writeReport(report, dir) : [];
    if (variantReports.length > 0) {
      const { mkdirSync, writeFileSync } = await import('node:fs');
      mkdirSync(dir, { recursive: true });
      const json = join(dir, 'variants.json');
      writeFileSync(
        json,
        `${JSON.stringify({ command: report.command, createdAt: report.createdAt, machine: report.machine, results: variantReports }, null, 2)}\n`,
      );
      const md = join(dir, 'variants.md');
      writeFileSync(md, `${variantsText}\n\nCommand: \`${report.command}\`\n`);
      files.push(json, md);
    }
    console.error(`wrote ${files.join(', ')}`);
  }
  const failed = perBackend
    .flatMap((b) => b.results.flatMap((r) => r.strategies))
    .filter((s) => s.status === 'failed');
  for (const f of failed) console.error(`failed: ${f.message}`);
  const failedBackward = perBackend.flatMap((b) =>
    b.results.flatMap((r) => {
      const k = r.backward;
      if (k?.status === 'failed') return [`${b.name} ${r.id} backward: ${k.message}`];
      if (k?.gradError?.status === 'failed')
        return [`${b.name} ${r.id} gradient check: ${k.gradError.message}`];
      return [];
    }),
  );
  for (const f of failedBackward) console.error(`failed: ${f}`);
  const failedVariants = variantReports.flatMap((v) => v.rows.filter((r) => r.status === 'failed'));
  for (const f of failedVariants)
    console.error(`failed: ${f.system} ${f.source} ${f.seq}: ${f.message}`);
  return failed.length + failedBackward.length + failedVariants.length > 0 ? 1 : 0;
}

/** The cpu backend's f64 backward, the reference for gradient errors; undefined where it has none. */
async function cpuGradients(): Promise<GradientReference | undefined> {
  const cpu = await createCpuBackend();
  const backward = cpu.backward?.bind(cpu);
  if (!backward) {
    console.error('note: the cpu backend has no backward(): gradient errors are not checked');
    return undefined;
  }
  return (spec, inputs) => backward(spec, inputs);
}
