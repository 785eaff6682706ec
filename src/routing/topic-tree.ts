import type { QoS, Subscription } from '../store/model.js';
import { parseSharedFilter } from './topic.js';

/**
 * What the tree holds for one subscription: a bare QoS when it has no options (every 3.1.1
 * subscription, so those entries stay as small as they were), else its MQTT 5 options.
 */
export type Route = QoS | RouteOptions;

export interface RouteOptions {
  readonly qos: QoS;
  readonly noLocal?: boolean;
  readonly retainAsPublished?: boolean;
  readonly identifier?: number;
}

/** What one session gets of a message: a bare QoS, or what its matching subscriptions with options add. */
export type Matched = QoS | MatchedOptions;

export interface MatchedOptions {
  /** The highest QoS among the matching subscriptions [MQTT-3.3.4-2]. */
  qos: QoS;
  /** A matching subscription has Retain As Published. */
  retainAsPublished: boolean;
  /** Every matching subscription's identifier [MQTT-3.3.4-3]. */
  identifiers: number[] | undefined;
  /** The shared subscriptions (their filters, `$share/...`) this session was chosen for: see SharedGroup. */
  shared?: string[];
}

/**
 * The members of one shared subscription `$share/{group}/{filter}` (MQTT 5.0 4.8.2): sessions
 * holding it, in the order they joined, and where round robin goes on from. Which member gets a
 * message is the distributor's choice (it knows who is connected); the group only keeps them.
 */
export class SharedGroup {
  /** The filter the members hold, `$share/{group}/{filter}`: what a delivery through the group is tagged with. */
  readonly key: string;
  readonly #routes = new Map<string, Route>();
  readonly #order: string[] = [];
  #cursor = 0;

  constructor(key: string) {
    this.key = key;
  }

  get size(): number {
    return this.#order.length;
  }

  route(clientId: string): Route | undefined {
    return this.#routes.get(clientId);
  }

  /** Members in round-robin order: the one after the last chosen first. */
  *candidates(): Generator<string> {
    const count = this.#order.length;
    for (let step = 0; step < count; step++) yield this.#order[(this.#cursor + step) % count]!;
  }

  /** `clientId` was given a message: round robin goes on after it. */
  chose(clientId: string): void {
    const index = this.#order.indexOf(clientId);
    if (index >= 0) this.#cursor = index + 1;
  }

