import { type ScoreMod, scoreMod, tensor } from '@tessera/core';

/** ALiBi with per-head slopes 2^(−8(h+1)/H) on |q − kv| (a captured f32 tensor). */
export function alibi(headsQ: number): ScoreMod {
  const slopes = tensor(
    Float32Array.from({ length: headsQ }, (_, h) => 2 ** ((-8 * (h + 1)) / headsQ)),
  );
  return scoreMod(({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).abs().toFloat())), {
    name: 'alibi',
  });
}

/** Logit soft-capping: cap · tanh(score / cap). */
export function softcap(cap: number): ScoreMod {
  return scoreMod(({ score }) => score.div(cap).tanh().mul(cap), { name: `softcap(${cap})` });
}
