import { readFileSync } from 'node:fs';
import { CONFIG_TABLE_END, CONFIG_TABLE_START, renderConfigTable } from '../../src/config/docs.js';
import { variables } from '../../src/config/schema.js';
import {
  VALUES_FILE,
  VALUES_TABLE_END,
  VALUES_TABLE_START,
  documentedValues,
  renderValuesTable,
  undocumentedValues,
} from '../../scripts/chart-docs.mjs';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

describe('README configuration table', () => {
  it('is exactly what the configuration schema generates (run `npm run docs` to update it)', () => {
    const start = readme.indexOf(CONFIG_TABLE_START);
    const end = readme.indexOf(CONFIG_TABLE_END);
    expect(start).toBeGreaterThan(-1);
    expect(end).toBeGreaterThan(start);
    expect(readme.slice(start + CONFIG_TABLE_START.length, end).trim()).toBe(renderConfigTable());
  });

  it('has one row per variable the service reads', () => {
    const rows = renderConfigTable().split('\n').slice(2);
    expect(rows.map((row) => /^\| `([A-Z_]+)`/.exec(row)?.[1])).toEqual(Object.keys(variables));
  });

  it('never has a default for a secret, so none can ship in the docs or the image', () => {
    const secrets = Object.entries(variables).filter(([, spec]) => 'secret' in spec && spec.secret);
    expect(secrets.map(([name]) => name)).toEqual(['DATABASE_URL', 'KEY_ENCRYPTION_KEY', 'KEY_ENCRYPTION_KEYS', 'SERVICE_API_KEYS']);
    for (const [, spec] of secrets) expect('default' in spec).toBe(false);
  });
});

describe('README chart values table', () => {
  const values = readFileSync(VALUES_FILE, 'utf8');

  it('is exactly what helm/latchkey/values.yaml generates (run `npm run docs` to update it)', () => {
    const start = readme.indexOf(VALUES_TABLE_START);
    const end = readme.indexOf(VALUES_TABLE_END);
    expect(start).toBeGreaterThan(-1);
    expect(end).toBeGreaterThan(start);
    expect(readme.slice(start + VALUES_TABLE_START.length, end).trim()).toBe(renderValuesTable(values));
  });

  it('documents every value where it is defined (a `# --` comment on the key or an enclosing one)', () => {
    expect(undocumentedValues(values)).toEqual([]);
  });

  it('finds documentation the way it is written: a `# --` comment and its continuation lines', () => {
    const text = ['# -- Top.', '# continued.', 'top: 1', 'section:', '  # -- Inner.', '  inner: {}', '  # a plain comment', '  plain: 2'].join('\n');
    expect(documentedValues(text)).toEqual([
      { path: ['top'], description: 'Top. continued.' },
      { path: ['section', 'inner'], description: 'Inner.' },
    ]);
    expect(undocumentedValues(text)).toEqual(['section.plain']);
  });
});
