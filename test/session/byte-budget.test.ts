import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ByteBudget } from '../../src/session/byte-budget.js';

describe('ByteBudget', () => {
  it('tryTake never lets what is held go over the limit; take (the callers that decide for themselves) may', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10_000 }), fc.array(fc.integer({ min: 0, max: 3_000 }), { maxLength: 40 }), (max, asks) => {
        const budget = new ByteBudget(max);
        let held = 0;
        for (const bytes of asks) {
          const taken = budget.tryTake(bytes);
          expect(taken).toBe(held + bytes <= max);
          if (taken) held += bytes;
          expect(budget.held).toBe(held);
          expect(budget.held).toBeLessThanOrEqual(max);
        }
        budget.give(held);
        expect(budget.held).toBe(0);
        budget.take(max + 1);
        expect(budget.over).toBe(true);
      }),
    );
  });
});
