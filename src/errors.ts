/** One registry of coded errors, so callers and operators can rely on a stable `code`. */

export const ErrorCodes = {
  STORE_LOCKED: 'BROKER_ERR_STORE_LOCKED',
  STORE_NOT_A_BROKER_STORE: 'BROKER_ERR_STORE_NOT_A_BROKER_STORE',
  STORE_UNSUPPORTED_FORMAT: 'BROKER_ERR_STORE_UNSUPPORTED_FORMAT',
  STORE_OPEN_FAILED: 'BROKER_ERR_STORE_OPEN_FAILED',
  STORE_WRITE_FAILED: 'BROKER_ERR_STORE_WRITE_FAILED',
  STORE_CORRUPT_RECORD: 'BROKER_ERR_STORE_CORRUPT_RECORD',
  STORE_CLOSED: 'BROKER_ERR_STORE_CLOSED',
  STORE_UNKNOWN_SESSION: 'BROKER_ERR_STORE_UNKNOWN_SESSION',
  BAD_OPTION: 'BROKER_ERR_BAD_OPTION',
  LISTEN_FAILED: 'BROKER_ERR_LISTEN_FAILED',
  PROTOCOL_VIOLATION: 'BROKER_ERR_PROTOCOL_VIOLATION',
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
  constructor(message: string) {
    super(ErrorCodes.PROTOCOL_VIOLATION, message);
    this.name = 'ProtocolViolation';
  }
}
