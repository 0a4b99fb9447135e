import { Migration } from '@mikro-orm/migrations';

/**
 * `latchkey_before(deadline)`: true while the database clock is before `deadline` (or when it is
 * null), otherwise it raises SQLSTATE LK001 and the statement rolls back. Every write made on a
 * call's behalf evaluates it for each row it writes (see BEFORE_DEADLINE in
 * repositories/sql.ts), so a statement that a partitioned network delivers after the call gave up
 * changes nothing. clock_timestamp() rather than now(): now() is the transaction's start, which
 * for a statement held in the network is its arrival, not the time the row is written.
 */
export class Migration20261201120000CallDeadline extends Migration {
  override name = 'Migration20261201120000CallDeadline';

  override up(): void {
    this.addSql(`create or replace function latchkey_before(deadline timestamptz) returns boolean
      language plpgsql volatile parallel restricted as $$
      begin
        if deadline is not null and clock_timestamp() >= deadline then
          raise exception 'the call that sent this write gave up at %; nothing was written', deadline using errcode = 'LK001';
        end if;
        return true;
      end
      $$;`);
  }

  override down(): void {
    this.addSql(`drop function if exists latchkey_before(timestamptz);`);
  }
}
