import type { QoS } from '../store/repository.js';

interface Node {
  children: Map<string, Node>;
  /** clientId → granted QoS of subscriptions whose filter ends at this node. */
  subscribers: Map<string, QoS>;
}

function newNode(): Node {
  return { children: new Map(), subscribers: new Map() };
}

/**
 * Subscriptions of every session, indexed by filter level, so a PUBLISH finds its subscribers by
 * walking the topic's levels instead of testing every filter.
 */
export class TopicTree {
  readonly #root = newNode();

  add(filter: string, clientId: string, qos: QoS): void {
    let node = this.#root;
    for (const level of filter.split('/')) {
      let child = node.children.get(level);
      if (!child) {
        child = newNode();
        node.children.set(level, child);
      }
      node = child;
    }
    node.subscribers.set(clientId, qos);
  }

  remove(filter: string, clientId: string): void {
    const path: Array<[Node, string]> = [];
    let node = this.#root;
    for (const level of filter.split('/')) {
      const child = node.children.get(level);
      if (!child) return;
      path.push([node, level]);
      node = child;
    }
    node.subscribers.delete(clientId);
    // Prune empty branches so a churn of subscriptions does not leave the tree growing.
    for (let index = path.length - 1; index >= 0; index--) {
      const [parent, level] = path[index]!;
      const child = parent.children.get(level)!;
      if (child.subscribers.size > 0 || child.children.size > 0) break;
      parent.children.delete(level);
    }
  }

  /**
   * The subscribers of a topic, each once with the highest QoS among its matching subscriptions
   * [MQTT-3.3.5-1].
   */
  match(topic: string): Map<string, QoS> {
    const result = new Map<string, QoS>();
    const levels = topic.split('/');
    const collect = (subscribers: Map<string, QoS>) => {
      for (const [clientId, qos] of subscribers) {
        const known = result.get(clientId);
        if (known === undefined || qos > known) result.set(clientId, qos);
      }
    };
    const walk = (node: Node, depth: number) => {
      // Wildcards at the first level do not match topics beginning with '$' [MQTT-4.7.2-1].
      const wildcardsAllowed = depth > 0 || !topic.startsWith('$');
      if (wildcardsAllowed) {
        const multi = node.children.get('#');
        if (multi) collect(multi.subscribers);
      }
      if (depth === levels.length) {
        collect(node.subscribers);
        return;
      }
      const exact = node.children.get(levels[depth]!);
      if (exact) walk(exact, depth + 1);
      if (wildcardsAllowed) {
        const single = node.children.get('+');
        if (single) walk(single, depth + 1);
      }
    };
    walk(this.#root, 0);
    return result;
  }
}
