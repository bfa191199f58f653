import type { AttentionBackend } from '@tessera/core';

export const BACKENDS = ['cpu', 'webgpu', 'cuda'] as const;
export type BackendName = (typeof BACKENDS)[number];

const loaders: Record<BackendName, () => Promise<AttentionBackend>> = {
  cpu: async () => (await import('@tessera/cpu')).createCpuBackend(),
  webgpu: async () => (await import('@tessera/webgpu')).createWebGpuBackend(),
  cuda: async () => (await import('@tessera/cuda')).createCudaBackend(),
};

/** Creates a backend, or explains in one line why it is not available here. */
export async function loadBackend(
  name: BackendName,
): Promise<{ backend?: AttentionBackend; reason?: string }> {
  try {
    return { backend: await loaders[name]() };
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    return { reason: `${name} backend is not available here: ${msg.split('\n')[0]}` };
  }
}

/** The fastest backend that starts here: cuda, then webgpu, then cpu. */
export async function loadBest(): Promise<{ backend: AttentionBackend; skipped: string[] }> {
  const skipped: string[] = [];
  for (const name of ['cuda', 'webgpu', 'cpu'] as const) {
    const r = await loadBackend(name);
    if (r.backend) return { backend: r.backend, skipped };
    skipped.push(r.reason as string);
  }
  throw new Error(`no backend could start:\n  ${skipped.join('\n  ')}`);
}
