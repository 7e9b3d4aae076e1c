/**
 * Two projects run the same suite: one on Express 5 (what `express` resolves
 * to), one on Express 4 (the `express4` alias). The demo and the browser test
 * run once, on Express 5, and so does the
 * packed-tarball test (it installs its own express).
 * @type {import('jest').Config}
 */
// ESM-only packages a test loads with require (http-proxy-middleware 4 and its ESM dependencies), compiled to CommonJS.
const ESM_ONLY = 'http-proxy-middleware|httpxy|is-plain-obj';
const base = {
  testEnvironment: 'node',
  roots: ['<rootDir>/__tests__'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }],
    [`/node_modules/(${ESM_ONLY})/.+\\.m?js$`]: '<rootDir>/__tests__/support/esm-to-cjs.js',
  },
  transformIgnorePatterns: [`/node_modules/(?!(${ESM_ONLY})/)`],
  // Sources import siblings as './x.js' (what the ESM build needs); jest resolves the .ts.
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
};

module.exports = {
  testTimeout: 20000,
  // One worker on a small machine runs every file in one process, and its heap grows over ~90 files
  // (1.3 GB seen); a limit makes jest run them in a worker it replaces once the heap passes it.
  workerIdleMemoryLimit: '700MB',
  // Finds redis-server and Chromium (installs them with apt-get as root); a suite whose service is
  // missing is skipped with one line at the end (services-reporter.js), or fails in CI mode (CI=true).
  globalSetup: '<rootDir>/__tests__/support/services-setup.js',
  reporters: ['default', '<rootDir>/__tests__/support/services-reporter.js'],
  projects: [
    { ...base, displayName: 'express5', globals: { expectedExpressMajor: 5 } },
    {
      ...base,
      displayName: 'express4',
      globals: { expectedExpressMajor: 4 },
      testPathIgnorePatterns: ['/node_modules/', 'demo\\.test\\.ts$', 'status-page\\.test\\.ts$', 'package\\.test\\.ts$'],
      moduleNameMapper: { ...base.moduleNameMapper, '^express(/.*)?$': 'express4$1' },
    },
  ],
};
