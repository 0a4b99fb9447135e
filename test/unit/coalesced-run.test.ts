import { CoalescedRun } from '../../src/runtime/coalesced.js';

describe('CoalescedRun', () => {
  it('runs once more after a run in progress, however many requests came during it', async () => {
    let runs = 0;
    let release!: () => void;
    const run = new CoalescedRun(async () => {
      runs += 1;
      if (runs === 1) await new Promise<void>((resolve) => (release = resolve));
    }, () => false);
    const first = run.request();
    const during = [run.request(), run.request(), run.request()];
    expect(during.every((p) => p === first)).toBe(true);
    release();
    await first;
    expect(runs).toBe(2);
    expect(run.running).toBeUndefined();
  });

  it('starts no further run once stopped', async () => {
    let runs = 0;
    let stopped = false;
    let release!: () => void;
    const run = new CoalescedRun(async () => {
      runs += 1;
      await new Promise<void>((resolve) => (release = resolve));
    }, () => stopped);
    const first = run.request();
    void run.request();
    stopped = true;
    release();
    await first;
    expect(runs).toBe(1);
  });

  it('passes a failed run on and can run again afterwards', async () => {
    let fail = true;
    const run = new CoalescedRun(async () => {
      if (fail) throw new Error('read failed');
    }, () => false);
    await expect(run.request()).rejects.toThrow('read failed');
    expect(run.running).toBeUndefined();
    fail = false;
    await expect(run.request()).resolves.toBeUndefined();
  });
});
