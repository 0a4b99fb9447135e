import { createScheduler, type ScheduledJob } from '../../src/scheduler/scheduler.js';
import { capturingLogger } from '../support/sweeps.js';
import { waitFor } from '../support/wait.js';

/** A job whose runs stay in progress until the test releases them. */
function slowJob(schedule: string) {
  let release: () => void = () => undefined;
  const gate = () => new Promise<void>((resolve) => (release = resolve));
  const job = {
    name: 'slow',
    schedule,
    runs: 0,
    signals: [] as AbortSignal[],
    async run(signal: AbortSignal) {
      job.runs += 1;
      job.signals.push(signal);
      await gate();
    },
    release: () => release(),
  };
  return job satisfies ScheduledJob;
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

it('skips a run that is due while the previous one is still going (protect), and says so', async () => {
  const job = slowJob('* * * * * *');
  const { logger, lines } = capturingLogger('info');
  const overlaps: string[] = [];
  const scheduler = createScheduler([job], { logger, onOverlap: (name) => overlaps.push(name) });
  scheduler.start();
  try {
    // Every second a run is due; the first one never finishes until released.
    await waitFor(async () => overlaps.length, (n) => n >= 2, 15_000, 20);
    expect(job.runs).toBe(1);
    expect(overlaps.length).toBeGreaterThanOrEqual(2);
    expect(overlaps.every((name) => name === 'slow')).toBe(true);
    const skipped = lines().filter((line) => line.msg === 'scheduled run skipped: the previous run is still going');
    expect(skipped).toHaveLength(overlaps.length);
    expect(skipped[0]).toMatchObject({ level: 'warn', job: 'slow' });

    // Once it finishes, the next due run starts again.
    job.release();
    await waitFor(async () => job.runs, (n) => n >= 2, 15_000, 20);
    expect(job.runs).toBe(2);
  } finally {
    job.release();
    await scheduler.stop();
  }
});

it('stop() starts no more runs, signals the run in flight, and waits for it', async () => {
  const job = slowJob('* * * * * *');
  const { logger } = capturingLogger('info');
  const scheduler = createScheduler([job], { logger });
  scheduler.start();
  await waitFor(async () => job.runs, (n) => n >= 1, 15_000, 20);

  let stopped = false;
  const stopping = scheduler.stop().then(() => (stopped = true));
  for (let i = 0; i < 10; i++) await tick();
  expect(job.signals[0]!.aborted).toBe(true);
  expect(stopped).toBe(false);

  job.release();
  await stopping;
  expect(stopped).toBe(true);
  expect(job.runs).toBe(1);
});

it('logs what it scheduled, or that it is disabled', async () => {
  const enabled = capturingLogger('info');
  const scheduler = createScheduler([slowJob('*/30 * * * *')], { logger: enabled.logger });
  scheduler.start();
  await scheduler.stop();
  expect(enabled.lines()).toEqual([
    expect.objectContaining({ msg: 'scheduler started', jobs: [{ job: 'slow', schedule: '*/30 * * * *', nextRunAt: expect.any(String) }] }),
  ]);

  const disabled = capturingLogger('info');
  createScheduler([], { logger: disabled.logger }).start();
  expect(disabled.lines()).toEqual([expect.objectContaining({ msg: 'scheduler disabled: no jobs scheduled (SCHEDULER_ENABLED=false)' })]);
});

it('logs a job that throws instead of letting the rejection escape', async () => {
  const { logger, lines } = capturingLogger('info');
  const failing: ScheduledJob = {
    name: 'broken',
    schedule: '* * * * * *',
    run: () => Promise.reject(new Error('boom')),
  };
  const scheduler = createScheduler([failing], { logger });
  scheduler.start();
  try {
    const logged = await waitFor(
      async () => lines().filter((line) => line.msg === 'scheduled job failed'),
      (found) => found.length >= 1,
      15_000,
      20,
    );
    expect(logged[0]).toMatchObject({ level: 'error', job: 'broken', err: expect.objectContaining({ message: 'boom' }) });
  } finally {
    await scheduler.stop();
  }
});
