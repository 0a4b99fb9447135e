import { spawn, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type * as JsYaml from 'js-yaml';

export const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
export const CHART = `${ROOT}helm/latchkey`;
export const HELM = `${ROOT}.tools/bin/helm`;
export const CONTAINERS_CONF = `${ROOT}.tools/containers/containers.conf`;
export const BUILD_NPMRC = `${ROOT}.tools/containers/npmrc`;

/** Fails early, with the fix, when test/deploy/setup.sh has not prepared this machine. */
export function requireSetup(): void {
  for (const file of [HELM, CONTAINERS_CONF, BUILD_NPMRC]) {
    if (!existsSync(file)) throw new Error(`${file} is missing: run test/deploy/setup.sh (npm run test:deploy does)`);
  }
}

/** The environment for podman and buildah: this host's containers.conf. */
export const containerEnv = (): NodeJS.ProcessEnv => ({ ...process.env, CONTAINERS_CONF });

export interface Result {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to completion, capturing its output (never rejects on a non-zero exit). */
export function run(command: string, args: readonly string[], options: SpawnOptions = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Like run, but throws with the output when the command fails. */
export async function check(command: string, args: readonly string[], options: SpawnOptions = {}): Promise<string> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited ${result.code}\n${result.stdout.slice(-4000)}\n${result.stderr.slice(-4000)}`);
  }
  return result.stdout;
}

// js-yaml as @kubernetes/client-node (a devDependency) resolves it; its own loadAllYaml turns
// documents into typed objects and drops the unknown fields these tests must see.
const require = createRequire(import.meta.url);
export const yaml = createRequire(require.resolve('@kubernetes/client-node'))('js-yaml') as typeof JsYaml;

/** The default values plus what the chart requires (publicUrl, DATABASE_URL, KEY_ENCRYPTION_KEY). */
export const REQUIRED = [
  '--set',
  'publicUrl=https://auth.example.com',
  '--set',
  'secret.env.DATABASE_URL=postgres://latchkey:example@db:5432/latchkey',
  '--set',
  'secret.env.KEY_ENCRYPTION_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=',
];
