/** One registry of coded errors, so callers and operators can rely on a stable `code`. */

export const ErrorCodes = {
  STORE_LOCKED: 'BROKER_ERR_STORE_LOCKED',
  STORE_NOT_A_BROKER_STORE: 'BROKER_ERR_STORE_NOT_A_BROKER_STORE',
  STORE_UNSUPPORTED_FORMAT: 'BROKER_ERR_STORE_UNSUPPORTED_FORMAT',
  STORE_OPEN_FAILED: 'BROKER_ERR_STORE_OPEN_FAILED',
  STORE_WRITE_FAILED: 'BROKER_ERR_STORE_WRITE_FAILED',
  STORE_CORRUPT_RECORD: 'BROKER_ERR_STORE_CORRUPT_RECORD',
  /** The store is damaged (LevelDB files, format marker, a record read at start); see store-damage.ts. */
  STORE_CORRUPT: 'BROKER_ERR_STORE_CORRUPT',
  STORE_CLOSED: 'BROKER_ERR_STORE_CLOSED',
  STORE_UNKNOWN_SESSION: 'BROKER_ERR_STORE_UNKNOWN_SESSION',
  BAD_OPTION: 'BROKER_ERR_BAD_OPTION',
  /** The config file is missing, unreadable, not JSON/YAML, or holds unknown keys or bad values. */
  BAD_CONFIG: 'BROKER_ERR_BAD_CONFIG',
  LISTEN_FAILED: 'BROKER_ERR_LISTEN_FAILED',
  PROTOCOL_VIOLATION: 'BROKER_ERR_PROTOCOL_VIOLATION',
  /** The password file cannot be read or has a bad line (the message names the file and line). */
  PASSWORD_FILE_INVALID: 'BROKER_ERR_PASSWORD_FILE_INVALID',
  /** Too many password checks are waiting: the CONNECT is refused with 0x03 (server unavailable). */
  AUTH_BUSY: 'BROKER_ERR_AUTH_BUSY',
  /** The ACL file cannot be read or has a bad line (the message names the file and line). */
  ACL_FILE_INVALID: 'BROKER_ERR_ACL_FILE_INVALID',
  /** A CONNECT for a client id whose session belongs to another user. */
  SESSION_OWNED_BY_OTHER: 'BROKER_ERR_SESSION_OWNED_BY_OTHER',
  /** A CONNECT would create a persistent session beyond max_sessions: refused with 0x03. */
  SESSION_LIMIT_REACHED: 'BROKER_ERR_SESSION_LIMIT_REACHED',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class BrokerError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BrokerError';
    this.code = code;
  }
}

/** A client broke the protocol: its connection is closed, nothing else is affected. */
export class ProtocolViolation extends BrokerError {
  /** The MQTT 5 DISCONNECT reason code an MQTT 5 client is told (default 0x82, Protocol Error). */
  readonly reasonCode: number;

  constructor(message: string, reasonCode = 0x82) {
    super(ErrorCodes.PROTOCOL_VIOLATION, message);
    this.name = 'ProtocolViolation';
    this.reasonCode = reasonCode;
  }
}

/**
 * broker-admin's own errors. Store errors keep their BrokerError codes; these travel over the
 * admin socket as `{"error": {"code", "message"}}` like any other.
 */
export const AdminErrorCodes = {
  NO_DATA_DIR: 'BROKER_ADMIN_ERR_NO_DATA_DIR',
  UNKNOWN_SESSION: 'BROKER_ADMIN_ERR_UNKNOWN_SESSION',
  UNKNOWN_RETAINED: 'BROKER_ADMIN_ERR_UNKNOWN_RETAINED',
  BAD_REQUEST: 'BROKER_ADMIN_ERR_BAD_REQUEST',
  /** The store is locked by a process that does not answer on the admin socket. */
  UNREACHABLE: 'BROKER_ADMIN_ERR_UNREACHABLE',
  /** Something else answers on the admin socket path. */
  SOCKET_IN_USE: 'BROKER_ADMIN_ERR_SOCKET_IN_USE',
  /** The admin connection broke or spoke something else than the protocol. */
  PROTOCOL: 'BROKER_ADMIN_ERR_PROTOCOL',
  /** An error without a code of its own, reported by the running broker. */
  INTERNAL: 'BROKER_ADMIN_ERR_INTERNAL',
} as const;

export class AdminError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AdminError';
    this.code = code;
  }
}

/** The code of any error: its own when it has one (AdminError, BrokerError), else INTERNAL. */
export function errorCode(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : AdminErrorCodes.INTERNAL;
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
