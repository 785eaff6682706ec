import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EntryWindow } from '../../src/session/entry-window.js';
import type { OutboundEntry } from '../../src/store/repository.js';

function entry(seq: number, size: number): OutboundEntry {
  return { seq, message: { topic: 't', payload: Buffer.alloc(size), qos: 1 }, qos: 1, retain: false, state: 'queued' };
}

/** A round: this many pushes (payload sizes vary with seq), then this many shifts, then maybe a clear. */
type Round = { pushes: number; shifts: number; clear: boolean };

describe('EntryWindow', () => {
  it('behaves as an array used as a FIFO, its byte count included, across compactions', () => {
    const round: fc.Arbitrary<Round> = fc.record({
      // Counts, not arrays: fast-check keeps generated arrays short, and compaction needs thousands.
      pushes: fc.nat({ max: 3000 }),
      shifts: fc.nat({ max: 3200 }),
      clear: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(round, { minLength: 1, maxLength: 4 }), (rounds) => {
        const window = new EntryWindow();
        let model: OutboundEntry[] = [];
        let seq = 0;
        const check = () => {
          expect(window.length).toBe(model.length);
          expect(window.first).toBe(model[0]);
          expect(window.last).toBe(model[model.length - 1]);
          expect(window.bytes).toBe(model.reduce((sum, held) => sum + held.message.payload.length, 0));
        };
        for (const { pushes, shifts, clear } of rounds) {
          for (let index = 0; index < pushes; index++) {
            const next = entry(++seq, (seq * 7) % 41);
            window.push(next);
            model.push(next);
          }
          check();
          for (let index = 0; index < shifts; index++) {
            expect(window.shift()).toBe(model.shift());
            if (index % 97 === 0) check();
          }
          check();
          if (clear) {
            window.clear();
            model = [];
            check();
          }
        }
      }),
      { numRuns: 40 },
    );
  });
});
