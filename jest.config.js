/** @type {import('jest').Config} */
export default {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  // The deployment tests need podman and Helm: `npm run test:deploy` runs them (test/deploy/jest.config.js).
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/deploy/'],
  extensionsToTreatAsEsm: ['.ts'],
  transform: {
    '^.+\\.ts$': [
      '@swc/jest',
      {
        jsc: { parser: { syntax: 'typescript' }, target: 'es2023' },
        module: { type: 'es6' },
      },
    ],
  },
  // Sources import with `.js` suffixes (NodeNext); map them back to the .ts files under test.
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  testTimeout: 60000,
  // Each file gets its own database, so files run in parallel; two cores here.
  maxWorkers: process.env.CI ? 2 : '50%',
};
