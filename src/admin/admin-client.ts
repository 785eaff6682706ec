import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { AdminError, AdminErrorCodes } from '../errors.js';
import type { AdminRequest, Progress } from './operations.js';
import type { AdminRecord } from './records.js';

/** The admin socket of a running broker, in its data directory. */
export const ADMIN_SOCKET = 'admin.sock';

/** Opens a connection to the admin socket; undefined when nothing answers there. */
export function connectAdmin(path: string): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = connect(path);
    const onError = () => {
      socket.destroy();
      resolve(undefined);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

/** Whether something accepts connections on the socket path. */
export async function probeSocket(path: string): Promise<boolean> {
  const socket = await connectAdmin(path);
  socket?.destroy();
  return socket !== undefined;
}

/** Sends one request on an open admin connection and yields the records of the answer. */
export async function* requestRunning(socket: Socket, request: AdminRequest, progress?: Progress): AsyncGenerator<AdminRecord> {
  let failure: Error | undefined;
  socket.on('error', (error) => (failure = error));
  socket.write(`${JSON.stringify(request)}\n`);
  const lines = createInterface({ input: socket, crlfDelay: Infinity });
  try {
    for await (const line of lines) {
      if (line.trim() === '') continue;
      let frame: Record<string, unknown>;
      try {
        frame = JSON.parse(line) as Record<string, unknown>;
      } catch {
        throw new AdminError(AdminErrorCodes.PROTOCOL, `the broker sent a line that is not JSON: ${line.slice(0, 80)}`);
      }
      if (frame.done === true) return;
      if (typeof frame.error === 'object' && frame.error !== null) {
        const { code, message } = frame.error as { code?: unknown; message?: unknown };
        throw new AdminError(typeof code === 'string' ? code : AdminErrorCodes.INTERNAL, String(message));
      }
      if (typeof frame.progress === 'object' && frame.progress !== null) {
        const { label, count } = frame.progress as { label?: unknown; count?: unknown };
        if (typeof label === 'string' && typeof count === 'number') progress?.(label, count);
        continue;
      }
      if (typeof frame.type === 'string') {
        yield frame as unknown as AdminRecord;
        continue;
      }
      throw new AdminError(AdminErrorCodes.PROTOCOL, `unexpected frame from the broker: ${line.slice(0, 80)}`);
    }
    throw new AdminError(
      AdminErrorCodes.PROTOCOL,
      `the broker closed the admin connection before the end of the answer${failure ? ` (${failure.message})` : ''}`,
    );
  } finally {
    lines.close();
    socket.destroy();
  }
}
