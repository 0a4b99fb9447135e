import { Migration20261123000000Initial } from './Migration20261123000000Initial.js';

/** Every migration, in order. Listed explicitly so the same list works from src/ (tests) and dist/. */
export const migrationsList = [{ name: 'Migration20261123000000Initial', class: Migration20261123000000Initial }];
