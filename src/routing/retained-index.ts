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

/**
 * A node of the tree: the topic levels from its parent to it (its edge, levels joined by '/'), its
 * children by the first level of their edges, and the retained message of the topic it ends.
 *
 * The tree is a radix tree: a chain of nodes with one child and no message is one node whose
 * edge holds all their levels. So every retained message adds at most two nodes, whatever its
 * number of levels, and what it costs in memory is about its topic's length plus a constant, not
 * a node per level. A sole child is held in two fields, a Map made only for a second one.
 */
class Node {
  /**
   * Never changed once the node is in the tree: a walk paused half-way may hold the node, and its
   * topics must stay what they were. A split or a merge puts a copy with the new edge in its place.
   */
  readonly edge: string;
  #soleKey: string | undefined;
  #sole: Node | undefined;
  #children: Map<string, Node> | undefined;
  /** QoS and payload size of the topic's retained message in the store; qos -1: none. */
  storedQos: QoS | -1 = -1;
  storedSize = 0;
  /** A memory-only retained message (QoS 0), never written to the store; shadows the stored one. */
  ephemeral: Buffer | undefined;

  constructor(edge: string) {
    this.edge = edge;
  }

  /** This node under another edge: the same children and messages. */
  withEdge(edge: string): Node {
    const copy = new Node(edge);
    copy.#soleKey = this.#soleKey;
    copy.#sole = this.#sole;
    copy.#children = this.#children;
    copy.storedQos = this.storedQos;
    copy.storedSize = this.storedSize;
    copy.ephemeral = this.ephemeral;
    return copy;
  }

  child(firstLevel: string): Node | undefined {
    return this.#children !== undefined ? this.#children.get(firstLevel) : this.#soleKey === firstLevel ? this.#sole : undefined;
  }

  /** Adds `node` as the child for its edge's first level, or puts it in place of the child there. */
  setChild(node: Node): void {
    const key = firstLevel(node.edge);
    if (this.#children !== undefined) {
      this.#children.set(key, node);
    } else if (this.#sole === undefined || this.#soleKey === key) {
      this.#soleKey = key;
      this.#sole = node;
    } else {
      this.#children = new Map([
        [this.#soleKey!, this.#sole],
        [key, node],
      ]);
      this.#soleKey = undefined;
      this.#sole = undefined;
    }
  }

  removeChild(node: Node): void {
    const key = firstLevel(node.edge);
    if (this.#children !== undefined) {
      this.#children.delete(key);
      if (this.#children.size === 1) {
        const [soleKey, sole] = this.#children.entries().next().value!;
        this.#soleKey = soleKey;
        this.#sole = sole;
        this.#children = undefined;
      }
    } else if (this.#soleKey === key) {
      this.#soleKey = undefined;
      this.#sole = undefined;
    }
  }

  get hasChildren(): boolean {
    return this.#children !== undefined || this.#sole !== undefined;
  }

  /** The only child, if there is exactly one. */
  get onlyChild(): Node | undefined {
    return this.#children === undefined ? this.#sole : undefined;
  }

  /** The children; a live view, as a Map iterator is. */
  children(): Iterator<Node> {
    if (this.#children !== undefined) return this.#children.values();
    return (this.#sole === undefined ? [] : [this.#sole])[Symbol.iterator]();
  }

  get holdsMessage(): boolean {
    return this.storedQos !== -1 || this.ephemeral !== undefined;
  }
}

interface Visit {
  node: Node;
  /** Topic levels from the root to the end of `node`'s edge. */
  depth: number;
  /** The topic `node` stands for ('' for the root). */
  topic: string;
}

interface ChildWalk {
  children: Iterator<Node>;
  /** Depth and topic of the node whose children these are. */
  depth: number;
  topic: string;
  /** Below a `#`: every descendant matches. Otherwise each child is matched against the filter's next levels. */
  wholeSubtree: boolean;
}

/** Where a filter goes through an edge: nowhere, into the whole subtree below it (a `#`), or on at this depth. */
const NO_MATCH = -1;
const WHOLE_SUBTREE = -2;

/**
 * The retained messages the broker knows of, in a tree keyed by topic level: what it keeps in
 * memory of each is its topic, QoS and size, never the payload (memory-only messages aside).
 * Matching a filter walks only the branches the filter can reach, so its cost is the number of
 * nodes on those branches, not the number of retained messages; and it is done in slices
 * (`matches` yields PAUSE between them), so that a subscription reaching many nodes does not hold
 * up other clients.
 */
export class RetainedIndex {
  readonly #root = new Node('');
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
   * place in the walk has it (the store then says whether a message found is still there).
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
      const child = next.value;
      if (!walk.wholeSubtree) {
        const match = enter(child, walk.depth, walk.topic, levels, walks, visits);
        if (match) yield match;
        continue;
      }
      // Wildcards at the first level do not match topics beginning with '$' [MQTT-4.7.2-1].
      if (walk.depth === 0 && child.edge.startsWith('$')) continue;
      const match = inSubtree(child, topicBelow(walk.topic, walk.depth, child.edge), walks);
      if (match) yield match;
    }
  }

  /** Matches a node at the end of its edge against the filter's level there; returns it if it matches whole, queues what lies below. */
  #visit({ node, depth, topic }: Visit, levels: string[], walks: ChildWalk[], visits: Visit[]): RetainedMatch | undefined {
    if (depth === levels.length) return found(node, topic);
    const level = levels[depth]!;
    if (level === '#') {
      if (node.hasChildren) walks.push({ children: node.children(), depth, topic, wholeSubtree: true });
      // `sport/#` also matches `sport` itself [MQTT-4.7.1-2].
      return depth > 0 ? found(node, topic) : undefined;
    }
    if (level === '+') {
      if (node.hasChildren) walks.push({ children: node.children(), depth, topic, wholeSubtree: false });
      return undefined;
    }
    const child = node.child(level);
    return child === undefined ? undefined : enter(child, depth, topic, levels, walks, visits);
  }

  /** The node of `topic`, made (and edges split) as needed. */
  #reach(topic: string): Node {
    const levels = topic.split('/');
    let node = this.#root;
    let at = 0;
    while (at < levels.length) {
      const child = node.child(levels[at]!);
      if (child === undefined) {
        const leaf = new Node(levels.slice(at).join('/'));
        node.setChild(leaf);
        return leaf;
      }
      const edge = child.edge.split('/');
      let common = 1;
      while (common < edge.length && at + common < levels.length && edge[common] === levels[at + common]) common++;
      if (common < edge.length) {
        // The topic ends or turns inside the edge: a node where it does, the rest of the edge below it.
        const middle = new Node(edge.slice(0, common).join('/'));
        middle.setChild(child.withEdge(edge.slice(common).join('/')));
        node.setChild(middle);
        node = middle;
      } else {
        node = child;
      }
      at += common;
    }
    return node;
  }

  /** Applies `change` to the topic's node, then takes out what it left empty and merges what it left as a chain. */
  #remove(topic: string, change: (node: Node) => void): void {
    const levels = topic.split('/');
    const path: Node[] = [this.#root];
    let at = 0;
    while (at < levels.length) {
      const child = path[path.length - 1]!.child(levels[at]!);
      if (child === undefined) return;
      const edge = child.edge.split('/');
      if (at + edge.length > levels.length || edge.some((level, index) => level !== levels[at + index])) return;
      path.push(child);
      at += edge.length;
    }
    change(path[path.length - 1]!);
    for (let index = path.length - 1; index > 0; index--) {
      const node = path[index]!;
      const parent = path[index - 1]!;
      if (node.holdsMessage) return;
      if (!node.hasChildren) {
        parent.removeChild(node);
        continue;
      }
      const only = node.onlyChild;
      if (only !== undefined) parent.setChild(only.withEdge(`${node.edge}/${only.edge}`));
      return;
    }
  }
}

