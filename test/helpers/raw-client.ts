import { connect, type Socket } from 'node:net';
import mqttPacket, { type Packet } from 'mqtt-packet';

/**
 * A client on a raw socket, for cases that need exact control over what is sent and when
 * (withheld acks, malformed bytes, packet order). Received packets queue up until asked for.
 */
export class RawClient {
  readonly socket: Socket;
  readonly received: Packet[] = [];
  #waiters: Array<() => void> = [];
  #closed = false;
  readonly closed: Promise<void>;
  /** The MQTT version this client writes and reads packets in (4 unless opened for MQTT 5). */
  readonly protocolVersion: 3 | 4 | 5;

  private constructor(socket: Socket, protocolVersion: 3 | 4 | 5) {
    this.socket = socket;
    this.protocolVersion = protocolVersion;
    const parser = mqttPacket.parser({ protocolVersion });
    parser.on('packet', (packet: Packet) => {
      this.received.push(packet);
      this.#wake();
    });
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.#closed = true;
        this.#wake();
        resolve();
      }),
    );
  }

  static async connect(port: number, host = '127.0.0.1', protocolVersion: 3 | 4 | 5 = 4): Promise<RawClient> {
    const socket = connect(port, host);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawClient(socket, protocolVersion);
  }

  /** An MQTT 5 client after CONNECT/CONNACK (Clean Start 1, keepalive 0 unless overridden). */
  static async session5(
    port: number,
    connect: Partial<mqttPacket.IConnectPacket> & { clientId: string },
  ): Promise<{ client: RawClient; connack: mqttPacket.IConnackPacket }> {
    const client = await RawClient.connect(port, '127.0.0.1', 5);
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, ...connect });
    const connack = await client.next('connack');
    return { client, connack };
  }

  /** Opens a socket and completes CONNECT/CONNACK; returns the client and its CONNACK. */
  static async session(
    port: number,
    connect: Partial<mqttPacket.IConnectPacket> & { clientId: string },
  ): Promise<{ client: RawClient; connack: mqttPacket.IConnackPacket }> {
    const client = await RawClient.connect(port);
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, ...connect });
    const connack = await client.next('connack');
    return { client, connack };
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  send(packet: Packet): void {
    this.socket.write(mqttPacket.generate(packet, { protocolVersion: this.protocolVersion }));
  }

  sendBytes(bytes: Buffer | number[]): void {
    this.socket.write(Buffer.from(bytes));
  }

  /** The next received packet of that kind (earlier packets of other kinds stay queued). */
  async next<C extends Packet['cmd']>(cmd: C): Promise<Extract<Packet, { cmd: C }>> {
    for (;;) {
      const index = this.received.findIndex((packet) => packet.cmd === cmd);
      if (index >= 0) return this.received.splice(index, 1)[0] as Extract<Packet, { cmd: C }>;
      if (this.#closed) throw new Error(`connection closed while waiting for ${cmd}`);
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /** The next `count` packets of that kind, in arrival order. */
  async take<C extends Packet['cmd']>(cmd: C, count: number): Promise<Array<Extract<Packet, { cmd: C }>>> {
    const packets: Array<Extract<Packet, { cmd: C }>> = [];
    while (packets.length < count) packets.push(await this.next(cmd));
    return packets;
  }

  /** The next `count` packets of any of these kinds, in arrival order (packets of other kinds stay queued). */
  async takeOf(cmds: Array<Packet['cmd']>, count: number): Promise<Packet[]> {
    const packets: Packet[] = [];
    while (packets.length < count) {
      const index = this.received.findIndex((packet) => cmds.includes(packet.cmd));
      if (index >= 0) {
        packets.push(this.received.splice(index, 1)[0]!);
        continue;
      }
      if (this.#closed) throw new Error(`connection closed while waiting for ${cmds.join(' or ')}`);
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    return packets;
  }

  /**
   * Sends PINGREQ and waits for PINGRESP: the broker handles a connection's packets in order, so
   * everything sent before has been processed, and every reply it caused is already here or on its way.
   */
  async roundTrip(): Promise<void> {
    this.send({ cmd: 'pingreq' });
    await this.next('pingresp');
  }

  async close(): Promise<void> {
    this.socket.destroy();
    await this.closed;
  }

  /** Sends DISCONNECT and waits for the broker to close the socket. */
  async disconnect(): Promise<void> {
    this.send({ cmd: 'disconnect' });
    await this.closed;
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}
