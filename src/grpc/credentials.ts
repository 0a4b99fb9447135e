import type { Metadata } from '@grpc/grpc-js';
import type { PresentedCredentials } from '../domain/callers.js';
import { DomainError } from '../domain/errors.js';

/**
 * The credential metadata of a call (`authorization`, `x-api-key`). A header sent more than once
 * is refused rather than guessed at: a proxy appending a second value must not change who calls.
 */
export function credentialsOf(metadata: Metadata): PresentedCredentials {
  return { authorization: single(metadata, 'authorization'), apiKey: single(metadata, 'x-api-key') };
}

function single(metadata: Metadata, key: string): string | undefined {
  const values = metadata.get(key);
  if (values.length === 0) return undefined;
  if (values.length > 1 || typeof values[0] !== 'string') throw new DomainError('TOKEN_INVALID', `the \`${key}\` metadata must be sent once`);
  return values[0];
}