/**
 * A child reached from a node at `depth` through its edge: queued for a visit at the end of its
 * edge if the filter goes through it, or found with its whole subtree if a `#` in the filter is
 * reached inside it.
 */
function enter(child: Node, depth: number, topic: string, levels: string[], walks: ChildWalk[], visits: Visit[]): RetainedMatch | undefined {
  const through = throughEdge(child.edge, levels, depth);
  if (through === NO_MATCH) return undefined;
  const childTopic = topicBelow(topic, depth, child.edge);
  if (through === WHOLE_SUBTREE) return inSubtree(child, childTopic, walks);
  visits.push({ node: child, depth: through, topic: childTopic });
  return undefined;
}

/** A node whose whole subtree matches: its own message, and its children queued to be walked. */
function inSubtree(node: Node, topic: string, walks: ChildWalk[]): RetainedMatch | undefined {
  // A walk's depth only tells the root's children apart; any depth below the root will do.
  if (node.hasChildren) walks.push({ children: node.children(), depth: 1, topic, wholeSubtree: true });
  return found(node, topic);
}

/**
 * How the filter's levels from `depth` on go through `edge`: the depth at its end, NO_MATCH, or
 * WHOLE_SUBTREE for a `#` inside it. Compares in place, without splitting the edge.
 */
function throughEdge(edge: string, levels: string[], depth: number): number {
  let start = 0;
  for (let at = depth; ; at++) {
    const slash = edge.indexOf('/', start);
    const end = slash === -1 ? edge.length : slash;
    const level = levels[at];
    // The filter ends inside the edge: every topic here has more levels than it.
    if (level === undefined) return NO_MATCH;
    if (level === '#') return at === 0 && edge.startsWith('$') ? NO_MATCH : WHOLE_SUBTREE;
    if (level === '+') {
      // [MQTT-4.7.2-1]
      if (at === 0 && edge.startsWith('$')) return NO_MATCH;
    } else if (level.length !== end - start || !edge.startsWith(level, start)) {
      return NO_MATCH;
    }
    if (slash === -1) return at + 1;
    start = slash + 1;
  }
}

/** The topic of a child: its parent's (at `depth` levels; 0 for the root, whose topic is no level at all) and its edge. */
function topicBelow(topic: string, depth: number, edge: string): string {
  return depth === 0 ? edge : `${topic}/${edge}`;
}

function firstLevel(edge: string): string {
  const slash = edge.indexOf('/');
  return slash === -1 ? edge : edge.slice(0, slash);
}

/** The retained message at `node`, if it holds one: the memory-only one first. */
function found(node: Node, topic: string): RetainedMatch | undefined {
  if (node.ephemeral !== undefined) return { topic, qos: 0, size: node.ephemeral.length, payload: node.ephemeral };
  if (node.storedQos === -1) return undefined;
  return { topic, qos: node.storedQos, size: node.storedSize };
}
