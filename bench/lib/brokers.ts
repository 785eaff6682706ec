import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { track } from './children.js';
import { epochMs, sleep } from './proc.js';

/**
 * Messages in flight per publisher against the trivial sink, when the brokers' window is smaller.
 * With 64, a run against the sink is bound by the round trip (64 messages over the sink's ~0.1 ms
 * latency) while the generator is about half busy, so it measured the loop, not the generator. With
 * this many, the generator is what bounds the run (90–100 % of a core), so the sink's rate is the
 * generator's capacity, which the headroom rows compare with each broker (cpuNotes in
 * scenario-kit.ts says so when a sink run falls short of that).
 */
export const SINK_WINDOW = 1024;

export type BrokerId = 'ours' | 'ours-nosync' | 'mosquitto' | 'aedes' | 'sink';
export const ALL_BROKERS: BrokerId[] = ['ours', 'ours-nosync', 'mosquitto', 'aedes', 'sink'];
export const DEFAULT_BROKERS: BrokerId[] = ['ours', 'mosquitto', 'aedes'];

export interface BrokerInfo {
  id: BrokerId;
  label: string;
  version: string;
  /** How it is configured, in a few words (goes into the report). */
  config: string;
  /** Why it cannot run here; undefined when it can. */
  missing?: string;
}

interface Launch {
  command: string;
  args: string[];
  /** A line on stdout/stderr that says it accepts connections; without one, a TCP probe decides. */
  readyLine?: RegExp;
}

/** What a scenario may ask of a broker's listener beyond the defaults. */
export interface LaunchOptions {
  /** MQTT over WebSocket (path /mqtt, subprotocol mqtt) on the port instead of plain TCP. */
  websocket?: boolean;
}

interface BrokerDefinition {
  info(): BrokerInfo;
  /** workDir holds config files: not part of the data directory whose size is measured. */
  launch(dataDir: string, port: number, workDir: string, options?: LaunchOptions): Launch;
  /** Options this broker cannot be launched with here, and why; undefined when it can. */
  cannot?(options: LaunchOptions): string | undefined;
}

/** Where Debian's `mosquitto` package puts the broker; `--mosquitto <path>` overrides it. */
export const DEFAULT_MOSQUITTO = '/usr/sbin/mosquitto';

/**
 * Outbound messages in flight per client, given to every broker that has such a limit, so none
 * is measured with a narrower window than another (Mosquitto's default is 20, ours 32; Aedes has
 * no limit).
 */
export const BENCH_MAX_INFLIGHT = 1000;

/**
 * `oursDir` holds the `bin/` and `dist/` our broker runs from: the runner passes a snapshot taken at
 * start, so a rebuild of dist/ while the bench runs cannot change the broker under test.
 */
