/**
 * Runs `work` now, or, while a run is in progress, once more right after it: any number of
 * requests during a run cost one more run, which starts after every one of them. Used by the
 * followers (revocation feed, signing keys), whose notifications may arrive in bursts.
 */
export class CoalescedRun {
  #running: Promise<void> | undefined;
  #again = false;

  constructor(
    private readonly work: () => Promise<void>,
    /** Checked between runs: once true, no further run starts. */
    private readonly stopped: () => boolean,
  ) {}

  /** The run in progress, if any (to wait for it on stop). */
  get running(): Promise<void> | undefined {
    return this.#running;
  }

  request(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          await this.work();
        } while (this.#again && !this.stopped());
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }
}
