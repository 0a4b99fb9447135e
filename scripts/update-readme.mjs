// Regenerates the generated sections of README.md from their sources (`npm run docs`).
// test/unit/readme.test.ts fails when README.md and the sources disagree.
import { readFileSync, writeFileSync } from 'node:fs';
import { CONFIG_TABLE_END, CONFIG_TABLE_START, renderConfigTable } from '../dist/config/docs.js';
import { VALUES_TABLE_END, VALUES_TABLE_START, renderValuesTable } from './chart-docs.mjs';

const readmeUrl = new URL('../README.md', import.meta.url);
const readme = readFileSync(readmeUrl, 'utf8');

function replaceSection(text, startMarker, endMarker, content, what) {
  const start = text.indexOf(startMarker);
  const end = text.indexOf(endMarker);
  if (start < 0 || end < start) throw new Error(`README.md has no ${what} markers`);
  return `${text.slice(0, start + startMarker.length)}\n${content}\n${text.slice(end)}`;
}

let updated = replaceSection(readme, CONFIG_TABLE_START, CONFIG_TABLE_END, renderConfigTable(), 'configuration table');
updated = replaceSection(updated, VALUES_TABLE_START, VALUES_TABLE_END, renderValuesTable(), 'chart values table');
writeFileSync(readmeUrl, updated);
console.log(updated === readme ? 'README.md already up to date' : 'README.md updated');
