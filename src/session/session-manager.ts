import { BrokerError, ErrorCodes } from '../errors.js';
import type { Logger } from '../logger.js';
import type { TopicTree } from '../routing/topic-tree.js';
import type { QoS, SessionRepository, StoredSession, Subscription } from '../store/repository.js';
import { Session, type OutboundChannel, type SessionLink, type SessionPolicy } from './session.js';

export interface SessionManagerOptions {
  /** Persistent (CleanSession=0) sessions. */
  durable: SessionRepository;
  /** CleanSession=1 sessions: gone with their connection, so never written to disk. */
  volatile: SessionRepository;
  /** The routing table; the manager is its one writer, keeping it equal to the stored subscriptions. */
  subscriptions: TopicTree;
  /** Limits and the ACL's read check, the same for every session. */
  policy: SessionPolicy;
  log: Logger;
}

export interface StartResult {
  session: Session;
  /** The session as the connection holds it until it ends. */
  link: SessionLink;
  /** CONNACK session present flag [MQTT-3.2.2-2] [MQTT-3.2.2-3]. */
  sessionPresent: boolean;
}

/**
 * Owns every session: looks them up, starts them (new or resumed), closes them (state kept) and
 * destroys them (state discarded). It also keeps the routing table equal to the stored
 * subscriptions. Operations on one client id run one at a time, so a takeover racing a
 * disconnect cannot interleave.
 */
export class SessionManager {
  readonly #durable: SessionRepository;
  readonly #volatile: SessionRepository;
  readonly #subscriptions: TopicTree;
  readonly #sessions = new Map<string, Session>();
  readonly #policy: SessionPolicy;
  readonly #log: Logger;
  readonly #locks = new Map<string, Promise<unknown>>();

  constructor(options: SessionManagerOptions) {
    this.#durable = options.durable;
    this.#volatile = options.volatile;
    this.#subscriptions = options.subscriptions;
    this.#policy = options.policy;
    this.#log = options.log;
  }

  /** The persistent sessions read from the store at start, with their subscriptions routed. */
  restore(stored: StoredSession[]): void {
    for (const { clientId, subscriptions, owner } of stored) {
      const session = this.#newSession(clientId, false, owner);
      for (const { filter, qos } of subscriptions) this.#route(session, filter, qos);
    }
  }

  lookup(clientId: string): Session | undefined {
    return this.#sessions.get(clientId);
  }

  get size(): number {
    return this.#sessions.size;
  }

  sessions(): IterableIterator<Session> {
    return this.#sessions.values();
  }

