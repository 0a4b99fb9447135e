import { Migration20261123000000Initial } from './Migration20261123000000Initial.js';
import { Migration20261124000000OneTimeTokenEmail } from './Migration20261124000000OneTimeTokenEmail.js';
import { Migration20261201000000SessionLimitIndex } from './Migration20261201000000SessionLimitIndex.js';
import { Migration20261201000100SchedulerLeases } from './Migration20261201000100SchedulerLeases.js';
import { Migration20261201120000CallDeadline } from './Migration20261201120000CallDeadline.js';
import { Migration20261201130000RevocationFeed } from './Migration20261201130000RevocationFeed.js';
import { Migration20261201140000KeyRotation } from './Migration20261201140000KeyRotation.js';
import { Migration20261201150000LoginThrottle } from './Migration20261201150000LoginThrottle.js';
import { Migration20261201160000EmailNormalisation } from './Migration20261201160000EmailNormalisation.js';

/** Every migration, in order. Listed explicitly so the same list works from src/ (tests) and dist/. */
export const migrationsList = [
  { name: 'Migration20261123000000Initial', class: Migration20261123000000Initial },
  { name: 'Migration20261124000000OneTimeTokenEmail', class: Migration20261124000000OneTimeTokenEmail },
  { name: 'Migration20261201000000SessionLimitIndex', class: Migration20261201000000SessionLimitIndex },
  { name: 'Migration20261201000100SchedulerLeases', class: Migration20261201000100SchedulerLeases },
  { name: 'Migration20261201120000CallDeadline', class: Migration20261201120000CallDeadline },
  { name: 'Migration20261201130000RevocationFeed', class: Migration20261201130000RevocationFeed },
  { name: 'Migration20261201140000KeyRotation', class: Migration20261201140000KeyRotation },
  { name: 'Migration20261201150000LoginThrottle', class: Migration20261201150000LoginThrottle },
  { name: 'Migration20261201160000EmailNormalisation', class: Migration20261201160000EmailNormalisation },
];
