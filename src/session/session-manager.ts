import { BrokerError, ErrorCodes, errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import { isSharedFilter } from '../routing/topic.js';
import { ROUTE_OPTIONS_BYTES, routeOf, type Route, type TopicTree } from '../routing/topic-tree.js';
import type { SessionRepository, StoredSession, Subscription } from '../store/repository.js';
import { ExpirySchedule } from './expiry-schedule.js';
import { Session, type OutboundChannel, type SessionLimits, type SessionLink, type SessionPolicy } from './session.js';

export interface SessionManagerOptions {
  /** Persistent (CleanSession=0) sessions. */
  durable: SessionRepository;
  /** CleanSession=1 sessions: gone with their connection, so never written to disk. */
  volatile: SessionRepository;
  /** The routing table; the manager is its one writer, keeping it equal to the stored subscriptions. */
  subscriptions: TopicTree;
  /** Limits and the ACL's read check, the same for every session. */
  policy: SessionPolicy;
  /** What all sessions together may hold in memory (defaults: none, for tests and embedders that bound it themselves). */
  budget?: Partial<SessionBudget>;
  /**
   * Seconds a persistent session whose client has been away is kept when it has no expiry of its
   * own (a 3.1.1 client's): persistent_session_expiry. Undefined: forever.
   */
  persistentSessionExpiry?: number;
  /**
   * Sessions that never expire whatever is stored for them: the operator's own (bridges'), also
   * when a store from before they were stored as such is restored.
   */
  neverExpires?: (clientId: string) => boolean;
  /**
   * A session that held shared subscriptions (`$share/...` filters) ends: its messages of them go
   * to other members (Distributor.handOver), after it is unrouted and before its state is deleted.
   */
  handOver?: (session: Session, sharedFilters: string[]) => Promise<void>;
  log: Logger;
}

/** A Session Expiry Interval of 0xFFFFFFFF: the session does not expire (MQTT 5.0 3.1.2.11.2). */
export const EXPIRY_NEVER = 0xffff_ffff;

/** A will whose Will Delay Interval runs: published when it ends, or when its session ends first. */
interface PendingWill {
  timer: NodeJS.Timeout;
  publish: () => Promise<void>;
}

/**
 * Broker-wide limits on what sessions hold in memory whether or not their clients are connected:
 * every persistent session and every subscription is in memory (routing needs them), and a
 * restart loads all of them again, so they are bounded when they are taken, never at load.
 */
export interface SessionBudget {
  /** Persistent sessions (CleanSession=0); a CONNECT that would create one more is refused with 0x03. */
  maxSessions: number;
  /** Subscriptions (session and filter) of all sessions; new filters beyond it get 0x80. */
  maxSubscriptions: number;
  /**
   * Memory of the subscriptions as counted: per subscription its filter and SUBSCRIPTION_BYTES, per
   * routing tree node its level and NODE_BYTES. New filters that would take it past this get 0x80.
   */
  maxSubscriptionBytes: number;
}

/** What one subscription costs besides its filter: its entry in the session and in a tree node, rounded up. */
export const SUBSCRIPTION_BYTES = 96;

function subscriptionBytes(filter: string, route: Route): number {
  return SUBSCRIPTION_BYTES + 2 * filter.length + (typeof route === 'number' ? 0 : ROUTE_OPTIONS_BYTES);
}

/** How long a CONNECT's session lives: see SessionManager.start. */
export interface SessionLifetime {
  cleanStart: boolean;
  expiry: number | undefined;
}

/** What a SUBSCRIBE got: the subscriptions stored and routed, in the order asked; the rest was over the budget. */
export interface Subscribed {
  accepted: Subscription[];
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
  readonly #budget: SessionBudget;
  readonly #log: Logger;
  readonly #locks = new Map<string, Promise<unknown>>();
  #persistentSessions = 0;
  /** Subscriptions held and their counted bytes (the tree counts its nodes itself). */
  #subscriptionCount = 0;
  #subscriptionBytes = 0;
  /** Taken by SUBSCRIBEs whose store write is under way: counted against the budget already. */
  #reservedCount = 0;
  #reservedBytes = 0;
  /** The budget is being refused (logged once per episode). */
  #overBudget = false;
  readonly #persistentSessionExpiry: number | undefined;
  readonly #neverExpires: (clientId: string) => boolean;
  /** When each disconnected persistent session that can expire does, by client id. */
  readonly #expiries = new ExpirySchedule((clientIds) => this.#expire(clientIds));
  readonly #pendingWills = new Map<string, PendingWill>();
  readonly #handOver: ((session: Session, sharedFilters: string[]) => Promise<void>) | undefined;

  constructor(options: SessionManagerOptions) {
    this.#durable = options.durable;
    this.#volatile = options.volatile;
    this.#subscriptions = options.subscriptions;
    this.#policy = options.policy;
    this.#budget = { maxSessions: Infinity, maxSubscriptions: Infinity, maxSubscriptionBytes: Infinity, ...options.budget };
    this.#persistentSessionExpiry = options.persistentSessionExpiry;
    this.#neverExpires = options.neverExpires ?? (() => false);
    this.#handOver = options.handOver;
    this.#log = options.log;
  }

  /**
   * The persistent sessions read from the store at start, with their subscriptions routed. All of
   * them, whatever the budget says now: they were accepted within the one in force then, and a
   * restart must bring back what was accepted. New ones wait until the holdings are below it.
   */
  async restore(stored: StoredSession[]): Promise<{ restored: number; expired: number }> {
    const now = Date.now();
    // Submitted together, so the store commits them in a few batches rather than one fsync each.
    const discarded: Promise<void>[] = [];
    // Expired members of shared groups: discarded once the groups' other members are routed.
    const members: Array<[Session, string[]]> = [];
    for (const { clientId, subscriptions, owner, lastSeen, expiry } of stored) {
      // Its client was away past its expiry while the broker was stopped: discarded before it is
      // routed, so not one message is queued for it [MQTT-3.1.2-23].
      const deadline = this.#neverExpires(clientId) ? Infinity : this.#deadline(expiry, lastSeen ?? now);
      if (deadline <= now) {
        const shared = subscriptions.map(({ filter }) => filter).filter(isSharedFilter);
        if (shared.length > 0 && this.#handOver) members.push([new Session(clientId, false, this.#durable, this.#policy, this.#log, owner), shared]);
        else discarded.push(this.#durable.destroySession(clientId));
        continue;
      }
      const session = this.#newSession(clientId, false, owner);
      session.expiry = expiry;
      for (const subscription of subscriptions) this.#route(session, subscription.filter, routeOf(subscription));
      if (deadline !== Infinity) this.#expiries.set(clientId, deadline);
    }
    for (const [session, shared] of members) discarded.push(this.#handOver!(session, shared).then(() => session.destroy()));
    await Promise.all(discarded);
    const expired = discarded.length;
    if (expired > 0) this.#log.info(`${expired} persistent sessions expired while the broker was stopped: discarded`);
    const usage = this.usage;
    const { maxSessions, maxSubscriptions, maxSubscriptionBytes } = this.#budget;
    if (usage.sessions > maxSessions || usage.subscriptions > maxSubscriptions || usage.subscriptionBytes > maxSubscriptionBytes) {
      this.#log.warn(
        `the store holds more than the session limits allow (${usage.sessions} persistent sessions, ${usage.subscriptions} subscriptions, ` +
          `${usage.subscriptionBytes} bytes of subscriptions; max_sessions ${maxSessions}, max_subscriptions ${maxSubscriptions}, ` +
          `max_subscription_bytes ${maxSubscriptionBytes}): all of it is served, new sessions and subscriptions are refused until it is below them`,
      );
    }
    return { restored: stored.length - expired, expired };
  }

  /**
   * When a session whose client was last seen at `lastSeen` expires: its own interval, else
   * persistent_session_expiry for a session without one; Infinity for never.
   */
  #deadline(expiry: number | undefined, lastSeen: number): number {
    const interval = expiry ?? this.#persistentSessionExpiry;
    if (interval === undefined || interval >= EXPIRY_NEVER) return Infinity;
    return lastSeen + interval * 1000;
  }

  /** Sessions whose client has been away past their deadline: discarded, their wills published first [MQTT-3.1.2-8]. */
  #expire(clientIds: string[]): void {
    for (const clientId of clientIds) {
      void this.#exclusive(clientId, async () => {
        const session = this.#sessions.get(clientId);
        // Reconnected meanwhile (which unscheduled it), or gone already.
        if (!session || session.connected || this.#expiries.deadline(clientId) !== undefined) return;
        await this.#publishPendingWill(clientId);
        await this.#discard(session);
        this.#log.info(`session ${JSON.stringify(clientId)} expired: its client was away longer than its session expiry; discarded`);
      }).catch((error: unknown) => {
        this.#log.error(`session ${JSON.stringify(clientId)} expired but could not be discarded: ${errorMessage(error)}`);
      });
    }
  }

  /**
   * A will with a Will Delay Interval: published after `delaySeconds` unless a connection for the
   * client id comes first [MQTT-3.1.3-9], or at once if the session ends before [MQTT-3.1.2-8].
   * Kept in memory only: pending wills are lost if the broker stops.
   */
  deferWill(clientId: string, delaySeconds: number, publish: () => Promise<void>): void {
    this.#cancelPendingWill(clientId);
    const timer = setTimeout(() => void this.#publishPendingWill(clientId), Math.min(delaySeconds * 1000, 2 ** 31 - 1));
    timer.unref();
    this.#pendingWills.set(clientId, { timer, publish });
  }

  async #publishPendingWill(clientId: string): Promise<void> {
    const pending = this.#pendingWills.get(clientId);
    if (!pending) return;
    this.#cancelPendingWill(clientId);
    await pending.publish();
  }

  #cancelPendingWill(clientId: string): void {
    const pending = this.#pendingWills.get(clientId);
    if (!pending) return;
    clearTimeout(pending.timer);
    this.#pendingWills.delete(clientId);
  }

  /** What sessions hold now, as the budget counts it. */
  get usage(): { sessions: number; subscriptions: number; subscriptionBytes: number } {
    return {
      sessions: this.#persistentSessions,
      subscriptions: this.#subscriptionCount,
      subscriptionBytes: this.#subscriptionBytes + this.#subscriptions.bytes,
    };
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
   * same client is ended first [MQTT-3.1.4-2]. Clean Start (CleanSession=1) discards any previous
   * session [MQTT-3.1.2-6]; otherwise a stored one is resumed or a new one created [MQTT-3.1.2-4].
   *
   * `expiry` is how long the session outlives its connection, in seconds: 0, it ends with it (and
   * a new one lives in the volatile repository, like 3.1.1's CleanSession=1); undefined, a 3.1.1
   * persistent session (see persistent_session_expiry). A stored session resumed with 0 stays
   * where it is and is discarded when its connection ends (MQTT 5.0 3.1.2.11.2).
   *
   * `owner` is the user name of the connecting client (undefined: anonymous). A session, live or
   * stored, belongs to the user that created it: for anyone else this rejects with
   * SESSION_OWNED_BY_OTHER before anything is touched (no takeover, no discard).
   */
  start(clientId: string, lifetime: SessionLifetime, channel: OutboundChannel, owner?: string): Promise<StartResult> {
    const { cleanStart, expiry } = lifetime;
    const volatile = expiry === 0;
    return this.#exclusive(clientId, async () => {
      let session = this.#sessions.get(clientId);
      if (session && session.owner !== owner) {
        throw new BrokerError(ErrorCodes.SESSION_OWNED_BY_OTHER, `the session of client ${JSON.stringify(clientId)} belongs to another user`);
      }
      // A connection for the client id in time: its delayed will is not published [MQTT-3.1.3-9].
      this.#cancelPendingWill(clientId);
      // Checked before anything is touched, like the owner: a refused CONNECT takes nothing over.
      const resumesPersistent = !cleanStart && session !== undefined && !session.clean;
      if (!volatile && !resumesPersistent && this.#persistentSessions >= this.#budget.maxSessions) {
        throw new BrokerError(
          ErrorCodes.SESSION_LIMIT_REACHED,
          `max_sessions (${this.#budget.maxSessions}) persistent sessions are stored: no new one for client ${JSON.stringify(clientId)}`,
        );
      }
      if (session?.channel) {
        const previous = session.channel;
        session.unlink(previous);
        previous.end('another connection took over the session', 'taken-over');
        if (session.clean) {
          await this.#discard(session);
          session = undefined;
        }
      }
      if (session && cleanStart) {
        await this.#discard(session);
        session = undefined;
      }
      const sessionPresent = session !== undefined;
      if (!session) {
        session = this.#newSession(clientId, volatile, owner);
        session.expiry = expiry;
        try {
          await session.create();
        } catch (error) {
          this.#forget(session);
          throw error;
        }
      } else if (!session.clean) {
        // A resumed persistent session: its client is seen now (a new one got that from create),
        // and the new CONNECT's expiry applies from now on.
        session.expiry = expiry;
        await session.touch();
      }
      this.#expiries.cancel(clientId);
      return { session, link: session.link(channel), sessionPresent };
    });
  }

  /**
   * The connection ended: a persistent session keeps its state and stores when its client was last
   * seen; a clean one, or one whose expiry is 0, is discarded [MQTT-3.1.2-6].
   */
  close(session: Session, channel: OutboundChannel): Promise<void> {
    return this.#exclusive(session.clientId, async () => {
      if (!session.unlink(channel)) return;
      if (session.clean || session.expiry === 0) {
        await this.#publishPendingWill(session.clientId);
        await this.#discard(session);
        return;
      }
      await session.touch();
      const deadline = this.#deadline(session.expiry, Date.now());
      if (deadline !== Infinity) this.#expiries.set(session.clientId, deadline);
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
        channel.end(reason, 'session-ended');
      }
      await this.#publishPendingWill(clientId);
      await this.#discard(session);
      return true;
    });
  }

  /**
   * Stores the subscriptions the budget allows, then routes them: nothing is routed that a restart
   * would forget. A filter the session holds already is replaced whatever the budget [MQTT-3.8.4-3];
   * a new one is taken while it fits (see SessionBudget), so a SUBSCRIBE may get part of what it
   * asked. Only while the session still belongs to `channel`: a SUBSCRIBE of a connection that was
   * taken over (or closed and its clean session discarded) while it waited must not add state to
   * the session that follows [MQTT-3.1.2-6]. Returns undefined, having done nothing, otherwise.
   */
  subscribe(session: Session, subscriptions: Subscription[], channel: OutboundChannel): Promise<Subscribed | undefined> {
    return this.#exclusive(session.clientId, async () => {
      if (session.channel !== channel) return undefined;
      const { accepted, count, bytes } = this.#fit(session, subscriptions);
      if (accepted.length === 0) return { accepted };
      // Held against the budget while the write runs, so concurrent SUBSCRIBEs cannot all fit.
      this.#reservedCount += count;
      this.#reservedBytes += bytes;
      try {
        await session.storeSubscriptions(accepted);
      } finally {
        this.#reservedCount -= count;
        this.#reservedBytes -= bytes;
      }
      for (const subscription of accepted) this.#route(session, subscription.filter, routeOf(subscription));
      return { accepted };
    });
  }

  /** The subscriptions that fit the budget, in order, and what the new ones among them cost. */
  #fit(session: Session, subscriptions: Subscription[]): { accepted: Subscription[]; count: number; bytes: number } {
    const { maxSubscriptions, maxSubscriptionBytes } = this.#budget;
    const plan = this.#subscriptions.plan();
    const accepted: Subscription[] = [];
    let count = 0;
    let bytes = 0;
    let refused = 0;
    for (const subscription of subscriptions) {
      if (session.subscriptions.has(subscription.filter)) {
        accepted.push(subscription);
        continue;
      }
      const cost = subscriptionBytes(subscription.filter, routeOf(subscription)) + plan.add(subscription.filter);
      const usage = this.usage;
      if (
        usage.subscriptions + this.#reservedCount + count + 1 > maxSubscriptions ||
        usage.subscriptionBytes + this.#reservedBytes + bytes + cost > maxSubscriptionBytes
      ) {
        refused++;
        continue;
      }
      accepted.push(subscription);
      count++;
      bytes += cost;
    }
    if (refused > 0 && !this.#overBudget) {
      this.#overBudget = true;
      this.#log.warn(
        `client ${JSON.stringify(session.clientId)}: ${refused} new subscriptions refused (0x80): the broker holds ` +
          `max_subscriptions (${maxSubscriptions}) or max_subscription_bytes (${maxSubscriptionBytes}); logged once until subscriptions fit again`,
      );
    } else if (refused === 0 && count > 0) {
      this.#overBudget = false;
    }
    return { accepted, count, bytes };
  }

  /** Like `subscribe`: only while the session still belongs to `channel`. */
  unsubscribe(session: Session, filters: string[], channel: OutboundChannel): Promise<boolean> {
    return this.#exclusive(session.clientId, async () => {
      if (session.channel !== channel) return false;
      await session.removeSubscriptions(filters);
      for (const filter of filters) this.#unroute(session, filter);
      return true;
    });
  }

  /**
   * Keeps a persistent session that no client's CONNECT owns (a bridge's), connected or not: stores
   * it if it is new, makes its stored subscriptions exactly `subscriptions` (stored first, then
   * routed, as for SUBSCRIBE), and returns it. Messages are queued for it from then on; a link is
   * made and ended with `start` and `close`, as for a client. It counts in the session budget but
   * is never refused by it: it is the operator's configuration, like what a restore brings back.
   *
   * `limits` replace the broker's for this session's links (a bridge's max_inflight). Called
   * before any connection is accepted: a session restored from the store is made anew with them
   * (its subscriptions, already counted and routed, carried over), which is safe only while
   * nothing holds it.
   */
  keep(clientId: string, subscriptions: Subscription[], limits?: Partial<SessionLimits>): Promise<Session> {
    return this.#exclusive(clientId, async () => {
      let session = this.#sessions.get(clientId);
      const policy = limits ? { ...this.#policy, limits: { ...this.#policy.limits, ...limits } } : this.#policy;
      // The operator's configuration: never expires, whatever persistent_session_expiry says.
      this.#expiries.cancel(clientId);
      if (session && limits) {
        const restored = session;
        session = new Session(clientId, false, this.#durable, policy, this.#log, restored.owner);
        for (const [filter, route] of restored.subscriptions) session.subscriptions.set(filter, route);
        this.#sessions.set(clientId, session);
      }
      if (!session) {
        session = this.#newSession(clientId, false, undefined, policy);
        session.expiry = EXPIRY_NEVER;
        try {
          await session.create();
        } catch (error) {
          this.#forget(session);
          throw error;
        }
      }
      session.expiry = EXPIRY_NEVER;
      const wanted = new Set(subscriptions.map(({ filter }) => filter));
      const stale = [...session.subscriptions.keys()].filter((filter) => !wanted.has(filter));
      if (stale.length > 0) {
        await session.removeSubscriptions(stale);
        for (const filter of stale) this.#unroute(session, filter);
      }
      if (subscriptions.length > 0) {
        await session.storeSubscriptions(subscriptions);
        for (const subscription of subscriptions) this.#route(session, subscription.filter, routeOf(subscription));
      }
      return session;
    });
  }

  /** Ends every connection and waits for session operations under way. */
  async closeAll(): Promise<void> {
    // Deadlines are stored (last-seen and interval) and are applied again at the next start; a
    // pending delayed will lives in memory only and is lost (README: What survives a restart).
    this.#expiries.clear();
    for (const clientId of [...this.#pendingWills.keys()]) this.#cancelPendingWill(clientId);
    for (const session of this.#sessions.values()) {
      const channel = session.channel;
      if (channel) channel.end('the broker is shutting down', 'shutting-down');
    }
    await Promise.allSettled([...this.#locks.values()]);
  }

  #newSession(clientId: string, clean: boolean, owner: string | undefined, policy = this.#policy): Session {
    const repository = clean ? this.#volatile : this.#durable;
    const session = new Session(clientId, clean, repository, policy, this.#log, owner);
    this.#sessions.set(clientId, session);
    if (!clean) this.#persistentSessions++;
    return session;
  }

  #forget(session: Session): void {
    if (this.#sessions.get(session.clientId) !== session) return;
    this.#sessions.delete(session.clientId);
    if (!session.clean) this.#persistentSessions--;
  }

  #route(session: Session, filter: string, route: Route): void {
    const previous = session.subscriptions.get(filter);
    if (previous === undefined) this.#subscriptionCount++;
    else this.#subscriptionBytes -= subscriptionBytes(filter, previous);
    this.#subscriptionBytes += subscriptionBytes(filter, route);
    session.subscriptions.set(filter, route);
    this.#subscriptions.add(filter, session.clientId, route);
  }

  #unroute(session: Session, filter: string): void {
    const route = session.subscriptions.get(filter);
    if (route === undefined) return;
    session.subscriptions.delete(filter);
    this.#subscriptionCount--;
    this.#subscriptionBytes -= subscriptionBytes(filter, route);
    this.#subscriptions.remove(filter, session.clientId);
  }

  /** Unroutes first, so no new message is queued for a session whose state is being deleted. */
  async #discard(session: Session): Promise<void> {
    this.#expiries.cancel(session.clientId);
    const subscriptions = [...session.subscriptions];
    for (const filter of subscriptions.map(([filter]) => filter)) this.#unroute(session, filter);
    this.#forget(session);
    const shared = subscriptions.map(([filter]) => filter).filter(isSharedFilter);
    try {
      if (shared.length > 0 && this.#handOver) await this.#handOver(session, shared);
      await session.destroy();
    } catch (error) {
      // Not deleted (a failed store write): the session is still stored, so it stays here too,
      // routed as before, and a later clean start discards it [MQTT-3.1.2-6].
      if (!this.#sessions.has(session.clientId)) {
        this.#sessions.set(session.clientId, session);
        if (!session.clean) this.#persistentSessions++;
        for (const [filter, route] of subscriptions) this.#route(session, filter, route);
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
