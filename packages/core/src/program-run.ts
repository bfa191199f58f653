import { InputError, SpecError, UnsupportedError } from './errors.js';
import type { Program, ProgramStep, Shape, StepOf, StepOp } from './program.js';
import { stepWrites } from './program.js';

/** What a step sees: its inputs by name (device values) and every tensor's shape. */
export interface StepEnv<T> {
  get(name: string): T;
  shape(name: string): Shape;
}

/**
 * What a backend implements to run programs. Values (`T`) are the backend's device tensors and
 * selections; the executor never looks inside them.
 */
export interface ProgramOps<T = unknown> {
  /** Copies a host tensor to the device. */
  upload(data: Float32Array, shape: Shape): Promise<T>;
  /** Copies a device tensor back. */
  download(value: T): Promise<Float32Array>;
  /** Bytes `value` holds on the device. */
  bytes(value: T): number;
  free(value: T): void;
  /** Runs one step; returns every name the step writes. */
  step(step: ProgramStep, env: StepEnv<T>): Promise<Record<string, T>>;
}

/**
 * A backend's handler for every step kind. It is a mapped type over every kind, so adding a kind
 * to ProgramStep is a compile error in each backend until it handles the kind (or says in its
 * handler, with UnsupportedError, that it cannot).
 */
export type StepTable<T> = {
  readonly [K in StepOp]: (step: StepOf<K>, env: StepEnv<T>) => Promise<Record<string, T>>;
};

/** Runs `step` with the table's handler for its kind. */
export function dispatchStep<T>(
  table: StepTable<T>,
  step: ProgramStep,
  env: StepEnv<T>,
): Promise<Record<string, T>> {
  const handler = table[step.op] as (s: ProgramStep, e: StepEnv<T>) => Promise<Record<string, T>>;
  return handler(step, env);
}

/** A value kept on a backend's device between runs (cross-layer reuse); pass it as an input. */
export class DeviceValue {
  #live = true;
  constructor(
    readonly ops: ProgramOps,
    readonly shape: Shape,
    readonly handle: unknown,
  ) {}
  get live(): boolean {
    return this.#live;
  }
  /** Frees the device memory; later use throws InputError. */
  release(): void {
    if (this.#live) this.ops.free(this.handle);
    this.#live = false;
  }
}

export type ProgramInput = Float32Array | DeviceValue;

export interface ProgramRunOptions {
  /** Names to keep on the device and return as DeviceValues (tensors only). */
  readonly keep?: readonly string[];
}

export interface ProgramResult {
  readonly outputs: Readonly<Record<string, Float32Array>>;
  readonly kept: Readonly<Record<string, DeviceValue>>;
  /** Most bytes the program's values (inputs included) held on the device at once. */
  readonly peakBytes: number;
}

/** Anything that can run programs: backends expose their ops as `program`. */
export interface ProgramBackend {
  readonly name: string;
  readonly program?: ProgramOps;
}

const elements = (s: Shape): number => s[0] * s[1] * s[2] * s[3];

/**
 * Runs `program` on `backend`: uploads the host inputs, runs the steps in order, frees each value
 * after its last use and downloads the outputs. Validates every input before touching the device.
 */
export async function runProgram(
  backend: ProgramBackend,
  program: Program,
  inputs: Readonly<Record<string, ProgramInput>>,
  options: ProgramRunOptions = {},
): Promise<ProgramResult> {
  const ops = backend.program;
  if (!ops) throw new UnsupportedError(`backend '${backend.name}' does not run programs`);
  for (const [name, shape] of Object.entries(program.inputs)) {
    const x = inputs[name];
    if (x instanceof DeviceValue) {
      if (!x.live) throw new InputError(`input '${name}' was released`);
      if (x.ops !== ops) throw new InputError(`input '${name}' lives on another backend`);
      if (!x.shape.every((d, i) => d === shape[i]))
        throw new InputError(
          `input '${name}' has shape [${x.shape}], the program wants [${shape}]`,
        );
      continue;
    }
    if (!(x instanceof Float32Array))
      throw new InputError(`input '${name}' must be a Float32Array or a DeviceValue`);
    if (x.length !== elements(shape))
      throw new InputError(
        `input '${name}' must have ${elements(shape)} elements for shape [${shape}] (got ${x.length})`,
      );
    for (let i = 0; i < x.length; i++) {
      if (!Number.isFinite(x[i] as number))
        throw new InputError(`input '${name}' holds a non-finite value at ${i}`);
    }
  }
  for (const name of Object.keys(inputs)) {
    if (!(name in program.inputs)) throw new InputError(`unknown input '${name}'`);
  }
  const keep = new Set(options.keep ?? []);
  for (const k of keep) {
    if (!(k in program.shapes)) throw new SpecError(`keep: '${k}' is not a tensor of the program`);
  }

  const values = new Map<string, unknown>();
  const owned = new Set<string>();
  let live = 0;
  let peak = 0;
  const add = (name: string, v: unknown): void => {
    values.set(name, v);
    live += ops.bytes(v);
    peak = Math.max(peak, live);
  };
  const drop = (name: string): void => {
    const v = values.get(name);
    if (v === undefined) return;
    live -= ops.bytes(v);
    if (owned.has(name) && !keep.has(name)) ops.free(v);
    values.delete(name);
  };
  const env: StepEnv<unknown> = {
    get(name) {
      const v = values.get(name);
      if (v === undefined) throw new SpecError(`value '${name}' is not available`);
      return v;
    },
    shape(name) {
      const s = program.shapes[name];
      if (!s) throw new SpecError(`'${name}' is not a tensor`);
      return s;
    },
  };
  try {
    for (const [name, shape] of Object.entries(program.inputs)) {
      const x = inputs[name] as ProgramInput;
      if (x instanceof DeviceValue) add(name, x.handle);
      else {
        add(name, await ops.upload(x, shape));
        owned.add(name);
      }
    }
    for (const [i, step] of program.steps.entries()) {
      const written = await ops.step(step, env);
      for (const name of stepWrites(step)) {
        const v = written[name];
        if (v === undefined) throw new Error(`backend '${backend.name}' did not write '${name}'`);
        add(name, v);
        owned.add(name);
      }
      for (const name of program.lastUse[i] ?? []) drop(name);
    }
    const outputs: Record<string, Float32Array> = {};
    for (const o of program.outputs) outputs[o] = await ops.download(env.get(o));
    const kept: Record<string, DeviceValue> = {};
    for (const k of keep) {
      const given = inputs[k];
      kept[k] =
        given instanceof DeviceValue
          ? given
          : new DeviceValue(ops, program.shapes[k] as Shape, env.get(k));
    }
    return { outputs, kept, peakBytes: peak };
  } finally {
    for (const name of [...values.keys()]) drop(name);
  }
}
