import { createRequire } from 'node:module';
import type * as MqttPacket from 'mqtt-packet';
import { ByteQueue } from './byte-queue.js';

const require = createRequire(import.meta.url);

/** What Node's require() reads of a cached module (require.cache entries are Module objects). */
interface CachedModule {
  id: string;
  filename: string;
  loaded: boolean;
  exports: unknown;
  children: unknown[];
  paths: string[];
}

/**
 * mqtt-packet, loaded without two of its dependencies that the broker does not need:
 *
 * - `bl`: its parser keeps unparsed bytes in a bl BufferList, built by calling `bl()`, and bl loads
 *   readable-stream (a copy of Node's streams). That was about 20 ms of the broker's start and
 *   6 MiB of its idle RSS, for a buffer list the strict parser replaces with a ByteQueue anyway
 *   (strict-parser.ts). Here `bl()` makes the ByteQueue itself.
 * - `debug`: its parser and writer call a disabled `debug` logger tens of times per packet (about
 *   1.5 % of the CPU at saturation). Left as it is when DEBUG is set, so `DEBUG=mqtt-packet:*`
 *   still traces packets.
 *
 * Node's require.cache takes entries added before a module is first required (documented:
 * "adding or replacing entries is also possible"); each is added only if that module is not
 * loaded already, so a process that loaded mqtt-packet before (a test importing it directly) keeps
 * the real ones. mqtt-packet is pinned to an exact version; test/deps/dependency-internals.test.ts
 * states what this relies on.
 */
function provide(request: string, exports: unknown): void {
  const filename = createRequire(require.resolve('mqtt-packet')).resolve(request);
  if (require.cache[filename] !== undefined) return;
  const entry: CachedModule = { id: filename, filename, loaded: true, exports, children: [], paths: [] };
  require.cache[filename] = entry as unknown as NodeJS.Module;
}

/** A `debug` logger that is off: what mqtt-packet's calls reach when DEBUG is not set. */
const disabledDebug = Object.assign((): void => {}, { enabled: false, namespace: '', log: (): void => {}, extend: () => disabledDebug });

provide('bl', () => new ByteQueue());
if (!process.env.DEBUG) provide('debug', () => disabledDebug);

const mqttPacket = require('mqtt-packet') as typeof MqttPacket;

/**
 * mqtt-packet by default builds a cache of 65,536 two-byte Buffers on the first packet it
 * generates: it delays the first CONNACK and takes megabytes of RSS, to save less per PUBLISH
 * than looking a number up in it costs (bench/results/figures-behind-code.md).
 */
mqttPacket.writeToStream.cacheNumbers = false;

export default mqttPacket;
