// Regenerates the generated sections of README.md from their sources (`npm run docs`).
// test/unit/readme.test.ts fails when README.md and the sources disagree.
import { readFileSync, writeFileSync } from 'node:fs';
import { CONFIG_TABLE_END, CONFIG_TABLE_START, renderConfigTable } from '../dist/config/docs.js';

const readmeUrl = new URL('../README.md', import.meta.url);
const readme = readFileSync(readmeUrl, 'utf8');
const start = readme.indexOf(CONFIG_TABLE_START);
const end = readme.indexOf(CONFIG_TABLE_END);
if (start < 0 || end < start) throw new Error('README.md has no configuration table markers');
const updated = `${readme.slice(0, start + CONFIG_TABLE_START.length)}\n${renderConfigTable()}\n${readme.slice(end)}`;
writeFileSync(readmeUrl, updated);
console.log(updated === readme ? 'README.md already up to date' : 'README.md updated');
