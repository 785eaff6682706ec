import { describe, expect, it } from 'vitest';
import { ReplyQueue } from '../../src/protocol/reply-queue.js';

/** A promise settled from outside, as a store write would be. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (error: unknown) => void } {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets every settled promise's callbacks run. */
async function settle(): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve));
}

function recordingQueue(): { queue: ReplyQueue; failures: unknown[]; settledCounts: number[] } {
  const failures: unknown[] = [];
  const settledCounts: number[] = [];
  const queue: ReplyQueue = new ReplyQueue({
    failed: (error) => failures.push(error),
    settled: () => settledCounts.push(queue.count),
  });
  return { queue, failures, settledCounts };
}

describe('ReplyQueue: a connection\'s replies in arrival order', () => {
  it('sends each reply with its work\'s result, in the order added, whatever order the works finish in', async () => {
    const { queue } = recordingQueue();
    const sent: string[] = [];
    const works = [deferred<string>(), deferred<string>(), deferred<string>()];
    for (const work of works) queue.add(work.promise, (result) => void sent.push(result), undefined, 10);
    expect(queue.count).toBe(3);
    expect(queue.bytes).toBe(30);

    works[2]!.resolve('third');
    works[1]!.resolve('second');
    await settle();
    expect(sent).toEqual([]);
    works[0]!.resolve('first');
    await settle();
    expect(sent).toEqual(['first', 'second', 'third']);
    expect(queue.count).toBe(0);
    expect(queue.bytes).toBe(0);
  });

  it('a send that returns a promise holds the replies behind it until it settles', async () => {
    const { queue } = recordingQueue();
    const sent: string[] = [];
    const delivering = deferred();
    queue.add(Promise.resolve(), () => delivering.promise.then(() => void sent.push('slow')));
    queue.add(Promise.resolve(), () => void sent.push('quick'));
    await settle();
    expect(sent).toEqual([]);
    expect(queue.count).toBe(2);
    delivering.resolve();
    await settle();
    expect(sent).toEqual(['slow', 'quick']);
  });

  it('a failed work (or send) is not sent: its onFailure runs, the hooks hear it, and the replies behind it still go', async () => {
    const { queue, failures } = recordingQueue();
    const sent: string[] = [];
    const abandoned: string[] = [];
    const broken = new Error('write failed');
    queue.add(Promise.reject(broken), () => void sent.push('never'), () => abandoned.push('stored'));
    queue.add(Promise.resolve(), () => {
      throw new Error('send threw');
    }, () => abandoned.push('thrown'));
    queue.add(Promise.resolve(), () => Promise.reject(new Error('send rejected')), () => abandoned.push('rejected'));
    queue.add(Promise.resolve(), () => void sent.push('after'));
    await settle();
    expect(sent).toEqual(['after']);
    expect(abandoned).toEqual(['stored', 'thrown', 'rejected']);
    expect(failures.map((error) => (error as Error).message)).toEqual(['write failed', 'send threw', 'send rejected']);
    expect(queue.count).toBe(0);
  });

  it('sent() resolves once every reply queued before it is sent, not before', async () => {
    const { queue } = recordingQueue();
    await queue.sent(); // nothing queued: at once
    const work = deferred();
    const delivering = deferred();
    const sent: string[] = [];
    queue.add(work.promise, () => delivering.promise.then(() => void sent.push('reply')));
    let done = false;
    const all = queue.sent().then(() => (done = true));
    work.resolve();
    await settle();
    expect(done).toBe(false);
    delivering.resolve();
    await all;
    expect(sent).toEqual(['reply']);
  });
});