  /**
   * Starts the session of a CONNECT and links it to the connection. An existing connection of the
   * same client is ended first [MQTT-3.1.4-2]. CleanSession=1 discards any previous session
   * [MQTT-3.1.2-6]; CleanSession=0 resumes it or creates one [MQTT-3.1.2-4].
   *
   * `owner` is the user name of the connecting client (undefined: anonymous). A session, live or
   * stored, belongs to the user that created it: for anyone else this rejects with
   * SESSION_OWNED_BY_OTHER before anything is touched (no takeover, no discard).
   */
  start(clientId: string, clean: boolean, channel: OutboundChannel, owner?: string): Promise<StartResult> {
    return this.#exclusive(clientId, async () => {
      let session = this.#sessions.get(clientId);
      if (session && session.owner !== owner) {
        throw new BrokerError(ErrorCodes.SESSION_OWNED_BY_OTHER, `the session of client ${JSON.stringify(clientId)} belongs to another user`);
      }
      if (session?.channel) {
        const previous = session.channel;
        session.unlink(previous);
        previous.end('another connection took over the session');
        if (session.clean) {
          await this.#discard(session);
          session = undefined;
        }
      }
      if (session && clean) {
        await this.#discard(session);
        session = undefined;
      }
      const sessionPresent = session !== undefined;
      if (!session) {
        session = this.#newSession(clientId, clean, owner);
        try {
          await session.create();
        } catch (error) {
          this.#sessions.delete(clientId);
          throw error;
        }
      } else if (!session.clean) {
        // A resumed persistent session: its client is seen now (a new one got that from create).
        await session.touch();
      }
      return { session, link: session.link(channel), sessionPresent };
    });
  }

  /**
   * The connection ended: a persistent session keeps its state and stores when its client was last
   * seen; a clean one is discarded [MQTT-3.1.2-6].
   */
  close(session: Session, channel: OutboundChannel): Promise<void> {
    return this.#exclusive(session.clientId, async () => {
      if (!session.unlink(channel)) return;
      if (session.clean) await this.#discard(session);
      else await session.touch();
    });
  }

  /** Discards a session's state whether or not it is connected; its connection, if any, is ended. */
  destroy(clientId: string, reason: string): Promise<boolean> {
    return this.#exclusive(clientId, async () => {
      const session = this.#sessions.get(clientId);
      if (!session) return false;
      const channel = session.channel;
      if (channel) {
        session.unlink(channel);
        channel.end(reason);
      }
      await this.#discard(session);
      return true;
    });
  }

  /**
   * Stores the subscriptions, then routes them: nothing is routed that a restart would forget.
   * Only while the session still belongs to `channel`: a SUBSCRIBE of a connection that was
   * taken over (or closed and its clean session discarded) while it waited must not add state to
   * the session that follows [MQTT-3.1.2-6]. Returns false, having done nothing, otherwise.
   */
  subscribe(session: Session, subscriptions: Subscription[], channel: OutboundChannel): Promise<boolean> {
    return this.#exclusive(session.clientId, async () => {
      if (session.channel !== channel) return false;
      await session.storeSubscriptions(subscriptions);
      for (const { filter, qos } of subscriptions) this.#route(session, filter, qos);
      return true;
    });
  }

  /** Like `subscribe`: only while the session still belongs to `channel`. */
  unsubscribe(session: Session, filters: string[], channel: OutboundChannel): Promise<boolean> {
    return this.#exclusive(session.clientId, async () => {
      if (session.channel !== channel) return false;
      await session.removeSubscriptions(filters);
      for (const filter of filters) {
        session.subscriptions.delete(filter);
        this.#subscriptions.remove(filter, session.clientId);
      }
      return true;
    });
  }

  /** Ends every connection and waits for session operations under way. */
  async closeAll(): Promise<void> {
    for (const session of this.#sessions.values()) {
      const channel = session.channel;
      if (channel) channel.end('the broker is shutting down');
    }
    await Promise.allSettled([...this.#locks.values()]);
  }

  #newSession(clientId: string, clean: boolean, owner: string | undefined): Session {
    const repository = clean ? this.#volatile : this.#durable;
    const session = new Session(clientId, clean, repository, this.#policy, this.#log, owner);
    this.#sessions.set(clientId, session);
    return session;
  }

  #route(session: Session, filter: string, qos: QoS): void {
    session.subscriptions.set(filter, qos);
    this.#subscriptions.add(filter, session.clientId, qos);
  }

  /** Unroutes first, so no new message is queued for a session whose state is being deleted. */
  async #discard(session: Session): Promise<void> {
    const subscriptions = [...session.subscriptions];
    for (const filter of session.subscriptions.keys()) this.#subscriptions.remove(filter, session.clientId);
    session.subscriptions.clear();
    this.#sessions.delete(session.clientId);
    try {
      await session.destroy();
    } catch (error) {
      // Not deleted (a failed store write): the session is still stored, so it stays here too,
      // routed as before, and a later clean start discards it [MQTT-3.1.2-6].
      if (!this.#sessions.has(session.clientId)) {
        this.#sessions.set(session.clientId, session);
        for (const [filter, qos] of subscriptions) this.#route(session, filter, qos);
      }
      throw error;
    }
  }

  #exclusive<T>(clientId: string, operation: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(clientId) ?? Promise.resolve();
    const result = previous.then(operation, operation);
    const settled = result.then(
      () => undefined,
      () => undefined,
    );
    this.#locks.set(clientId, settled);
    void settled.then(() => {
      if (this.#locks.get(clientId) === settled) this.#locks.delete(clientId);
    });
    return result;
  }
}
