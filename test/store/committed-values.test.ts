import { describe, expect, it } from 'vitest';
import { COMMITTED_VALUES, CommittedValues } from '../../src/store/group-commit.js';

describe('CommittedValues (the writer\'s committed queue counts, DUP marks and reference counts)', () => {
  it('keeps at most COMMITTED_VALUES values, however many keys are read: it starts afresh past that', () => {
    const values = new CommittedValues(() => true);
    for (let index = 0; index <= COMMITTED_VALUES + 10; index++) values.remember(`c\u0000${index}`, index);
    expect(values.size).toBeLessThanOrEqual(COMMITTED_VALUES);
    expect(values.size).toBeGreaterThan(0);
    // What it still keeps is right.
    expect(values.get(`c\u0000${COMMITTED_VALUES + 10}`)).toBe(COMMITTED_VALUES + 10);
  });

  it('takes what a committed batch wrote, a delete included, and forgets everything on request', () => {
    const values = new CommittedValues(() => true);
    values.remember('n\u0000a', { m: 1, b: 1, d: 0 });
    values.remember('c\u0000x', undefined);
    expect(values.get('c\u0000x')).not.toBeUndefined(); // known to be absent
    const written = new Map<string, unknown>([['n\u0000a', { m: 2, b: 2, d: 0 }], ['c\u0000x', 3]]);
    values.committed(written, written.keys());
    expect(values.get('n\u0000a')).toEqual({ m: 2, b: 2, d: 0 });
    expect(values.get('c\u0000x')).toBe(3);
    values.forget();
    expect(values.get('n\u0000a')).toBeUndefined();
    expect(values.size).toBe(0);
  });
});
