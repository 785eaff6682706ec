import fc from 'fast-check';
import type { QoS } from '../../src/store/repository.js';

// Levels from a small alphabet, so random filters and topics actually collide. Empty levels,
// spaces, non-ASCII and '$' levels are in it on purpose.
const LEVELS = ['a', 'b', 'c', '', '$', '$SYS', 'a b', 'ü', '$x'] as const;
export const levelArb = fc.constantFrom(...LEVELS);

export const topicArb = fc
  .array(levelArb, { minLength: 1, maxLength: 5 })
  .map((levels) => levels.join('/'))
  .filter((topic) => topic.length > 0);

export const filterArb = fc
  .tuple(fc.array(fc.oneof(levelArb, fc.constant('+')), { minLength: 0, maxLength: 5 }), fc.boolean())
  .map(([levels, multi]) => (multi ? [...levels, '#'] : levels).join('/'))
  .filter((filter) => filter.length > 0);

export const qosArb = fc.constantFrom<QoS>(0, 1, 2);
