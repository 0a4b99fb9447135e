import { isIP } from 'node:net';
import type { FieldViolation } from '../errors.js';
import type { Checked } from '../validation.js';

export interface ClientInfo {
  readonly ipAddress: string;
  readonly userAgent: string;
  readonly deviceName: string;
}

export const MAX_USER_AGENT = 512;
export const MAX_DEVICE_NAME = 100;

const CONTROL = /\p{Cc}/u;

function codePoints(text: string): string[] {
  return Array.from(text);
}

/**
 * Checks the gateway's description of the end user's device (see ClientInfo in the proto). The
 * user agent is truncated rather than refused because gateways forward it verbatim; it is cut on
 * a code point boundary and stripped of control characters, since it ends up in session lists.
 */
export function checkClientInfo(
  field: string,
  client: ClientInfo | undefined,
): Checked<ClientInfo> {
  if (!client) return { value: { ipAddress: '', userAgent: '', deviceName: '' } };
  const violations: FieldViolation[] = [];
  const ipAddress = client.ipAddress;
  if (ipAddress !== '' && (ipAddress.length > 45 || isIP(ipAddress) === 0)) {
    violations.push({ field: `${field}.ip_address`, description: 'must be an IPv4 or IPv6 address' });
  }
  const deviceName = client.deviceName.trim();
  if (deviceName.length > MAX_DEVICE_NAME * 2 || codePoints(deviceName).length > MAX_DEVICE_NAME) {
    violations.push({ field: `${field}.device_name`, description: `must be at most ${MAX_DEVICE_NAME} characters` });
  } else if (CONTROL.test(deviceName) || !deviceName.isWellFormed()) {
    violations.push({ field: `${field}.device_name`, description: 'must not contain control characters' });
  }
  if (violations.length > 0) return { violations };
  const userAgent = codePoints(client.userAgent.slice(0, MAX_USER_AGENT * 2))
    .slice(0, MAX_USER_AGENT)
    .join('')
    .replace(/\p{Cc}/gu, ' ')
    .toWellFormed();
  return { value: { ipAddress, userAgent, deviceName } };
}
