// `npm start` runs this first: builds when dist/ is missing or older than any source or proto
// file, so a fresh clone starts with `npm ci && npm start` and a rebuilt one starts at once.
import { execSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const root = path.dirname(path.dirname(new URL(import.meta.url).pathname));
const target = path.join(root, 'dist', 'main.js');

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (full !== path.join(root, 'src', 'generated')) newest = Math.max(newest, newestMtime(full));
    } else {
      newest = Math.max(newest, statSync(full).mtimeMs);
    }
  }
  return newest;
}

const sources = ['src', 'proto', 'buf.gen.yaml', 'tsconfig.json', 'tsconfig.build.json'].map((p) => path.join(root, p));
const newestSource = Math.max(...sources.map((p) => (statSync(p).isDirectory() ? newestMtime(p) : statSync(p).mtimeMs)));
if (!existsSync(target) || statSync(target).mtimeMs < newestSource) {
  console.error('latchkey: building (dist/ is missing or older than the sources)…');
  execSync('npm run build', { cwd: root, stdio: 'inherit' });
}
