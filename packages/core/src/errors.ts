/** Base class of every error Tessera throws on purpose; `code` is stable for programs to match on. */
export class TesseraError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** An invalid attention spec or expression: the message names the field and the rule. */
export class SpecError extends TesseraError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_SPEC', message, options);
  }
}

/** Inputs that do not fit the spec (wrong lengths, wrong types). */
export class InputError extends TesseraError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_INPUT', message, options);
  }
}

/** A valid spec that this backend (or this device) cannot run. */
export class UnsupportedError extends TesseraError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_UNSUPPORTED', message, options);
  }
}

/** A run that would exceed a memory or device limit; raised before anything is allocated. */
export class ResourceLimitError extends TesseraError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_RESOURCE_LIMIT', message, options);
  }
}
