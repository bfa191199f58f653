// The conformance catalogue's specs (CI profile), for the nvcc test.
import { conformanceCases } from '@tessera/conformance';
import type { AttentionSpec } from '@tessera/core';

export function catalogueSpecs(): [string, AttentionSpec][] {
  return conformanceCases({ profile: 'ci' }).map((c) => {
    try {
      return [c.id, c.build().spec];
    } catch (e) {
      throw new Error(`conformance case ${c.id} failed to build: ${(e as Error).message}`);
    }
  });
}
