// Copies Envoy's ext_authz protos, and every file they import, from the @grpc/grpc-js-xds package
// (a devDependency) into .envoy-proto/, the folder buf.gen.yaml generates them from. Only the
// import closure of envoy/service/auth/v3/external_auth.proto is copied: generating the whole
// Envoy API would put thousands of unused files into dist/. Nothing here is written by hand.
// google/protobuf/* are left to buf, which has the well-known types built in.
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const deps = join(root, 'node_modules/@grpc/grpc-js-xds/deps');
const includeDirs = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((name) => join(deps, name));
const out = join(root, '.envoy-proto');
const ENTRY = 'envoy/service/auth/v3/external_auth.proto';

function locate(file) {
  for (const dir of includeDirs) {
    const path = join(dir, file);
    if (existsSync(path)) return path;
  }
  throw new Error(`envoy-protos: ${file} not found in @grpc/grpc-js-xds/deps (is the devDependency installed?)`);
}

rmSync(out, { recursive: true, force: true });
const seen = new Set();
const pending = [ENTRY];
while (pending.length > 0) {
  const file = pending.pop();
  if (seen.has(file) || file.startsWith('google/protobuf/')) continue;
  seen.add(file);
  const source = locate(file);
  mkdirSync(dirname(join(out, file)), { recursive: true });
  copyFileSync(source, join(out, file));
  for (const match of readFileSync(source, 'utf8').matchAll(/^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;/gm)) pending.push(match[1]);
}
console.log(`envoy-protos: ${seen.size} files copied to .envoy-proto/`);
