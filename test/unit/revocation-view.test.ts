import { randomUUID } from 'node:crypto';
import { RevokedSessionSet } from '../../src/domain/revocations/revoked-set.js';
import { RevocationView } from '../../src/domain/revocations/view.js';
import type { AccessTokenClaims } from '../../src/domain/tokens/access-tokens.js';

const MINUTE = 60_000;

describe('RevokedSessionSet', () => {
  it('holds exactly what was added, across growth, and nothing else', () => {
    const set = new RevokedSessionSet(16);
    const ids = Array.from({ length: 5_000 }, () => randomUUID());
    ids.forEach((id, i) => set.add(id, (i + 1) * 1_000));
    expect(set.size).toBe(5_000);
    for (const id of ids) expect(set.has(id)).toBe(true);
    let foreign = 0;
    for (let i = 0; i < 5_000; i++) if (set.has(randomUUID())) foreign += 1;
    expect(foreign).toBe(0);
    // Adding again keeps one entry.
    set.add(ids[0]!, 10_000_000);
    expect(set.size).toBe(5_000);
  });

  it('takes about 24 bytes per entry outside the heap', () => {
    const set = new RevokedSessionSet();
    for (let i = 0; i < 100_000; i++) set.add(randomUUID(), 1_000);
    expect(set.bytes / set.size).toBeLessThanOrEqual(32);
  });
});

describe('RevocationView', () => {
  const claims = (over: Partial<AccessTokenClaims> = {}): AccessTokenClaims => ({
    userId: 'u1',
    sessionId: randomUUID(),
    email: 'a@example.com',
    roles: ['admin'],
    tokenId: 't',
    issuedAt: 1_000,
    expiresAt: 2_000,
    ...over,
  });
  const setup = () => {
    const state = { now: 10_000_000, lastReadAt: 10_000_000 as number | undefined, connected: true };
    const view = new RevocationView({
      relevanceMs: 16 * MINUTE,
      maxStalenessMs: 2_000,
      lastReadAt: () => state.lastReadAt,
      connected: () => state.connected,
      now: () => state.now,
    });
    return { state, view };
  };

  it('answers revoked, stale or active from memory only while fresh, and unknown otherwise', () => {
    const { state, view } = setup();
    const revoked = claims();
    view.apply({ kind: 'session', position: { xid: 1n, id: 1n }, sessionId: revoked.sessionId, userId: 'u1', reason: 'LOGOUT', occurredAt: new Date(5_000_000) });
    expect(view.verdict(revoked)).toBe('revoked');
    expect(view.verdict(claims())).toBe('active');
    state.now += 2_001;
    expect(view.verdict(revoked)).toBe('unknown');
    state.lastReadAt = state.now;
    state.connected = false;
    expect(view.verdict(revoked)).toBe('unknown');
    expect(view.fallbacks).toBe(2);
  });

  it('defers to the database after a local revocation until a read started after it', () => {
    const { state, view } = setup();
    view.noteLocalRevocation();
    expect(view.verdict(claims())).toBe('unknown');
    state.now += 1;
    state.lastReadAt = state.now;
    expect(view.verdict(claims())).toBe('active');
  });

  it('marks a token stale when it was issued no later than a role removal and carries a removed role', () => {
    const { view } = setup();
    view.apply({ kind: 'user', position: { xid: 1n, id: 2n }, userId: 'u1', reason: 'ROLES_REMOVED', roles: ['reader'], occurredAt: new Date(1_500_500) });
    expect(view.verdict(claims({ issuedAt: 1_500, roles: ['admin'] }))).toBe('stale');
    expect(view.verdict(claims({ issuedAt: 1_500, roles: ['reader'] }))).toBe('active');
    // Issued after the removal: it carries the roles of its time, whatever they are.
    expect(view.verdict(claims({ issuedAt: 1_501, roles: ['admin'] }))).toBe('active');
    expect(view.verdict(claims({ userId: 'u2', issuedAt: 1_000, roles: ['admin'] }))).toBe('active');
  });

  it('prunes what is older than the relevance window', () => {
    const { view } = setup();
    const old = claims();
    const recent = claims();
    view.apply({ kind: 'session', position: { xid: 1n, id: 1n }, sessionId: old.sessionId, userId: 'u1', reason: 'LOGOUT', occurredAt: new Date(1_000_000) });
    view.apply({ kind: 'session', position: { xid: 1n, id: 2n }, sessionId: recent.sessionId, userId: 'u1', reason: 'LOGOUT', occurredAt: new Date(9_000_000) });
    // Generations of a quarter window (4 minutes): the old entry's generation ends by the cutoff.
    expect(view.prune(1_000_000 + 16 * MINUTE + 4 * MINUTE)).toBe(1);
    expect(view.verdict(old)).toBe('active');
    expect(view.verdict(recent)).toBe('revoked');
    expect(view.size).toBe(1);
  });

  it('is off with a staleness of 0', () => {
    const view = new RevocationView({ relevanceMs: MINUTE, maxStalenessMs: 0, lastReadAt: () => Date.now(), connected: () => true });
    expect(view.verdict(claims())).toBe('unknown');
  });
});