  join(clientId: string, route: Route): void {
    if (!this.#routes.has(clientId)) this.#order.push(clientId);
    this.#routes.set(clientId, route);
  }

  leave(clientId: string): void {
    if (!this.#routes.delete(clientId)) return;
    const index = this.#order.indexOf(clientId);
    this.#order.splice(index, 1);
    // The member after the one that left keeps its turn.
    if (index < this.#cursor) this.#cursor--;
  }
}

/**
 * Memory of a shared group, on top of its members' subscriptions (counted as any other): the
 * group object, its map and order, measured on Node 20 and rounded up; its key comes on top.
 */
export const SHARED_GROUP_BYTES = 256;

function groupBytes(key: string): number {
  return SHARED_GROUP_BYTES + 2 * key.length;
}

/** Memory of a route with options, on top of SUBSCRIPTION_BYTES: the options object. */
export const ROUTE_OPTIONS_BYTES = 64;

/** The route of a subscription: its options, or its bare QoS when it has none that routing uses. */
export function routeOf(subscription: Subscription): Route {
  const { qos, noLocal, retainAsPublished, identifier } = subscription;
  if (!noLocal && !retainAsPublished && identifier === undefined) return qos;
  return {
    qos,
    ...(noLocal ? { noLocal } : {}),
    ...(retainAsPublished ? { retainAsPublished } : {}),
    ...(identifier === undefined ? {} : { identifier }),
  };
}

/** The subscription a route was made from, Retain Handling aside (it matters only when subscribing). */
export function subscriptionOf(filter: string, route: Route): Subscription {
  return typeof route === 'number' ? { filter, qos: route } : { filter, ...route };
}

export function qosOf(route: Route | Matched): QoS {
  return typeof route === 'number' ? route : route.qos;
}

/**
 * One level of the tree. Most nodes have one child and no subscriber, or one subscriber and no
 * child (the levels of a filter that only one session holds), so both are held inline and a Map
 * is made only for the second: a Map per node made every node several times larger, which is
 * what a client holding many long, distinct filters could make the broker pay for.
 */
class Node {
  /** The only child, by its level, until there is a second one. */
  level: string | undefined = undefined;
  child: Node | undefined = undefined;
  /** Children by level, once there are two or more. */
  children: Map<string, Node> | undefined = undefined;
  /** The only subscriber (client id → its route), until there is a second one. */
  clientId: string | undefined = undefined;
  route: Route = 0;
  /** Subscribers by client id, once there are two or more. */
  subscribers: Map<string, Route> | undefined = undefined;
  /** Shared subscriptions to this node's filter, by their `$share/...` filter; undefined while there is none. */
  groups: Map<string, SharedGroup> | undefined = undefined;

  get(level: string): Node | undefined {
    if (this.children) return this.children.get(level);
    return this.level === level ? this.child : undefined;
  }

  /** Adds a new child (the caller checked there is none for `level`). */
  attach(level: string, child: Node): void {
    if (this.children) {
      this.children.set(level, child);
    } else if (this.child === undefined) {
      this.level = level;
      this.child = child;
    } else {
      this.children = new Map([
        [this.level!, this.child],
        [level, child],
      ]);
      this.level = undefined;
      this.child = undefined;
    }
  }

  detach(level: string): void {
    if (this.children) {
      this.children.delete(level);
    } else if (this.level === level) {
      this.level = undefined;
      this.child = undefined;
    }
  }

  get isEmpty(): boolean {
    const noChildren = this.children ? this.children.size === 0 : this.child === undefined;
    const noSubscribers = this.subscribers ? this.subscribers.size === 0 : this.clientId === undefined;
    return noChildren && noSubscribers && this.groups === undefined;
  }

  subscribe(clientId: string, route: Route): void {
    if (this.subscribers) {
      this.subscribers.set(clientId, route);
    } else if (this.clientId === undefined || this.clientId === clientId) {
      this.clientId = clientId;
      this.route = route;
    } else {
      this.subscribers = new Map([
        [this.clientId, this.route],
        [clientId, route],
      ]);
      this.clientId = undefined;
    }
  }

  unsubscribe(clientId: string): void {
    if (this.subscribers) this.subscribers.delete(clientId);
    else if (this.clientId === clientId) this.clientId = undefined;
  }

  /**
   * Adds each subscriber to `result`, merged with what other subscriptions of it matched. true if
   * one of them has options: then the result may depend on `origin` (No Local).
   */
  collect(result: Map<string, Matched>, origin: string | undefined): boolean {
    let options = false;
    if (this.subscribers) {
      for (const [clientId, route] of this.subscribers) {
        if (typeof route !== 'number') options = true;
        merge(result, clientId, route, origin);
      }
    } else if (this.clientId !== undefined) {
      if (typeof this.route !== 'number') options = true;
      merge(result, this.clientId, this.route, origin);
    }
    return options;
  }
}

/**
 * A session chosen for a shared subscription: it gets the message at that subscription's QoS, or
 * at the higher one another of its subscriptions matched with, once [MQTT-3.3.4-2]; the
 * subscription's filter is noted on the delivery (see MatchedOptions.shared). No Local cannot be
 * set on a shared subscription [MQTT-3.8.3-4].
 */
export function mergeShared(result: Map<string, Matched>, clientId: string, route: Route, key: string): void {
  const known = result.get(clientId);
  let matched: MatchedOptions;
  if (known === undefined || typeof known === 'number') {
    matched = { qos: known ?? 0, retainAsPublished: false, identifiers: undefined };
    result.set(clientId, matched);
  } else {
    matched = known;
  }
  const qos = qosOf(route);
  if (qos > matched.qos) matched.qos = qos;
  if (typeof route !== 'number') {
    if (route.retainAsPublished) matched.retainAsPublished = true;
    if (route.identifier !== undefined) (matched.identifiers ??= []).push(route.identifier);
  }
  (matched.shared ??= []).push(key);
}

/**
 * One message per session, however many of its subscriptions match: at the highest of their QoS,
 * with every identifier, retained as published if any says so [MQTT-3.3.4-2] [MQTT-3.3.4-3]. A
 * subscription with No Local does not match what its own session published [MQTT-3.8.3-3].
 */
function merge(result: Map<string, Matched>, clientId: string, route: Route, origin: string | undefined): void {
  const known = result.get(clientId);
  if (typeof route === 'number') {
    if (known === undefined) result.set(clientId, route);
    else if (typeof known === 'number') {
      if (route > known) result.set(clientId, route);
    } else if (route > known.qos) known.qos = route;
    return;
  }
  if (route.noLocal && clientId === origin) return;
  let matched: MatchedOptions;
  if (known === undefined || typeof known === 'number') {
    matched = { qos: known ?? 0, retainAsPublished: false, identifiers: undefined };
    result.set(clientId, matched);
  } else {
    matched = known;
  }
  if (route.qos > matched.qos) matched.qos = route.qos;
  if (route.retainAsPublished) matched.retainAsPublished = true;
  if (route.identifier !== undefined) (matched.identifiers ??= []).push(route.identifier);
}

/**
 * What one node costs in memory, as the subscription budget counts it: the node itself and its
 * entry in its parent, measured on Node 20 and rounded up; its level string comes on top.
 */
export const NODE_BYTES = 96;

/** The bytes the budget counts for a node of `level`. */
function nodeBytes(level: string): number {
  return NODE_BYTES + 2 * level.length;
}

/** Bounds of what TopicTree.subscribers keeps: topics, the length of each, subscribers across them. */
const FOUND_TOPICS = 1024;
const FOUND_TOPIC_LENGTH = 256;
const FOUND_ENTRIES = 65_536;

/**
 * Subscriptions of every session, indexed by filter level, so a PUBLISH finds its subscribers by
 * walking the topic's levels instead of testing every filter. It counts its nodes and their
 * memory: nodes are what long, distinct filters cost and what matching a PUBLISH may have to visit,
 * so the session manager budgets them (`plan` tells what new filters would add).
 */
export class TopicTree {
  readonly #root = new Node();
  /** Every shared group by its `$share/...` filter, for a hand-over (see Distributor.handOver). */
  readonly #groups = new Map<string, SharedGroup>();
  #nodes = 0;
  #bytes = 0;
  /** What `subscribers` found for recent topics, until the next add or remove (see subscribers). */
  readonly #found = new Map<string, ReadonlyMap<string, Matched>>();
  #foundEntries = 0;

  /** Nodes in the tree (the root not counted): one per distinct level path of the filters held. */
  get nodes(): number {
    return this.#nodes;
  }

  /** The nodes' memory as the budget counts it (NODE_BYTES and the level of each). */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * A plan for adding filters: `add(filter)` returns the bytes of the nodes that filter would
   * create, not counting nodes the tree has or an earlier filter of the same plan creates.
   */
  plan(): { add(filter: string): number } {
    const created = new Set<string>();
    return {
      add: (filter) => {
        const shared = parseSharedFilter(filter);
        let bytes = 0;
        let node: Node | undefined = this.#root;
        let path = '';
        for (const level of (shared?.filter ?? filter).split('/')) {
          path = `${path}/${level}`;
          node = node?.get(level);
          if (node === undefined && !created.has(path)) {
            created.add(path);
            bytes += nodeBytes(level);
          }
        }
        // A shared subscription also makes its group, when it is the group's first member.
        if (shared && node?.groups?.get(filter) === undefined && !created.has(filter)) {
          created.add(filter);
          bytes += groupBytes(filter);
        }
        return bytes;
      },
    };
  }

  /**
   * Adds a subscription. A shared one (`$share/{group}/{filter}`) makes the session a member of
   * that group, held at the node of its filter; every other one a subscriber of the node.
   */
  add(filter: string, clientId: string, route: Route): void {
    this.#forgetFound();
    const shared = parseSharedFilter(filter);
    let node = this.#root;
    for (const level of (shared?.filter ?? filter).split('/')) {
      let child = node.get(level);
      if (!child) {
        child = new Node();
        node.attach(level, child);
        this.#nodes++;
        this.#bytes += nodeBytes(level);
      }
      node = child;
    }
    if (!shared) {
      node.subscribe(clientId, route);
      return;
    }
    let group = node.groups?.get(filter);
    if (!group) {
      group = new SharedGroup(filter);
      (node.groups ??= new Map()).set(filter, group);
      this.#groups.set(filter, group);
      this.#bytes += groupBytes(filter);
    }
    group.join(clientId, route);
  }

  remove(filter: string, clientId: string): void {
    this.#forgetFound();
    const shared = parseSharedFilter(filter);
    const path: Array<[Node, string]> = [];
    let node = this.#root;
    for (const level of (shared?.filter ?? filter).split('/')) {
      const child = node.get(level);
      if (!child) return;
      path.push([node, level]);
      node = child;
    }
    if (shared) {
      const group = node.groups?.get(filter);
      group?.leave(clientId);
      if (group?.size === 0) {
        node.groups!.delete(filter);
        if (node.groups!.size === 0) node.groups = undefined;
        this.#groups.delete(filter);
        this.#bytes -= groupBytes(filter);
      }
    } else {
      node.unsubscribe(clientId);
    }
    // Prune empty branches so a churn of subscriptions does not leave the tree growing.
    for (let index = path.length - 1; index >= 0; index--) {
      const [parent, level] = path[index]!;
      if (!parent.get(level)!.isEmpty) break;
      parent.detach(level);
      this.#nodes--;
      this.#bytes -= nodeBytes(level);
    }
  }

  /** How many shared groups have members: none, and routing does not look for them. */
  get groups(): number {
    return this.#groups.size;
  }

  /** The shared group of a `$share/...` filter, while it has members. */
  group(filter: string): SharedGroup | undefined {
    return this.#groups.get(filter);
  }

  /**
   * The subscribers of a topic, each once with the highest QoS among its matching subscriptions
   * [MQTT-3.3.5-1] and what their options add (see merge). `origin`: the client id of the session
   * that published it, for No Local. `groups`, when given, receives the shared groups whose filter
   * matches: one of their members gets the message, chosen by the caller.
   */
  match(topic: string, origin?: string, groups?: SharedGroup[]): Map<string, Matched> {
    return this.#walk(topic, origin, groups).result;
  }

  /**
   * `match` without shared groups, for routing: the same answer, kept for the topic until the tree
   * changes, so that a topic published to again and again (a sensor's, a bridge's) is matched
   * once, not walked and built anew for every message (a Map, a split, closures: 4 % of a QoS 1
   * message's busy time, and a tenth of what it allocated). Kept only when the answer cannot
   * depend on `origin`: every matching subscription is a bare QoS, without options such as No
   * Local. Bounded: at most FOUND_TOPICS topics of at most FOUND_TOPIC_LENGTH characters, and
   * FOUND_ENTRIES subscribers across them; past that it starts afresh. Read-only: callers share it.
   */
  subscribers(topic: string, origin?: string): ReadonlyMap<string, Matched> {
    const known = this.#found.get(topic);
    if (known !== undefined) return known;
    const { result, options } = this.#walk(topic, origin, undefined);
    if (options || topic.length > FOUND_TOPIC_LENGTH || result.size > FOUND_ENTRIES) return result;
    if (this.#found.size >= FOUND_TOPICS || this.#foundEntries + result.size > FOUND_ENTRIES) this.#forgetFound();
    this.#found.set(topic, result);
    this.#foundEntries += result.size;
    return result;
  }

  #forgetFound(): void {
    if (this.#found.size === 0) return;
    this.#found.clear();
    this.#foundEntries = 0;
  }

  /** The matching walk; `options`: a subscription with options matched (or was left out for No Local). */
  #walk(topic: string, origin: string | undefined, groups: SharedGroup[] | undefined): { result: Map<string, Matched>; options: boolean } {
    const result = new Map<string, Matched>();
    let options = false;
    const levels = topic.split('/');
    const collect = (node: Node) => {
      if (node.collect(result, origin)) options = true;
      if (groups !== undefined && node.groups !== undefined) groups.push(...node.groups.values());
    };
    const walk = (node: Node, depth: number) => {
      // Wildcards at the first level do not match topics beginning with '$' [MQTT-4.7.2-1].
      const wildcardsAllowed = depth > 0 || !topic.startsWith('$');
      if (wildcardsAllowed) {
        const any = node.get('#');
        if (any) collect(any);
      }
      if (depth === levels.length) {
        collect(node);
        return;
      }
      const exact = node.get(levels[depth]!);
      if (exact) walk(exact, depth + 1);
      if (wildcardsAllowed) {
        const single = node.get('+');
        if (single) walk(single, depth + 1);
      }
    };
    walk(this.#root, 0);
    return { result, options };
  }
}