export function brokerDefinitions(
  root: string,
  mosquitto = DEFAULT_MOSQUITTO,
  oursDir = root,
  oursArgs: string[] = [],
): Record<BrokerId, BrokerDefinition> {
  const ourVersion = () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
    let commit = '';
    try {
      const git = (...args: string[]) => execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
      commit = git('rev-parse', '--short', 'HEAD');
      // The broker's own code may be older than the checkout (a branch that only changed the bench).
      const code = git('log', '-1', '--format=%h', '--', 'src', 'bin', 'package.json');
      if (code !== '' && code !== commit) commit += `, src/ and bin/ as of ${code}`;
      if (git('status', '--porcelain', '--', 'src', 'bin') !== '') commit += ' + uncommitted changes';
    } catch {
      // not a git checkout
    }
    return commit ? `${pkg.version} (${commit})` : pkg.version;
  };
  const nodeFlags = startNodeFlags(root);
  const ours = (sync: boolean): BrokerDefinition => ({
    info: () => ({
      id: sync ? 'ours' : 'ours-nosync',
      label: sync ? 'ours' : 'ours --no-sync',
      version: ourVersion(),
      config:
        `node ${[...nodeFlags, ''].join(' ')}` +
        (sync
          ? `bin/broker.js defaults (fsync before every ack, group commit) but --max-inflight ${BENCH_MAX_INFLIGHT}`
          : `bin/broker.js --no-sync --max-inflight ${BENCH_MAX_INFLIGHT}`) +
        (oursArgs.length > 0 ? `, with ${oursArgs.join(' ')}` : ''),
      ...(existsSync(join(root, 'dist/bundle/broker-cli.cjs')) ? {} : { missing: 'dist/ is not built (run `npm run build`)' }),
    }),
    launch: (dataDir, port, workDir, options = {}) => {
      // A WebSocket listener is a config file's listener (README "MQTT over WebSocket"); --host and --port then set its address.
      const config = join(workDir, `ours-${port}.json`);
      if (options.websocket) writeFileSync(config, `${JSON.stringify({ listeners: [{ host: '127.0.0.1', port, websocket: true, path: '/mqtt' }] })}\n`);
      return {
        command: process.execPath,
        args: [
          ...nodeFlags,
          join(oursDir, 'bin/broker.js'),
          ...(options.websocket ? ['--config', config] : []),
          '--host',
          '127.0.0.1',
          '--port',
          String(port),
          '--data',
          dataDir,
          '--max-inflight',
          String(BENCH_MAX_INFLIGHT),
          ...(sync ? [] : ['--no-sync']),
          ...oursArgs,
        ],
        readyLine: /listening on 127\.0\.0\.1:\d+/,
      };
    },
  });

  return {
    ours: ours(true),
    'ours-nosync': ours(false),
    mosquitto: {
      info: () => {
        if (!existsSync(mosquitto)) {
          return { id: 'mosquitto', label: 'Mosquitto', version: '', config: '', missing: `${mosquitto} not found (apt-get install mosquitto, or --mosquitto <path>)` };
        }
        let version = 'unknown';
        try {
          // `mosquitto -h` prints its version and exits with code 3.
          execFileSync(mosquitto, ['-h'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
        } catch (error) {
          const out = String((error as { stdout?: string }).stdout ?? '');
          version = /mosquitto version (\S+)/.exec(out)?.[1] ?? 'unknown';
        }
        return {
          id: 'mosquitto',
          label: 'Mosquitto',
          version,
          config: `persistence true (autosave defaults), max_queued_messages 0 (unlimited), max_inflight_messages ${BENCH_MAX_INFLIGHT}, set_tcp_nodelay true`,
        };
      },
      launch: (dataDir, port, workDir, options = {}) => {
        const config = join(workDir, `mosquitto-${port}.conf`);
        const lines = [
          // Mosquitto started as root drops to the `mosquitto` user, which cannot write our temp dirs.
          ...(process.getuid?.() === 0 ? ['user root'] : []),
          // Mosquitto 2.0 does not start with a WebSocket listener alone (eclipse-mosquitto/mosquitto#2284): a unix
          // socket listener nobody uses goes first. The WebSocket one (libwebsockets) takes any path and the subprotocol mqtt.
          ...(options.websocket ? [`listener 0 ${join(workDir, `mosquitto-${port}.sock`)}`] : []),
          `listener ${port} 127.0.0.1`,
          ...(options.websocket ? ['protocol websockets'] : []),
          'allow_anonymous true',
          'persistence true',
          `persistence_location ${dataDir}/`,
          'max_queued_messages 0',
          'max_queued_bytes 0',
          `max_inflight_messages ${BENCH_MAX_INFLIGHT}`,
          'set_tcp_nodelay true',
          'log_dest stderr',
          'log_type error',
          'log_type warning',
        ];
        writeFileSync(config, `${lines.join('\n')}\n`);
        return { command: mosquitto, args: ['-c', config] };
      },
    },
    aedes: {
      info: () => {
        try {
          const version = (name: string) =>
            (JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
          const aedesVersion = version('aedes');
          const levelVersion = version('aedes-persistence-level');
          version('level');
          return {
            id: 'aedes',
            label: 'Aedes',
            version: `${aedesVersion} + aedes-persistence-level ${levelVersion}`,
            config: 'aedes-persistence-level on level (LevelDB, no sync writes), noDelay sockets',
          };
        } catch (error) {
          return { id: 'aedes', label: 'Aedes', version: '', config: '', missing: `aedes / aedes-persistence-level / level not installed (npm install): ${error instanceof Error ? error.message : String(error)}` };
        }
      },
      launch: (dataDir, port) => ({
        command: process.execPath,
        args: [join(root, 'bench/dist/peers/aedes-server.js'), '--port', String(port), '--data', dataDir],
        readyLine: /listening on 127\.0\.0\.1:\d+/,
      }),
      cannot: (options) => (options.websocket ? 'bench/peers/aedes-server.ts serves TCP only' : undefined),
    },
    sink: {
      info: () => ({
        id: 'sink',
        label: 'trivial sink',
        version: 'bench/peers/sink-server.ts',
        config: `not a broker: acknowledges at once and forwards in memory to exact-topic subscribers; throughput runs with ${SINK_WINDOW} in flight per publisher, so that the load generator is what bounds them: its capacity`,
      }),
      launch: (dataDir, port) => ({
        command: process.execPath,
        args: [join(root, 'bench/dist/peers/sink-server.js'), '--port', String(port), '--data', dataDir],
        readyLine: /listening on 127\.0\.0\.1:\d+/,
      }),
    },
  };
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** One broker process: started by `startBroker`, stopped by PID, never left behind. */
export class BrokerProcess {
  readonly pid: number;
  /** epochMs() just before spawn. */
  readonly spawnedAt: number;
  readonly ready: Promise<void>;
  readonly exited: Promise<ExitStatus>;
  #exit: ExitStatus | undefined;
  readonly #log: string[] = [];

  constructor(
    readonly id: BrokerId,
    readonly port: number,
    readonly dataDir: string,
    launch: Launch,
    readyTimeoutMs: number,
  ) {
    this.spawnedAt = epochMs();
    const child: ChildProcess = spawn(launch.command, launch.args, { stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid === undefined) throw new Error(`could not start ${launch.command}`);
    this.pid = child.pid;
    track(child);
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        this.#exit = { code, signal };
        resolve(this.#exit);
      }),
    );
    let sawReady: (() => void) | undefined;
    const readyByLine = new Promise<void>((resolve) => (sawReady = resolve));
    const collect = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line) continue;
        if (launch.readyLine?.test(line)) sawReady?.();
        this.#log.push(line);
        if (this.#log.length > 40) this.#log.shift();
      }
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    child.once('error', (error) => this.#log.push(`spawn error: ${error.message}`));

    const readiness = launch.readyLine ? readyByLine : this.#probe(readyTimeoutMs);
    let timer: NodeJS.Timeout | undefined;
    this.ready = Promise.race([
      readiness,
      this.exited.then((status) => {
        throw new Error(`${id} exited before it was ready (${describeExit(status)}): ${this.logTail()}`);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${id} not ready within ${readyTimeoutMs} ms: ${this.logTail()}`)), readyTimeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
    this.ready.catch(() => {});
  }

  get running(): boolean {
    return this.#exit === undefined;
  }

  logTail(lines = 5): string {
    return this.#log.slice(-lines).join(' | ') || '(no output)';
  }

  /** SIGTERM, then SIGKILL if it has not exited within timeoutMs. */
  async stop(timeoutMs = 60_000): Promise<{ status: ExitStatus; ms: number; forced: boolean }> {
    const started = epochMs();
    if (!this.running) return { status: this.#exit!, ms: 0, forced: false };
    this.#signal('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    const outcome = await Promise.race([this.exited, timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      this.#signal('SIGKILL');
      return { status: await this.exited, ms: epochMs() - started, forced: true };
    }
    return { status: outcome, ms: epochMs() - started, forced: false };
  }

  async kill(): Promise<ExitStatus> {
    if (this.running) this.#signal('SIGKILL');
    return this.exited;
  }

  #signal(signal: NodeJS.Signals): void {
    try {
      process.kill(this.pid, signal);
    } catch {
      // already gone
    }
  }

  async #probe(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.running && Date.now() < deadline) {
      const ok = await new Promise<boolean>((resolve) => {
        const socket = connect({ host: '127.0.0.1', port: this.port });
        socket.once('connect', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      });
      if (ok) return;
      await sleep(5);
    }
    await new Promise(() => {}); // the exit or the timeout decides
  }
}

export function describeExit(status: ExitStatus): string {
  return status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
}

export function startBroker(
  definition: BrokerDefinition,
  id: BrokerId,
  dataDir: string,
  port: number,
  workDir: string,
  readyTimeoutMs: number,
  options: LaunchOptions = {},
): BrokerProcess {
  mkdirSync(dataDir, { recursive: true });
  return new BrokerProcess(id, port, dataDir, definition.launch(dataDir, port, workDir, options), readyTimeoutMs);
}

/**
 * Node's own flags in `npm start` (package.json: `node FLAGS bin/broker.js`): the bench runs our
 * broker as a user who follows the README does, V8's heap settings included.
 */
function startNodeFlags(root: string): string[] {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts?: { start?: string } };
  const words = (pkg.scripts?.start ?? '').split(/\s+/);
  const script = words.indexOf('bin/broker.js');
  if (words[0] !== 'node' || script < 0) throw new Error(`package.json: npm start is not "node [flags] bin/broker.js": ${pkg.scripts?.start}`);
  return words.slice(1, script);
}
