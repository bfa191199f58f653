// The conformance catalogue's specs, for the nvcc test (filled in once tooling/conformance lands).
import type { AttentionSpec } from '@tessera/core';

export function catalogueSpecs(): [string, AttentionSpec][] {
  return [];
}
