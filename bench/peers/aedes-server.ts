/**
 * The Aedes peer: Aedes 1.x with aedes-persistence-level on a Level database in <data>/level.
 * `node bench/dist/peers/aedes-server.js --port <n> --data <dir>`; prints
 * `listening on 127.0.0.1:<port>` when it accepts connections; SIGTERM/SIGINT close it cleanly.
 */
import { createServer } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Aedes } from 'aedes';
import aedesPersistenceLevel from 'aedes-persistence-level';
import { Level } from 'level';

const { values } = parseArgs({
  options: { port: { type: 'string' }, data: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' } },
});
if (!values.port || !values.data) {
  console.error('usage: aedes-server --port <n> --data <dir>');
  process.exit(2);
}

const persistence = aedesPersistenceLevel(new Level(join(values.data, 'level')));
const aedes = await Aedes.createBroker({ persistence });
// noDelay like the other two brokers (ours sets it on every socket, Mosquitto via set_tcp_nodelay).
const server = createServer({ noDelay: true }, aedes.handle);
aedes.on('clientError', (client, error) => console.error(`client ${client.id}: ${error.message}`));
server.listen(Number(values.port), values.host, () => console.log(`listening on ${values.host}:${values.port}`));

let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  server.close();
  aedes.close(() => {
    Promise.resolve(persistence.destroy()).then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(`closing the store failed: ${String(error)}`);
        process.exit(1);
      },
    );
  });
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
