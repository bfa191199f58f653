// The @tessera/cuda measurement on a GPU machine (see packages/cuda/README.md, "Measured on H100").
// Bundled by scripts/device-bundle.mjs into .device-bundle/cuda/run.mjs with the addon and the
// PyTorch peer script; run there as
//   source .device/preamble.sh && node .device-bundle/cuda/run.mjs [--quick] [--conformance-only] [--sweep] [--programs] [--backward] [--gradients]
// Sections: (a) the conformance catalogue against cpu; (b) agreement with FlexAttention;
// (c) speed against SDPA and FlexAttention, measured in this same run; (d) memory and a
// 1,048,576-token sliding-window run. Prints a Markdown table last; writes JSON under $OUT.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
if (!process.env.TESSERA_CUDA_ADDON && existsSync(join(here, 'tessera_cuda.node')))
  process.env.TESSERA_CUDA_ADDON = join(here, 'tessera_cuda.node');
process.env.UV_THREADPOOL_SIZE ??= '16'; // NVRTC compiles run on the libuv pool, in parallel

const args = new Set(process.argv.slice(2));
const quick = args.has('--quick');
const conformanceOnly = args.has('--conformance-only');
const sweep = args.has('--sweep');
const programs = args.has('--programs');
const outDir = process.env.OUT || null;

async function main(): Promise<number> {
  // Imported after the environment above is set.
  const { runAll } = await import('./sections.js');
  const { CudaUnavailableError } = await import('../../src/errors.js');
  try {
    if (args.has('--gradients')) {
      // The gradient catalogue vs the cpu backward (gradients.ts).
      const { runGradientBench } = await import('./gradients.js');
      return await runGradientBench({ quick, outDir });
    }
    if (args.has('--backward')) {
      const { runBackwardBench } = await import('./backward.js');
      return await runBackwardBench({ quick, outDir });
    }
    return await runAll({
      quick,
      conformanceOnly,
      sweep,
      programs,
      outDir,
      here,
      python: programs ? null : pythonPeers(),
    });
  } catch (e) {
    if (e instanceof CudaUnavailableError) {
      console.error(`[cuda-bench] ${e.message}`);
      console.error('[cuda-bench] this script needs an NVIDIA GPU with its driver (libcuda.so.1)');
      return 2;
    }
    throw e;
  }
}

/** How to run the PyTorch peers, if python3 with torch is here. */
function pythonPeers(): { python: string; script: string } | null {
  const script = [join(here, 'peers', 'peers.py'), join(here, '..', 'peers', 'peers.py')].find(
    (p) => existsSync(p),
  );
  if (!script) return null;
  const python = process.env.PYTHON || 'python3';
  const probe = spawnSync(python, ['-c', 'import torch; print(torch.cuda.is_available())'], {
    encoding: 'utf8',
  });
  return probe.status === 0 && probe.stdout.trim() === 'True' ? { python, script } : null;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
