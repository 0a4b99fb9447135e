import { FairLimiter, LimiterFullError } from '../../src/domain/limiter.js';

const key = (source: string, account = 'a') => ({ source, account });

/** Acquires a turn and records when it starts running. */
function enter(limiter: FairLimiter, label: string, k = key(label), signal?: AbortSignal) {
  const turn = limiter.acquire(k, signal);
  const started: string[] = [];
  const ran = turn.ready.then(() => label);
  return { turn, ran, started };
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

describe('FairLimiter', () => {
  it('runs at most `concurrency` at once and refuses beyond a source\'s share synchronously', () => {
    const limiter = new FairLimiter(1, 10, 2);
    enter(limiter, 'running', key('flood'));
    enter(limiter, 'q1', key('flood'));
    enter(limiter, 'q2', key('flood'));
    expect(() => limiter.acquire(key('flood'))).toThrow(LimiterFullError);
    expect(() => limiter.acquire(key('flood'))).toThrow(expect.objectContaining({ scope: 'source' }));
    expect({ running: limiter.running, queued: limiter.queued }).toEqual({ running: 1, queued: 2 });
    // Another source still gets in.
    expect(() => limiter.acquire(key('other'))).not.toThrow();
  });

  it('serves waiting sources in turn, so a flooding source waits behind itself', async () => {
    const limiter = new FairLimiter(1, 100, 50);
    const first = enter(limiter, 'flood-0', key('flood'));
    const order: string[] = [];
    const flood = Array.from({ length: 5 }, (_, i) => enter(limiter, `flood-${i + 1}`, key('flood')));
    const user = enter(limiter, 'user', key('user'));
    for (const entry of [...flood, user]) void entry.ran.then((label) => order.push(label));
    first.turn.release();
    await settle();
    flood[0]!.turn.release();
    await settle();
    // After the flood's first waiter, the other source is next, not the flood's remaining four.
    expect(order).toEqual(['flood-1', 'user']);
  });

  it('serves the accounts of one source in turn', async () => {
    const limiter = new FairLimiter(1, 100, 50);
    const first = enter(limiter, 'first', key('s', 'a'));
    const order: string[] = [];
    const entries = [enter(limiter, 'a1', key('s', 'a')), enter(limiter, 'a2', key('s', 'a')), enter(limiter, 'b1', key('s', 'b'))];
    for (const entry of entries) void entry.ran.then((label) => order.push(label));
    first.turn.release();
    await settle();
    entries[0]!.turn.release();
    await settle();
    expect(order).toEqual(['a1', 'b1']);
  });

  it('when the whole queue is full, a quieter source takes the place of the busiest source\'s newest waiter', async () => {
    const limiter = new FairLimiter(1, 3, 10);
    enter(limiter, 'running', key('flood'));
    const waiting = [enter(limiter, 'f1', key('flood')), enter(limiter, 'f2', key('flood')), enter(limiter, 'f3', key('flood'))];
    const newcomer = limiter.acquire(key('user'));
    await expect(waiting[2]!.ran).rejects.toBeInstanceOf(LimiterFullError);
    expect(limiter.queued).toBe(3);
    // The flood cannot push itself out: it is refused.
    expect(() => limiter.acquire(key('flood'))).toThrow(expect.objectContaining({ scope: 'global' }));
    // Both count as refused (latchkey_password_hashes_refused_total): the pushed-out one and the flood's last.
    expect(limiter.refused).toBe(2);
    newcomer.release();
    expect(limiter.queued).toBe(2);
  });

  it('takes an aborted waiter out of the queue, and a released running turn frees its slot', async () => {
    const limiter = new FairLimiter(1, 5, 5);
    const first = enter(limiter, 'first', key('a'));
    const controller = new AbortController();
    const waiting = enter(limiter, 'second', key('b'), controller.signal);
    controller.abort(new Error('deadline'));
    await expect(waiting.ran).rejects.toThrow('deadline');
    expect(limiter.queued).toBe(0);
    first.turn.release();
    first.turn.release();
    expect(limiter.running).toBe(0);
    const third = enter(limiter, 'third', key('c'));
    await expect(third.ran).resolves.toBe('third');
    expect(limiter.running).toBe(1);
  });
});
