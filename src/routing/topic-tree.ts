import type { QoS, Subscription } from '../store/model.js';

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
    return noChildren && noSubscribers;
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

  /** Adds each subscriber to `result`, merged with what other subscriptions of it matched. */
  collect(result: Map<string, Matched>, origin: string | undefined): void {
    if (this.subscribers) {
      for (const [clientId, route] of this.subscribers) merge(result, clientId, route, origin);
    } else if (this.clientId !== undefined) {
      merge(result, this.clientId, this.route, origin);
    }
  }
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

/**
 * Subscriptions of every session, indexed by filter level, so a PUBLISH finds its subscribers by
 * walking the topic's levels instead of testing every filter. It counts its nodes and their
 * memory: nodes are what long, distinct filters cost and what matching a PUBLISH may have to visit,
 * so the session manager budgets them (`plan` tells what new filters would add).
 */
export class TopicTree {
  readonly #root = new Node();
  #nodes = 0;
  #bytes = 0;

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
        let bytes = 0;
        let node: Node | undefined = this.#root;
        let path = '';
        for (const level of filter.split('/')) {
          path = `${path}/${level}`;
          node = node?.get(level);
          if (node === undefined && !created.has(path)) {
            created.add(path);
            bytes += nodeBytes(level);
          }
        }
        return bytes;
      },
    };
  }

  add(filter: string, clientId: string, route: Route): void {
    let node = this.#root;
    for (const level of filter.split('/')) {
      let child = node.get(level);
      if (!child) {
        child = new Node();
        node.attach(level, child);
        this.#nodes++;
        this.#bytes += nodeBytes(level);
      }
      node = child;
    }
    node.subscribe(clientId, route);
  }

  remove(filter: string, clientId: string): void {
    const path: Array<[Node, string]> = [];
    let node = this.#root;
    for (const level of filter.split('/')) {
      const child = node.get(level);
      if (!child) return;
      path.push([node, level]);
      node = child;
    }
    node.unsubscribe(clientId);
    // Prune empty branches so a churn of subscriptions does not leave the tree growing.
    for (let index = path.length - 1; index >= 0; index--) {
      const [parent, level] = path[index]!;
      if (!parent.get(level)!.isEmpty) break;
      parent.detach(level);
      this.#nodes--;
      this.#bytes -= nodeBytes(level);
    }
  }

  /**
   * The subscribers of a topic, each once with the highest QoS among its matching subscriptions
   * [MQTT-3.3.5-1] and what their options add (see merge). `origin`: the client id of the session
   * that published it, for No Local.
   */
  match(topic: string, origin?: string): Map<string, Matched> {
    const result = new Map<string, Matched>();
    const levels = topic.split('/');
    const walk = (node: Node, depth: number) => {
      // Wildcards at the first level do not match topics beginning with '$' [MQTT-4.7.2-1].
      const wildcardsAllowed = depth > 0 || !topic.startsWith('$');
      if (wildcardsAllowed) node.get('#')?.collect(result, origin);
      if (depth === levels.length) {
        node.collect(result, origin);
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
    return result;
  }
}
