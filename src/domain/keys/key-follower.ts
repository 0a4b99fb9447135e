import type { EntityManager } from '@mikro-orm/postgresql';
import { Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../observability/logger.js';
import { signingKeys } from '../../persistence/repositories/signing-keys.js';
import type { KeyRing } from './key-ring.js';
import { CoalescedRun } from '../../runtime/coalesced.js';

/** The channel the `signing_keys` trigger notifies at each commit that changed keys. */
export const SIGNING_KEYS_CHANNEL = 'latchkey_signing_keys';

export interface KeyRingFollowerOptions {
  /** A fresh EntityManager for each read. */
  readonly em: () => EntityManager;
  /** A full reload at least this often (SIGNING_KEY_RELOAD_INTERVAL). */
  readonly reloadIntervalMs: number;
  /**
   * Without notifications (the embedded database): how often to compare the table's fingerprint
   * and reload when it changed. Undefined: only the periodic reload and notifications.
   */
  readonly pollIntervalMs?: number;
  readonly logger: Logger;
  /** Told after each reload that changed the ring. */
  readonly onChange?: () => void;
}

/**
 * Keeps a replica's KeyRing in step with `signing_keys` without a restart: a NOTIFY on
 * `latchkey_signing_keys` (delivered on the revocation follower's LISTEN connection) reloads at
 * once; a periodic reload is the safety net for a lost notification or connection. Reads never
 * throw out of here: a failed one is logged and the ring keeps what it had.
 */
export class KeyRingFollower {
  #timer: NodeJS.Timeout | undefined;
  readonly #runs = new CoalescedRun(() => this.#reload(), () => this.#stopped);
  #stopped = false;
  #lastReload = Date.now();
  #lastFingerprint: string | undefined;
  #lastSuccessAt = Date.now();

  constructor(
    private readonly ring: KeyRing,
    private readonly options: KeyRingFollowerOptions,
  ) {}

  /** Wall-clock ms of the last reload that succeeded (or of start-up's load). */
  get lastSuccessAt(): number {
    return this.#lastSuccessAt;
  }

  start(): void {
    this.#schedule();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#runs.running?.catch(() => undefined);
  }

  /** Keys changed somewhere (a notification): reload now, coalesced with a reload in progress. */
  changed(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    return this.#runs.request();
  }

  async #reload(): Promise<void> {
    try {
      this.#lastReload = Date.now();
      const changed = await this.ring.reload(this.options.em(), (kid, error) =>
        this.options.logger.error({ kid, err: { message: error.message } }, 'signing key left out: no configured key-encryption key opens it'),
      );
      this.#lastSuccessAt = Date.now();
      if (changed) {
        this.options.logger.info({ kid: this.ring.signing.kid, publishedKeys: this.ring.keyIds.length }, 'signing keys reloaded');
        this.options.onChange?.();
      }
    } catch (error) {
      this.options.logger.warn({ err: { message: (error as Error).message } }, 'signing keys: reload failed; keeping the keys loaded before');
    }
  }

  #schedule(): void {
    if (this.#stopped) return;
    const interval = this.options.pollIntervalMs ?? this.options.reloadIntervalMs;
    this.#timer = setTimeout(() => void this.#tick().finally(() => this.#schedule()), interval);
    this.#timer.unref();
  }

  async #tick(): Promise<void> {
    if (this.options.pollIntervalMs === undefined || Date.now() - this.#lastReload >= this.options.reloadIntervalMs) {
      await this.changed();
      return;
    }
    try {
      const fingerprint = await signingKeys.fingerprint(this.options.em());
      // The first check reloads too: a change between start-up's load and here is not missed.
      const changed = fingerprint !== this.#lastFingerprint;
      this.#lastFingerprint = fingerprint;
      if (changed) await this.changed();
    } catch (error) {
      this.options.logger.debug({ err: { message: (error as Error).message } }, 'signing keys: change check failed');
    }
  }
}

/** The key ring's metrics, read at scrape time. */
export function observeSigningKeys(registry: Registry, ring: KeyRing, follower: KeyRingFollower): void {
  new Gauge({
    name: 'latchkey_signing_keys_published',
    help: 'Signing keys this replica publishes in its JWKS (next, active and retired ones).',
    registers: [registry],
    collect() {
      this.set(ring.keyIds.length);
    },
  });
  new Gauge({
    name: 'latchkey_signing_keys_last_reload_timestamp_seconds',
    help: 'When this replica last read the signing keys successfully (Unix time); far behind SIGNING_KEY_RELOAD_INTERVAL means it cannot follow key changes.',
    registers: [registry],
    collect() {
      this.set(follower.lastSuccessAt / 1000);
    },
  });
}
