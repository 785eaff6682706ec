import { describe, expect, it } from 'vitest';
import { cpuNotes, type Context } from '../../bench/lib/scenario-kit.js';

// Only the sizes cpuNotes reads; the rest of a bench context plays no part here.
const ctx = { sizes: { disturbedShare: 0.25 } } as Context;

/** A measurement of 1 s in which the load process used `busyMs` of CPU and nothing else ran. */
function run(busyMs: number) {
  return {
    loadCpu: { userMs: busyMs * 0.8, systemMs: busyMs * 0.2 },
    machineCpu: { busyMs, stealMs: 0, wallMs: 1_000, cores: 2 },
  };
}

describe('bench notes on the load generator', () => {
  it("a broker's run with the generator over 90 % busy may be capped by it", () => {
    expect(cpuNotes(ctx, run(950), undefined)).toEqual(['the load process was 95 % busy: this run may be capped by the generator']);
    expect(cpuNotes(ctx, run(500), undefined)).toEqual([]);
  });

  it("the trivial sink's capacity run is meant to be capped by the generator: only a run under 90 % busy gets a note", () => {
    expect(cpuNotes(ctx, run(950), undefined, true)).toEqual([]);
    expect(cpuNotes(ctx, run(520), undefined, true)).toEqual(["the load process was only 52 % busy: this rate may be below the generator's capacity"]);
  });
});
