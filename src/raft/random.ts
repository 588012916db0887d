// Seeded pseudo-random numbers for the pure core and the simulator. The core
// never draws from the global random generator: its host injects a RandomSource, and the same seed
// gives the same sequence on every run (sfc32 over a splitmix32-expanded seed).

/** Returns an integer in [0, maxExclusive). */
export type RandomSource = (maxExclusive: number) => number;

export function createRandom(seed: number): RandomSource {
  let s = seed >>> 0;
  const next32 = (): number => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = next32(), b = next32(), c = next32(), d = next32();
  const sfc32 = (): number => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) >>> 0;
    return t;
  };
  return (maxExclusive: number): number => {
    if (!(maxExclusive >= 1) || !Number.isSafeInteger(maxExclusive)) {
      throw new RangeError(`random bound must be a positive safe integer, got ${maxExclusive}`);
    }
    return Math.floor((sfc32() / 0x1_0000_0000) * maxExclusive);
  };
}
