import { Migration } from '@mikro-orm/migrations';

/**
 * One row per scheduled job that a replica is running (see `SchedulerLeaseSchema`): a sweep holds
 * it from its first batch to its end, so with several replicas only one sweeps, rests included.
 */
export class Migration20261201000100SchedulerLeases extends Migration {
  override name = 'Migration20261201000100SchedulerLeases';

  override up(): void {
    this.addSql(`create table "scheduler_leases" (
      "job" varchar(64) not null,
      "holder" varchar(64) not null,
      "expires_at" timestamptz not null,
      primary key ("job"));`);
  }

  override down(): void {
    this.addSql(`drop table if exists "scheduler_leases";`);
  }
}
