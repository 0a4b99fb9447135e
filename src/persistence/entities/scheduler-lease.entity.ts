import { defineEntity, p, type InferEntity } from '@mikro-orm/core';

/**
 * Which replica is running a scheduled job, until when. A sweep renews its lease with every batch
 * (in the batch's own statement, under the job's advisory lock) and lets it go when the run ends,
 * so the other replicas stay idle through the rests between its batches instead of filling them
 * with batches of their own. A replica that stops without letting go holds it until `expiresAt`.
 */
export const SchedulerLeaseSchema = defineEntity({
  name: 'SchedulerLease',
  tableName: 'scheduler_leases',
  properties: {
    job: p.string().length(64).primary(),
    holder: p.string().length(64),
    expiresAt: p.datetime(),
  },
});

export type SchedulerLease = InferEntity<typeof SchedulerLeaseSchema>;
