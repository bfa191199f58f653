/// <reference types="@webgpu/types" preserve="true" />
/** Getting a GPUDevice: the caller's, the browser's navigator.gpu, or the `webgpu` package in Node. */
import { UnsupportedError } from '@tessera/core';

/** GPUBufferUsage / GPUMapMode values, so nothing depends on WebGPU globals being installed. */
export const Usage = {
  MAP_READ: 0x0001,
  COPY_SRC: 0x0004,
  COPY_DST: 0x0008,
  UNIFORM: 0x0040,
  STORAGE: 0x0080,
  QUERY_RESOLVE: 0x0200,
} as const;
export const MAP_READ_MODE = 0x0001;

/** The limits the backend plans with (a subset of GPUSupportedLimits). */
export interface GpuLimits {
  readonly maxBufferSize: number;
  readonly maxStorageBufferBindingSize: number;
  readonly maxComputeWorkgroupStorageSize: number;
  readonly maxComputeInvocationsPerWorkgroup: number;
  readonly maxComputeWorkgroupSizeX: number;
  readonly maxComputeWorkgroupsPerDimension: number;
  readonly maxStorageBuffersPerShaderStage: number;
  readonly minUniformBufferOffsetAlignment: number;
}

const LIMIT_NAMES: (keyof GpuLimits)[] = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'minUniformBufferOffsetAlignment',
];

export interface GpuContext {
  readonly device: GPUDevice;
  readonly limits: GpuLimits;
  /** shader-f16: f16 storage in kernels. */
  readonly f16: boolean;
  readonly subgroups: boolean;
  readonly timestampQuery: boolean;
  readonly adapterName: string;
  /** Whatever must stay referenced while the device lives (the `webgpu` package's GPU object). */
  readonly keepAlive: unknown;
  /** True when this backend created the device (and so destroys it on dispose). */
  readonly owned: boolean;
}

const WANTED_FEATURES = ['shader-f16', 'subgroups', 'timestamp-query'] as const;

export function limitsOf(source: GPUSupportedLimits): GpuLimits {
  const out: Record<string, number> = {};
  for (const k of LIMIT_NAMES) out[k] = Number((source as unknown as Record<string, number>)[k]);
  return out as unknown as GpuLimits;
}

function contextOf(
  device: GPUDevice,
  adapterName: string,
  keepAlive: unknown,
  owned: boolean,
): GpuContext {
  return {
    device,
    limits: limitsOf(device.limits),
    f16: device.features.has('shader-f16'),
    subgroups: device.features.has('subgroups'),
    timestampQuery: device.features.has('timestamp-query'),
    adapterName,
    keepAlive,
    owned,
  };
}

export interface AcquireOptions {
  readonly device?: GPUDevice;
  /** A GPU object to take the adapter from (navigator.gpu, or the `webgpu` package's create()). */
  readonly gpu?: GPU;
  /** Features to leave off even where the adapter has them (e.g. to test the paths without). */
  readonly disableFeatures?: readonly string[];
  /** Flags passed to the `webgpu` package's create() in Node (Dawn toggles). */
  readonly nodeFlags?: readonly string[];
  readonly powerPreference?: GPUPowerPreference;
  /** Plan as if the device's limits were at most these (tests use it to reach limit paths). */
  readonly limits?: Partial<GpuLimits>;
}

function lowered(ctx: GpuContext, limits: Partial<GpuLimits> | undefined): GpuContext {
  if (!limits) return ctx;
  const merged: Record<string, number> = { ...ctx.limits };
  for (const [k, v] of Object.entries(limits)) {
    if (typeof v === 'number') merged[k] = Math.min(merged[k] ?? v, v);
  }
  return { ...ctx, limits: merged as unknown as GpuLimits };
}

export async function acquireGpu(options: AcquireOptions = {}): Promise<GpuContext> {
  return lowered(await acquire(options), options.limits);
}

async function acquire(options: AcquireOptions): Promise<GpuContext> {
  if (options.device) return contextOf(options.device, 'caller-provided', null, false);
  let gpu: GPU | undefined =
    options.gpu ?? (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (!gpu) {
    let mod: { create: (flags: string[]) => GPU };
    try {
      const name = 'webgpu';
      mod = (await import(/* @vite-ignore */ name)) as typeof mod;
    } catch (cause) {
      throw new UnsupportedError(
        'no WebGPU here: navigator.gpu is missing and the optional `webgpu` package could not be loaded',
        { cause },
      );
    }
    gpu = mod.create([...(options.nodeFlags ?? [])]);
  }
  const adapter = await gpu.requestAdapter(
    options.powerPreference ? { powerPreference: options.powerPreference } : undefined,
  );
  if (!adapter) throw new UnsupportedError('WebGPU is present but offers no adapter');
  const skip = new Set(options.disableFeatures ?? []);
  const requiredFeatures = WANTED_FEATURES.filter(
    (f) => adapter.features.has(f) && !skip.has(f),
  ) as GPUFeatureName[];
  const requiredLimits: Record<string, number> = {};
  for (const k of LIMIT_NAMES) {
    if (k === 'minUniformBufferOffsetAlignment') continue;
    requiredLimits[k] = Number((adapter.limits as unknown as Record<string, number>)[k]);
  }
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  const info = (adapter as { info?: GPUAdapterInfo }).info;
  const name = [info?.vendor, info?.architecture, info?.device, info?.description]
    .filter((x) => x)
    .join(' ');
  // Dawn's GPU object must outlive every device it made: the context holds it.
  return contextOf(device, name || 'unknown adapter', { gpu, adapter }, true);
}
