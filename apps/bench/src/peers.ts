import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchCase } from './suites.js';

export interface PeerResult {
  readonly caseId: string;
  readonly variant: string;
  readonly seq: number;
  /** 'sdpa' (PyTorch scaled_dot_product_attention) or 'flex' (FlexAttention with a block mask). */
  readonly peer: string;
  readonly status: 'ok' | 'unsupported' | 'failed';
  /** Absent: a forward time. 'backward' (with `--backward`): ms is fwdBwdMs − fwdMs. */
  readonly mode?: 'backward';
  readonly ms?: number;
  /** Percentiles of the timed runs (in backward mode, of forward + backward). */
  readonly p10?: number;
  readonly p90?: number;
  /** Backward mode: medians of the forward alone and of forward + backward (autograd.grad). */
  readonly fwdMs?: number;
  readonly fwdBwdMs?: number;
  /** Timed runs behind the medians (fewer than asked where one run takes seconds). */
  readonly n?: number;
  /** FlexAttention's block-mask construction, timed separately. */
  readonly maskBuildMs?: number;
  readonly peakExtraBytes?: number;
  readonly message?: string;
}

/** The peer script, shipped beside dist/ (apps/bench/peers/torch_peers.py). */
export const peerScript = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  'peers',
  'torch_peers.py',
);

/**
 * Runs PyTorch SDPA and FlexAttention on the same shapes, masks and dtype, timed with CUDA
 * events in the same process run. Returns a clear failure when python3 or torch+CUDA is missing.
 * With `backward`, each peer is also timed forward + backward (results with mode 'backward').
 */
export function runPeers(
  cases: readonly BenchCase[],
  options: { warmup: number; repeat: number; python?: string; backward?: boolean },
): { results: PeerResult[]; error?: string } {
  const payload = {
    warmup: options.warmup,
    repeat: options.repeat,
    backward: options.backward ?? false,
    cases: cases
      .filter((c) => c.peer !== null)
      .map((c) => ({
        id: c.id,
        variant: c.variant,
        seq: c.seq,
        batch: c.shape.batch,
        heads: c.shape.heads,
        headsKV: c.shape.headsKV,
        dim: c.shape.dim,
        dtype: c.shape.dtype,
        peer:
          c.peer?.kind === 'block-layout' ? { kind: 'block-layout', ...c.peer.layout() } : c.peer,
      })),
  };
  const proc = spawnSync(options.python ?? 'python3', [peerScript], {
    input: JSON.stringify(payload),
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, PYTHONUNBUFFERED: '1' },
  });
  if (proc.error)
    return {
      results: [],
      error: `peers: could not start ${options.python ?? 'python3'}: ${proc.error.message}`,
    };
  if (proc.status !== 0) {
    const why = (proc.stderr || proc.stdout).trim().split('\n').slice(-3).join(' ');
    return { results: [], error: `peers: torch_peers.py exited ${proc.status}: ${why}` };
  }
  const results = proc.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as PeerResult);
  return { results };
}
