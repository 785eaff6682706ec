import type { IConnectPacket } from 'mqtt-packet';
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Distributor, SubscriberOptions } from '../session/distributor.js';
import type { SessionManager } from '../session/session-manager.js';
import type { Session } from '../session/session.js';
import type { QueueLimits, QueueStats } from '../store/repository.js';
import type { BridgeSettings, UpstreamAddress } from './bridge-options.js';
import { bridgeClientId } from '../session/bridge-client-id.js';
import { Backoff, FailureReport } from './reconnect.js';
import { TopicMap } from './topic-map.js';
import { Uplink, type BridgeCounters } from './uplink.js';
import { UpstreamConnection, UpstreamFailure } from './upstream-connection.js';

/**
 * connecting: an attempt is under way; connected: CONNACK accepted; waiting: until `retryAt`,
 * after a failure; refused: the same, after a refusing CONNACK (`refusedCode`); stopped: the
 * broker is shutting down.
 */
export type BridgeState = 'connecting' | 'connected' | 'waiting' | 'refused' | 'stopped';

/** Where a bridge is, since when, and until when it waits. */
interface Phase {
  state: BridgeState;
  since: Date;
  retryAt?: Date;
  refusedCode?: number;
}

/** What broker-admin shows of a bridge. */
export interface BridgeStatus {
  name: string;
  /** The bridge's local session: its queue is the out queue. */
  session: string;
  clientId: string;
  /** The address tried or connected to now (the first one before any attempt). */
  address: string;
  state: BridgeState;
  /** ISO time the state was entered. */
  since: string;
  /** ISO time of the next attempt, while waiting or refused. */
  retryAt?: string;
  refusedCode?: number;
  /** The last failure, or undefined if there has been none. */
  lastError?: string;
  queued: QueueStats;
  inflight: number;
  forwarded: number;
  received: number;
  qos0Dropped: number;
}

export interface BridgeDependencies {
  sessions: SessionManager;
  distributor: Distributor;
  /** The broker's per-session queue limits: a bridge's own replace them. */
  queueLimits: QueueLimits;
  /** The broker's max_unsent_bytes: what a bridge holds unsent before it drops QoS 0 messages, as for a client. */
  maxUnsentBytes: number;
  log: Logger;
}

/**
 * One bridge: a persistent local session under a reserved client id (`$bridge/<name>`), whose
 * subscriptions are the out/both topic lines, kept from broker start whether or not the uplink is
 * up, so messages for it queue on disk in the same batch as every other session's. This object
 * keeps that session, and keeps trying to connect to the upstream; each connection is an Uplink
 * that links the session for as long as it lasts.
 */
export class Bridge {
  readonly settings: BridgeSettings;
  readonly sessionId: string;
  readonly subscriberOptions: SubscriberOptions;
  readonly #topics: TopicMap;
  readonly #dependencies: BridgeDependencies;
  readonly #backoff: Backoff;
  readonly #failures = new FailureReport();
  readonly #counters: BridgeCounters = { forwarded: 0, received: 0, qos0Dropped: 0 };
  /** Addresses that closed the connection before CONNACK when the bridge bit was set: tried without it until restart. */
  readonly #withoutPrivateBit = new Set<string>();
  #session: Session | undefined;
  #uplink: Uplink | undefined;
  /** What broker-admin shows, replaced whole at each change (see #enter). */
  #phase: Phase = { state: 'connecting', since: new Date() };
  #lastError: string | undefined;
  #address: UpstreamAddress;
  #running: Promise<void> | undefined;
  #stopping = false;
  #wake: (() => void) | undefined;
  /** Aborts an attempt under way when the broker stops. */
  readonly #abort = new AbortController();

  constructor(settings: BridgeSettings, dependencies: BridgeDependencies) {
    this.settings = settings;
    this.sessionId = bridgeClientId(settings.name);
    this.#topics = new TopicMap(settings.topics);
    this.#dependencies = dependencies;
    this.#backoff = new Backoff(settings.reconnect.minMs, settings.reconnect.maxMs);
    this.#address = settings.addresses[0]!;
    const { maxQueuedMessages, maxQueuedBytes } = settings;
    this.subscriberOptions = {
      // A limit left out is the broker's, as for any session.
      ...(maxQueuedMessages === undefined && maxQueuedBytes === undefined
        ? {}
        : {
            queueLimits: {
              maxMessages: maxQueuedMessages ?? dependencies.queueLimits.maxMessages,
              maxBytes: maxQueuedBytes ?? dependencies.queueLimits.maxBytes,
            },
          }),
    };
  }

