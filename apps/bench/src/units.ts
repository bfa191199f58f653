/** Parses sequence lengths such as `1k,4k,16k` or `1000,4096` (k = 1024, m = 1024²). */
export function parseSizes(text: string, flag = '--seq'): number[] {
  const out = text.split(',').map((part) => {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$/.exec(part);
    if (!m) throw new Error(`${flag}: '${part}' is not a size (use numbers like 1000, 4k or 1m)`);
    const mult = m[2]?.toLowerCase() === 'k' ? 1024 : m[2]?.toLowerCase() === 'm' ? 1024 * 1024 : 1;
    const n = Number(m[1]) * mult;
    if (!Number.isInteger(n) || n <= 0)
      throw new Error(`${flag}: '${part}' must be a positive whole number of tokens`);
    return n;
  });
  return out;
}

/** Positive integers from a comma list. */
export function parseInts(text: string, flag: string): number[] {
  return text.split(',').map((part) => {
    const n = Number(part);
    if (!Number.isInteger(n) || n <= 0)
      throw new Error(`${flag}: '${part}' must be a positive integer`);
    return n;
  });
}

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = n;
  while (Math.abs(x) >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${x.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatSeq(n: number): string {
  if (n % (1024 * 1024) === 0) return `${n / (1024 * 1024)}m`;
  if (n % 1024 === 0) return `${n / 1024}k`;
  return String(n);
}

/** Median and the 10th / 90th percentiles of a sample (linear interpolation). */
export function summarize(samples: readonly number[]): {
  median: number;
  p10: number;
  p90: number;
  n: number;
} {
  if (samples.length === 0) throw new Error('no samples');
  const s = [...samples].sort((a, b) => a - b);
  const at = (p: number) => {
    const x = p * (s.length - 1);
    const lo = Math.floor(x);
    const hi = Math.ceil(x);
    return (s[lo] as number) + ((s[hi] as number) - (s[lo] as number)) * (x - lo);
  };
  return { median: at(0.5), p10: at(0.1), p90: at(0.9), n: s.length };
}
