/**
 * `latchkey keys …` arguments, read as they are: a key id is base64url and may begin with `-`
 * (one in 64 does), which a general option parser would take for options (`-v…` for --version).
 * Only `--now` is a flag here; everything else is positional.
 */
export function keysArguments(argv: readonly string[]): { args: string[]; now: boolean } {
  return { args: argv.filter((arg) => arg !== '--now'), now: argv.includes('--now') };
}
