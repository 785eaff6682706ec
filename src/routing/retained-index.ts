import type { RetainedMessage } from '../store/repository.js';
import { topicMatches } from './topic.js';

/** The retained messages in memory, for matching new subscriptions; the store holds the durable copy. */
export class RetainedIndex {
  readonly #byTopic = new Map<string, RetainedMessage>();

  set(message: RetainedMessage): void {
    this.#byTopic.set(message.topic, message);
  }

  delete(topic: string): void {
    this.#byTopic.delete(topic);
  }

  get size(): number {
    return this.#byTopic.size;
  }

  /** Retained messages whose topic matches the filter, oldest-set first. */
  match(filter: string): RetainedMessage[] {
    if (!filter.includes('+') && !filter.includes('#')) {
      const message = this.#byTopic.get(filter);
      return message ? [message] : [];
    }
    return [...this.#byTopic.values()].filter((message) => topicMatches(filter, message.topic));
  }
}
