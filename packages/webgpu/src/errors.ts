import { TesseraError } from '@tessera/core';

/** The GPU device was lost (driver reset, device destroyed, out of memory at the driver level). */
export class DeviceLostError extends TesseraError {
  readonly reason: string;
  constructor(message: string, reason = 'unknown', options?: { cause?: unknown }) {
    super('ERR_DEVICE_LOST', message, options);
    this.reason = reason;
  }
}

/** Generated WGSL that the device rejected: a bug in the emitter, reported with the messages. */
export class ShaderCompileError extends TesseraError {
  readonly source: string;
  constructor(message: string, source: string) {
    super('ERR_SHADER_COMPILE', message);
    this.source = source;
  }
}
