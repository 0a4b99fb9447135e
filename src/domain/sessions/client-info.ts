import { isIP } from 'node:net';
import type { FieldViolation } from '../errors.js';
import { isUtf8Text, neutraliseBidiControls, NOT_UTF8, type Checked } from '../validation.js';

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
 * Checks the gateway's description of the end user's device (see ClientInfo in the proto). The IP
 * address and the device name are refused when they are not valid UTF-8, like every free-text
 * field (isUtf8Text).
 *
 * The user agent is repaired rather than refused: gateways forward the User-Agent header verbatim,
 * HTTP allows bytes in it that are not UTF-8 (obs-text, often Latin-1), and neither the end user
 * nor the gateway can fix it, so refusing would lock that user out of Login over a value Latchkey
 * only displays and audits, and never decides anything on. So it keeps the decoder's U+FFFD for
 * each invalid sequence (a lone surrogate becomes one too), is cut on a code point boundary, and
 * has control characters blanked, since it ends up in session lists.
 *
 * Bidi embedding, override and isolate controls (BIDI_CONTROLS) in the user agent and the device
 * name are stored as U+FFFD, so a session list can't be made to read as something else; the device
 * name is kept rather than refused, as the gateway may take it from a header the user can't fix.
 */
export function checkClientInfo(
  field: string,
  client: ClientInfo | undefined,
): Checked<ClientInfo> {
  if (!client) return { value: { ipAddress: '', userAgent: '', deviceName: '' } };
  const violations: FieldViolation[] = [];
  const ipAddress = client.ipAddress;
  if (ipAddress !== '' && !isUtf8Text(ipAddress)) {
    violations.push({ field: `${field}.ip_address`, description: NOT_UTF8 });
  } else if (ipAddress !== '' && (ipAddress.length > 45 || isIP(ipAddress) === 0)) {
    violations.push({ field: `${field}.ip_address`, description: 'must be an IPv4 or IPv6 address' });
  }
  const deviceName = client.deviceName.trim();
  if (deviceName.length > MAX_DEVICE_NAME * 2 || codePoints(deviceName).length > MAX_DEVICE_NAME) {
    violations.push({ field: `${field}.device_name`, description: `must be at most ${MAX_DEVICE_NAME} characters` });
  } else if (!isUtf8Text(deviceName)) {
    violations.push({ field: `${field}.device_name`, description: NOT_UTF8 });
  } else if (CONTROL.test(deviceName)) {
    violations.push({ field: `${field}.device_name`, description: 'must not contain control characters' });
  }
  if (violations.length > 0) return { violations };
  const userAgent = codePoints(client.userAgent.slice(0, MAX_USER_AGENT * 2))
    .slice(0, MAX_USER_AGENT)
    .join('')
    .replace(/\p{Cc}/gu, ' ')
    .toWellFormed();
  return { value: { ipAddress, userAgent: neutraliseBidiControls(userAgent), deviceName: neutraliseBidiControls(deviceName) } };
}
