// The playground's configuration and its round trip through the URL's query string, so that a
// configuration can be shared as a link.
import { catalog, defaultParams, findPattern, type PatternEntry } from './catalog.js';

export const BACKEND_CHOICES = ['auto', 'webgpu', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];
export const HEAD_DIMS = [16, 32, 64, 128] as const;
export const BLOCKS = [16, 32, 64, 128] as const;

/** The shape limits keep the CPU reference, which runs beside every run, under a few seconds. */
export const LIMITS = { seq: [1, 4096], heads: [1, 16] } as const;

export interface PlaygroundState {
  readonly pattern: string;
  readonly params: Readonly<Record<string, number>>;
  readonly seq: number;
  readonly heads: number;
  readonly headDim: number;
  readonly block: number;
  readonly backend: BackendChoice;
  readonly seed: number;
}

export const DEFAULT_STATE: PlaygroundState = {
  pattern: 'sliding-window',
  params: defaultParams(findPattern('sliding-window') as PatternEntry),
  seq: 256,
  heads: 2,
  headDim: 32,
  block: 32,
  backend: 'auto',
  seed: 1,
};

/** Shape keys of the query string; a pattern's own parameters use their names from the catalog. */
export const SHAPE_KEYS = ['pattern', 'seq', 'heads', 'dim', 'tile', 'backend', 'seed'];

export interface ParsedState {
  readonly state: PlaygroundState;
  /** What in the query string was not understood; the default was used instead of each. */
  readonly problems: readonly string[];
}

function intIn(
  query: URLSearchParams,
  key: string,
  min: number,
  max: number,
  fallback: number,
  problems: string[],
): number {
  const raw = query.get(key);
  if (raw === null) return fallback;
  const value = Number(raw);
  if (!/^-?\d+$/.test(raw.trim()) || value < min || value > max) {
    problems.push(`${key}=${raw} is not an integer in [${min}, ${max}]; using ${fallback}`);
    return fallback;
  }
  return value;
}

function oneOf<T extends number | string>(
  query: URLSearchParams,
  key: string,
  choices: readonly T[],
  fallback: T,
  problems: string[],
): T {
  const raw = query.get(key);
  if (raw === null) return fallback;
  const hit = choices.find((c) => String(c) === raw);
  if (hit === undefined) {
    problems.push(`${key}=${raw} is not one of ${choices.join(', ')}; using ${fallback}`);
    return fallback;
  }
  return hit;
}

/** Reads a configuration from a query string (`location.search`). */
export function parseState(search: string): ParsedState {
  const query = new URLSearchParams(search);
  const problems: string[] = [];
  const d = DEFAULT_STATE;
  const pattern = oneOf(
    query,
    'pattern',
    catalog.map((e) => e.id),
    d.pattern,
    problems,
  );
  const entry = findPattern(pattern) as PatternEntry;
  const params: Record<string, number> = {};
  for (const def of entry.params) {
    params[def.key] = intIn(query, def.key, def.min, def.max, def.default, problems);
  }
  for (const key of query.keys()) {
    if (!SHAPE_KEYS.includes(key) && !entry.params.some((def) => def.key === key)) {
      problems.push(`${key} is not a parameter of ${entry.id}; ignored`);
    }
  }
  return {
    state: {
      pattern,
      params,
      seq: intIn(query, 'seq', LIMITS.seq[0], LIMITS.seq[1], d.seq, problems),
      heads: intIn(query, 'heads', LIMITS.heads[0], LIMITS.heads[1], d.heads, problems),
      headDim: oneOf(query, 'dim', HEAD_DIMS, d.headDim as (typeof HEAD_DIMS)[number], problems),
      block: oneOf(query, 'tile', BLOCKS, d.block as (typeof BLOCKS)[number], problems),
      backend: oneOf(query, 'backend', BACKEND_CHOICES, d.backend, problems),
      seed: intIn(query, 'seed', 0, 2 ** 31 - 1, d.seed, problems),
    },
    problems,
  };
}

/** The query string (with its `?`) that parseState reads back to `state`. */
export function stateToSearch(state: PlaygroundState): string {
  const query = new URLSearchParams();
  query.set('pattern', state.pattern);
  const entry = findPattern(state.pattern);
  for (const def of entry?.params ?? []) {
    query.set(def.key, String(state.params[def.key] ?? def.default));
  }
  query.set('seq', String(state.seq));
  query.set('heads', String(state.heads));
  query.set('dim', String(state.headDim));
  query.set('tile', String(state.block));
  query.set('backend', state.backend);
  query.set('seed', String(state.seed));
  return `?${query.toString()}`;
}

/** The same configuration with another pattern, at that pattern's default parameters. */
export function withPattern(state: PlaygroundState, pattern: string): PlaygroundState {
  const entry = findPattern(pattern);
  if (!entry) return state;
  return { ...state, pattern, params: defaultParams(entry) };
}
