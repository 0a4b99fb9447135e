/**
 * The login statement's session-limit subquery (in `sessions.insertForLogin`) must be planned on
 * the index made for it, whatever the statistics say: on a table just loaded with 200,000 other
 * users' sessions and never analyzed, the planner once walked the `revoked_at` index through
 * every unrevoked session instead (issue 14). Plans only: nothing here runs the statement or
 * measures time.
 *
 * The statement is the one the server sends: `insertForLogin` itself is called, with an
 * EntityManager whose Kysely instance prefixes `EXPLAIN (FORMAT JSON)` to the SQL it is given and
 * passes the parameters on unchanged, so they are bound exactly as they are for a login.
 * EXPLAIN without ANALYZE plans the data-modifying CTEs without running them.
 */
import type { EntityManager } from '@mikro-orm/postgresql';
import { CompiledQuery } from 'kysely';
import type { Orm } from '../../src/persistence/orm.js';
import { sessions } from '../../src/persistence/repositories/sessions.js';
import { createTestDatabase, query, type TestDatabase } from '../support/database.js';
import { insertSessions, insertUsers, openMigratedOrm, seedId } from '../support/sweeps.js';

const INTENDED_INDEX = 'sessions_user_id_last_used_at_created_at_id_idx';
const NOW = new Date('2026-06-01T12:00:00.000Z');
const DAY = 86_400_000;
const at = (offsetMs: number) => new Date(NOW.getTime() + offsetMs);
const OTHER_USERS = 2_000;
const OTHER_SESSIONS = 200_000;
/** The user who logs in: not among the users the bulk load's sessions belong to. */
const LOGIN_USER = seedId(0, OTHER_USERS + 1);

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Index Cond'?: string;
  'Recheck Cond'?: string;
  Filter?: string;
  Plans?: PlanNode[];
}

let db: TestDatabase;
let orm: Orm;

beforeAll(async () => {
  db = await createTestDatabase();
  orm = await openMigratedOrm(db.url, 1);
  // Autovacuum would ANALYZE the table on its own within a minute of the load; here, the test says when.
  await query(db.url, 'alter table sessions set (autovacuum_enabled = false)');
  await insertUsers(db.url, OTHER_USERS + 1);
  // 200,000 active sessions of other users, then the login user's few.
  await insertSessions(db.url, OTHER_USERS, { group: 1, count: OTHER_SESSIONS, idleExpiresAt: at(DAY), absoluteExpiresAt: at(30 * DAY) });
  await query(
    db.url,
    `insert into sessions (id, user_id, refresh_secret_hash, created_at, last_used_at, idle_expires_at, absolute_expires_at)
     select gen_random_uuid(), $1, '\\x00', $2::timestamptz - i * interval '1 hour', $2::timestamptz - i * interval '1 minute', $3, $4
     from generate_series(1, 5) as i`,
    [LOGIN_USER, NOW, at(DAY), at(30 * DAY)],
  );
}, 120_000);

afterAll(async () => {
  await orm?.close(true);
  await db?.drop();
});

/** The plan of the login statement, as `insertForLogin` sends it. */
async function loginStatementPlan(): Promise<PlanNode> {
  const em = orm.em.fork();
  let plan: PlanNode | undefined;
  const kysely = em.getKysely();
  const explainingKysely = {
    async executeQuery(query: CompiledQuery) {
      const result = await kysely.executeQuery<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>(
        CompiledQuery.raw(`explain (format json) ${query.sql}`, [...query.parameters]),
      );
      plan = result.rows[0]!['QUERY PLAN'][0]!.Plan;
      return { rows: [] }; // "no row": insertForLogin returns without reading one
    },
  };
  const explaining = new Proxy(em, {
    get(target, property) {
      if (property === 'getKysely') return () => explainingKysely;
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  }) as EntityManager;
  await sessions.insertForLogin(
    explaining,
    {
      id: '00000000-0000-4000-8000-00000000abcd',
      userId: LOGIN_USER,
      refreshSecretHash: Buffer.alloc(32),
      ipAddress: '192.0.2.1',
      userAgent: 'plan-test',
      deviceName: '',
      now: NOW,
      idleExpiresAt: at(14 * DAY),
      absoluteExpiresAt: at(30 * DAY),
    },
    { passwordChangedAt: at(-DAY), maxSessions: 10, throttleId: '0'.repeat(64) },
    { type: 'login.succeeded', occurredAt: NOW, userId: LOGIN_USER },
  );
  if (!plan) throw new Error('insertForLogin sent no statement');
  return plan;
}

const nodes = (node: PlanNode): PlanNode[] => [node, ...(node.Plans ?? []).flatMap(nodes)];

/**
 * How the plan finds the user's sessions for the session limit: every scan of `sessions` that
 * mentions user_id, with the index it reads it through (a bitmap heap scan's through its bitmap
 * index scans) and whether user_id is a condition of that index or only a filter.
 */
function sessionLimitScans(plan: PlanNode): Array<{ node: string; index: string | undefined; userIdInIndex: boolean }> {
  const mentionsUser = (text: string | undefined) => /\buser_id\b/.test(text ?? '');
  return nodes(plan)
    .filter((node) => node['Relation Name'] === 'sessions' && [node['Index Cond'], node.Filter, node['Recheck Cond']].some(mentionsUser))
    .flatMap((node) => {
      const indexScans = node['Node Type'] === 'Bitmap Heap Scan' ? nodes(node).filter((n) => n['Node Type'] === 'Bitmap Index Scan') : [node];
      return indexScans.map((scan) => ({ node: node['Node Type'], index: scan['Index Name'], userIdInIndex: mentionsUser(scan['Index Cond']) }));
    });
}

const usesTheIntendedIndex = [{ node: expect.stringMatching(/^(Index Scan|Index Scan Backward|Index Only Scan|Bitmap Heap Scan)$/), index: INTENDED_INDEX, userIdInIndex: true }];

const statisticsRows = async () => Number((await query<{ n: string }>(db.url, `select count(*) as n from pg_stats where tablename = 'sessions'`))[0]!.n);

it('uses the session-limit index on a freshly loaded table, before ANALYZE', async () => {
  expect(await statisticsRows()).toBe(0);
  expect(sessionLimitScans(await loginStatementPlan())).toEqual(usesTheIntendedIndex);
});

it('and after ANALYZE', async () => {
  await query(db.url, 'analyze sessions');
  expect(await statisticsRows()).toBeGreaterThan(0);
  expect(sessionLimitScans(await loginStatementPlan())).toEqual(usesTheIntendedIndex);
});
