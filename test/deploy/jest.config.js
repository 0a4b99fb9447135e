// Deployment tests (`npm run test:deploy`): the container image and the Helm chart, for real.
// They need root, podman/buildah and Helm (test/deploy/setup.sh), so plain `npm test` skips them.
import base from '../../jest.config.js';

/** @type {import('jest').Config} */
export default {
  ...base,
  rootDir: '../..',
  roots: ['<rootDir>/test/deploy'],
  testPathIgnorePatterns: ['/node_modules/'],
  // One at a time: an image build takes both cores.
  maxWorkers: 1,
  testTimeout: 120_000,
};
