/**
 * The dummy hashes an unknown email is compared against (issue 18): one per cost that stored
 * hashes have, chosen per email by its keyed hash in the stored proportions, the same every time.
 */
import { createHmac } from 'node:crypto';
import { costOf, DummyHashes } from '../../src/domain/passwords/hasher.js';

const keyOf = (email: string) => createHmac('sha256', 'test key').update(email).digest('hex');
const costFor = (dummies: DummyHashes, email: string) => costOf(dummies.pick(keyOf(email)));

it('uses the configured cost while no hash is stored', async () => {
  const dummies = new DummyHashes(5);
  await dummies.prepare(5);
  await dummies.setCounts(new Map());
  expect(costFor(dummies, 'a@example.com')).toBe(5);
  expect(costOf(dummies.pick(undefined))).toBe(5);
});

it('follows the stored costs after a cost change, not the configured one', async () => {
  const dummies = new DummyHashes(6);
  await dummies.prepare(6);
  // Every stored hash still has the old cost 4: unknown emails must cost what they cost.
  await dummies.setCounts(new Map([[4, 1000]]));
  for (let i = 0; i < 50; i++) expect(costFor(dummies, `user${i}@example.com`)).toBe(4);
});

it('gives each unknown email one cost, in the proportions of the stored hashes', async () => {
  const dummies = new DummyHashes(5);
  await dummies.setCounts(new Map([[4, 750], [5, 250]]));
  const costs = Array.from({ length: 4000 }, (_, i) => costFor(dummies, `someone${i}@example.com`));
  const share = costs.filter((c) => c === 4).length / costs.length;
  expect(share).toBeGreaterThan(0.72);
  expect(share).toBeLessThan(0.78);
  // The same email, the same cost, every time.
  for (let i = 0; i < 20; i++) expect(costFor(dummies, `someone${i}@example.com`)).toBe(costs[i]);
});

it('moves with registrations and re-hashes on this replica', async () => {
  const dummies = new DummyHashes(5);
  await dummies.setCounts(new Map([[4, 1]]));
  dummies.moved(4, 5);
  await dummies.prepare(5);
  expect(dummies.costs).toEqual({ 5: 1 });
  dummies.moved(undefined, 5);
  expect(dummies.costs).toEqual({ 5: 2 });
});
