import { keysArguments } from '../../src/cli/keys-args.js';

describe('latchkey keys arguments', () => {
  it('takes a key id that begins with "-" as the key id, not as options', () => {
    expect(keysArguments(['retire', '-vXq3_Ab', '--now'])).toEqual({ args: ['retire', '-vXq3_Ab'], now: true });
    expect(keysArguments(['retire', '--hZ9'])).toEqual({ args: ['retire', '--hZ9'], now: false });
  });

  it('reads --now wherever it stands', () => {
    expect(keysArguments(['retire', '--now', 'k1'])).toEqual({ args: ['retire', 'k1'], now: true });
    expect(keysArguments(['list'])).toEqual({ args: ['list'], now: false });
  });
});
