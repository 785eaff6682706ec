import type { MessageProperties } from '../store/repository.js';
import type { Properties } from './strict-parser.js';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** The message properties of a PUBLISH or a will, as mqtt-packet and the strict parser report them. */
export interface ArrivingProperties {
  payloadFormatIndicator?: boolean;
  messageExpiryInterval?: number;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
}

/**
 * The properties the broker keeps with a message that arrived with `properties` (a PUBLISH's, or a
 * will's), or undefined when it has none worth keeping. The Message Expiry Interval becomes a
 * deadline counted from `now` [MQTT-3.3.2-6]. 'payload-format-invalid': the Payload Format
 * Indicator says UTF-8 and the payload is not (the broker checks it, as MQTT 5.0 3.3.2.3.2
 * allows, so that no receiver is handed text that is not).
 */
export function messagePropertiesOf(
  properties: ArrivingProperties | undefined,
  payload: Buffer,
  now: number,
): MessageProperties | undefined | 'payload-format-invalid' {
  if (properties === undefined) return undefined;
  const { payloadFormatIndicator, messageExpiryInterval, contentType, responseTopic, correlationData } = properties;
  const userProperties = (properties as Properties).userPropertyList;
  const kept: MessageProperties = {};
  if (payloadFormatIndicator !== undefined) {
    kept.payloadFormat = payloadFormatIndicator ? 1 : 0;
    if (payloadFormatIndicator && !isUtf8(payload)) return 'payload-format-invalid';
  }
  if (messageExpiryInterval !== undefined) kept.expiresAt = now + messageExpiryInterval * 1000;
  if (contentType !== undefined) kept.contentType = contentType;
  if (responseTopic !== undefined) kept.responseTopic = responseTopic;
  if (correlationData !== undefined) kept.correlationData = Buffer.from(correlationData);
  if (userProperties !== undefined) kept.userProperties = userProperties;
  return Object.keys(kept).length === 0 ? undefined : kept;
}

function isUtf8(payload: Buffer): boolean {
  try {
    strictUtf8.decode(payload);
    return true;
  } catch {
    return false;
  }
}
