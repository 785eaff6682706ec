import type { QoS, RetainedEntry } from '../store/repository.js';

/** A retained message as matching finds it: a stored one's payload is read from the store; a memory-only one's is here. */
export interface RetainedMatch extends RetainedEntry {
  /** Set for a memory-only message (see setEphemeral); absent: the payload is in the store. */
  payload?: Buffer;
}

/**
 * Node visits between two pause points of `matches`: a slice of work short enough that other
 * clients are served in between, long enough that pausing costs little beside it.
 */
const VISITS_PER_SLICE = 1024;

/** What matching yields between two slices of work. */
export const PAUSE = Symbol('pause');

class Node {
  children: Map<string, Node> | undefined;
  /** QoS and payload size of the topic's retained message in the store; qos -1: none. */
  storedQos: QoS | -1 = -1;
  storedSize = 0;
  /** A memory-only retained message (QoS 0), never written to the store; shadows the stored one. */
  ephemeral: Buffer | undefined;

  get empty(): boolean {
    return this.storedQos === -1 && this.ephemeral === undefined && (this.children === undefined || this.children.size === 0);
  }
}

interface Visit {
  node: Node;
  /** Topic levels of `node` below the root. */
  depth: number;
  /** The topic `node` stands for ('' for the root). */
  topic: string;
}

interface ChildWalk {
  children: IterableIterator<[string, Node]>;
  depth: number;
  topic: string;
  /** Below a `#`: every descendant matches. Otherwise each child is matched against the filter's next level. */
  wholeSubtree: boolean;
}

/**
 * The retained messages the broker knows of, in a tree keyed by topic level: what it keeps in
 * memory of each is its QoS and size, never the payload (memory-only messages aside). Matching a
 * filter walks only the branches the filter can reach, so its cost is the number of nodes on
 * those branches, not the number of retained messages; and it is done in slices (`matches` yields
 * PAUSE between them), so that a subscription reaching many nodes does not hold up other clients.
 */
export class RetainedIndex {
  readonly #root = new Node();
  #stored = 0;

  /** The stored retained message of `topic` (its payload is in the store). */
  setStored(topic: string, qos: QoS, size: number): void {
    const node = this.#reach(topic);
    if (node.storedQos === -1) this.#stored++;
    node.storedQos = qos;
    node.storedSize = size;
  }

  deleteStored(topic: string): void {
    this.#remove(topic, (node) => {
      if (node.storedQos === -1) return;
      node.storedQos = -1;
      node.storedSize = 0;
      this.#stored--;
    });
  }

  /** A memory-only retained message (QoS 0): matched like the others, never stored, never counted against the store's limits. */
  setEphemeral(topic: string, payload: Buffer): void {
    this.#reach(topic).ephemeral = payload;
  }

  deleteEphemeral(topic: string): void {
    this.#remove(topic, (node) => {
      node.ephemeral = undefined;
    });
  }

  /** Stored retained messages known. */
  get size(): number {
    return this.#stored;
  }

  /**
   * The retained messages whose topic matches `filter`, and PAUSE after every slice of work. A
   * caller may await other work at a PAUSE; changes made meanwhile are seen or not, as their
   * place in the walk has it, and what was found before stays found (the store decides whether it
   * is still there).
   */
  *matches(filter: string): Generator<RetainedMatch | typeof PAUSE> {
    const levels = filter.split('/');
    // Nodes still to match against the filter, and walks over children under way. A visit is
    // taken before the walk that queued it goes on, so neither grows beyond the filter's depth.
    const visits: Visit[] = [{ node: this.#root, depth: 0, topic: '' }];
    const walks: ChildWalk[] = [];
    let work = 0;
    while (visits.length > 0 || walks.length > 0) {
      if (++work % VISITS_PER_SLICE === 0) yield PAUSE;
      const visit = visits.pop();
      if (visit !== undefined) {
        const match = this.#visit(visit, levels, walks, visits);
        if (match) yield match;
        continue;
      }
      const walk = walks[walks.length - 1]!;
      const next = walk.children.next();
      if (next.done) {
        walks.pop();
        continue;
      }
      const [level, child] = next.value;
      // Wildcards at the first level do not match topics beginning with '$' [MQTT-4.7.2-1].
      if (walk.depth === 0 && level.startsWith('$')) continue;
      const topic = walk.depth === 0 ? level : `${walk.topic}/${level}`;
      if (!walk.wholeSubtree) {
        visits.push({ node: child, depth: walk.depth + 1, topic });
        continue;
      }
      const match = found(child, topic);
      if (match) yield match;
      if (child.children !== undefined && child.children.size > 0) {
        walks.push({ children: child.children.entries(), depth: walk.depth + 1, topic, wholeSubtree: true });
      }
    }
  }

  /** Matches one node against the filter's level at its depth; returns it if it matches whole, queues what lies below. */
  #visit({ node, depth, topic }: Visit, levels: string[], walks: ChildWalk[], visits: Visit[]): RetainedMatch | undefined {
    if (depth === levels.length) return found(node, topic);
    const level = levels[depth]!;
    if (level === '#') {
      if (node.children !== undefined && node.children.size > 0) {
        walks.push({ children: node.children.entries(), depth, topic, wholeSubtree: true });
      }
      // `sport/#` also matches `sport` itself [MQTT-4.7.1-2].
      return depth > 0 ? found(node, topic) : undefined;
    }
    if (node.children === undefined) return undefined;
    if (level === '+') {
      walks.push({ children: node.children.entries(), depth, topic, wholeSubtree: false });
      return undefined;
    }
    const child = node.children.get(level);
    if (child !== undefined) visits.push({ node: child, depth: depth + 1, topic: depth === 0 ? level : `${topic}/${level}` });
    return undefined;
  }

  #reach(topic: string): Node {
    let node = this.#root;
    for (const level of topic.split('/')) {
      node.children ??= new Map();
      let child = node.children.get(level);
      if (child === undefined) {
        child = new Node();
        node.children.set(level, child);
      }
      node = child;
    }
    return node;
  }

  /** Applies `change` to the topic's node, then prunes the branches it left empty. */
  #remove(topic: string, change: (node: Node) => void): void {
    const path: Node[] = [this.#root];
    const levels = topic.split('/');
    for (const level of levels) {
      const child = path[path.length - 1]!.children?.get(level);
      if (child === undefined) return;
      path.push(child);
    }
    change(path[path.length - 1]!);
    for (let index = path.length - 1; index > 0; index--) {
      if (!path[index]!.empty) break;
      const parent = path[index - 1]!;
      parent.children!.delete(levels[index - 1]!);
      if (parent.children!.size === 0) parent.children = undefined;
    }
  }
}

/** The retained message at `node`, if it holds one: the memory-only one first. */
function found(node: Node, topic: string): RetainedMatch | undefined {
  if (node.ephemeral !== undefined) return { topic, qos: 0, size: node.ephemeral.length, payload: node.ephemeral };
  if (node.storedQos === -1) return undefined;
  return { topic, qos: node.storedQos, size: node.storedSize };
}