  /** Stores (or finds) the bridge's session and sets its subscriptions to the out/both lines. */
  async keepSession(): Promise<void> {
    // Never back out over the bridge it came in on (No Local: what came in over it has the
    // bridge's session as its origin); retained messages go on as retained.
    const subscriptions = this.#topics.localSubscriptions.map((subscription) => ({ ...subscription, noLocal: true, retainAsPublished: true }));
    this.#session = await this.#dependencies.sessions.keep(this.sessionId, subscriptions, { maxInflight: this.settings.maxInflight });
  }

  /** Starts connecting, and reconnecting for as long as the broker runs. */
  start(): void {
    this.#publishState(false);
    this.#running ??= this.#run().catch((error: unknown) => {
      this.#dependencies.log.error(`bridge ${this.settings.name}: stopped: ${errorMessage(error)}`);
    });
  }

  /**
   * Stops trying, ends the connection (without DISCONNECT: the upstream publishes our will) and
   * waits until the session is unlinked and its writes have landed.
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wake?.();
    this.#abort.abort();
    this.#uplink?.end('the broker is shutting down');
    await this.#running;
    this.#enter('stopped');
  }

  async status(): Promise<BridgeStatus> {
    const queued = (await this.#session?.queueStats()) ?? { messages: 0, bytes: 0, dropped: 0 };
    return {
      name: this.settings.name,
      session: this.sessionId,
      clientId: this.settings.clientId,
      address: this.#address.text,
      state: this.#phase.state,
      since: this.#phase.since.toISOString(),
      ...(this.#phase.retryAt ? { retryAt: this.#phase.retryAt.toISOString() } : {}),
      ...(this.#phase.refusedCode === undefined ? {} : { refusedCode: this.#phase.refusedCode }),
      ...(this.#lastError === undefined ? {} : { lastError: this.#lastError }),
      queued,
      inflight: this.#uplink?.inflight ?? 0,
      ...this.#counters,
    };
  }

  async #run(): Promise<void> {
    const { addresses } = this.settings;
    let index = 0;
    while (!this.#stopping) {
      const address = addresses[index % addresses.length]!;
      this.#address = address;
      this.#enter('connecting');
      // MQTT 5 has no bridge bit to try (see #connectPacket).
      const privateBit = this.settings.tryPrivate && this.settings.protocolVersion === 4 && !this.#withoutPrivateBit.has(address.text);
      const { failure, wasConnected } = await this.#connectAndServe(address, privateBit);
      if (this.#stopping) return;
      if (privateBit && refusesPrivateBit(failure)) {
        this.#withoutPrivateBit.add(address.text);
        this.#dependencies.log.warn(
          `bridge ${this.settings.name}: ${address.text} does not take the bridge bit (0x80) in CONNECT (${failure.message}): ` +
            `trying without it (try_private) until restart`,
        );
        continue;
      }
      this.#lastError = failure.message;
      // A list of addresses is tried in turn: the next one after each failure.
      if (failure.beforeConnack || failure.kind === 'refused') index++;
      const delay = this.#backoff.next();
      const retryAt = new Date(Date.now() + delay);
      if (failure.kind === 'refused') this.#enter('refused', { retryAt, refusedCode: failure.returnCode! });
      else this.#enter('waiting', { retryAt });
      if (wasConnected) {
        this.#publishState(false);
        this.#dependencies.log.warn(`bridge ${this.settings.name}: connection to ${address.text} lost: ${failure.message}; next attempt in ${seconds(delay)}`);
      } else {
        this.#report(address, failure, delay);
      }
      await this.#sleep(delay);
    }
  }

  /** One attempt: the connection's whole life, until it fails or ends. */
  async #connectAndServe(address: UpstreamAddress, privateBit: boolean): Promise<{ failure: UpstreamFailure; wasConnected: boolean }> {
    const { sessions, distributor, maxUnsentBytes, log } = this.#dependencies;
    let connection: UpstreamConnection;
    try {
      connection = await UpstreamConnection.dial(address, this.#connectPacket(privateBit), {
        connectTimeoutMs: this.settings.connectTimeoutMs,
        signal: this.#abort.signal,
        ...(this.settings.tls ? { tls: this.settings.tls } : {}),
      });
    } catch (error) {
      const failure = error instanceof UpstreamFailure ? error : new UpstreamFailure('protocol', errorMessage(error), { beforeConnack: true });
      return { failure, wasConnected: false };
    }
    if (this.#stopping) {
      connection.close('the broker is shutting down');
      return { failure: new UpstreamFailure('closed', 'the broker is shutting down'), wasConnected: false };
    }
    const uplink = new Uplink(
      { settings: this.settings, topics: this.#topics, sessions, distributor, session: this.#session!, counters: this.#counters, maxUnsentBytes, log },
      connection,
    );
    this.#uplink = uplink;
    await uplink.start();
    if (!connection.isClosed) {
      this.#backoff.reset();
      this.#failures.reset();
      this.#enter('connected');
      this.#publishState(true);
      log.info(`bridge ${this.settings.name}: connected to ${address.text} as ${JSON.stringify(this.settings.clientId)} (session present: ${connection.sessionPresent})`);
    }
    const failure = await uplink.ended;
    this.#uplink = undefined;
    return { failure, wasConnected: this.#phase.state === 'connected' };
  }

  /**
   * `$SYS/broker/bridges/<name>/state`, retained: `1` while connected, `0` otherwise, as Mosquitto
   * says it. Kept in memory only (Distributor.publishEphemeral): a restart says it afresh, and
   * the store is not written once per change of a connection's state.
   */
  #publishState(connected: boolean): void {
    if (!this.settings.notifications) return;
    this.#dependencies.distributor.publishEphemeral(`$SYS/broker/bridges/${this.settings.name}/state`, Buffer.from(connected ? '1' : '0'), true);
  }

  #connectPacket(privateBit: boolean): IConnectPacket {
    const { clientId, cleanSession, keepalive, username, password, notifications, notificationTopic, protocolVersion } = this.settings;
    const v5 = protocolVersion === 5;
    return {
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion,
      // MQTT 5 has no bridge bit: No Local on our subscriptions upstream does its work (Uplink.start).
      ...(privateBit ? { bridgeMode: true } : {}),
      clientId,
      clean: cleanSession,
      keepalive,
      // MQTT 5: a session kept upstream lives until we connect with Clean Start, as 3.1.1's
      // CleanSession=0 does [MQTT-3.1.2-23]; we accept no Topic Aliases (none announced).
      ...(v5 ? { properties: { sessionExpiryInterval: cleanSession ? 0 : 0xffff_ffff } } : {}),
      ...(username === undefined ? {} : { username }),
      ...(password === undefined ? {} : { password: Buffer.from(password) }),
      // Marks the gateway offline upstream when the connection ends without DISCONNECT.
      ...(notifications ? { will: { topic: notificationTopic, payload: Buffer.from('0'), qos: 1, retain: true } } : {}),
    } as IConnectPacket;
  }

  #report(address: UpstreamAddress, failure: UpstreamFailure, delay: number): void {
    const kind = `${failure.kind}:${failure.returnCode ?? ''}`;
    const retry = `next attempt in ${seconds(delay)}`;
    const line =
      failure.kind === 'refused'
        ? this.#failures.failed(kind, `bridge ${this.settings.name}: ${address.text} ${failure.message}; check the bridge's username, password or certificate; ${retry}`)
        : this.#failures.failed(kind, `bridge ${this.settings.name}: cannot connect to ${address.text}: ${failure.message}; ${retry}`);
    if (line === undefined) return;
    if (failure.kind === 'refused' || failure.kind === 'tls') this.#dependencies.log.error(line);
    else this.#dependencies.log.warn(line);
  }

  #enter(state: BridgeState, details: Pick<Phase, 'retryAt' | 'refusedCode'> = {}): void {
    this.#phase = { state, since: new Date(), ...details };
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#wake = undefined;
        resolve();
      }, ms);
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
    });
  }
}

function seconds(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/**
 * How upstreams that do not know protocol level 0x84 say so: RabbitMQ closes the connection
 * without CONNACK, others answer CONNACK 1 (unacceptable protocol version).
 */
function refusesPrivateBit(failure: UpstreamFailure): boolean {
  if (failure.kind === 'refused') return failure.returnCode === 1;
  return failure.kind === 'closed' && failure.beforeConnack;
}
