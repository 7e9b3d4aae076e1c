/** @type {import('jest').Config} */
module.exports = {
  rootDir: '..',
  testEnvironment: 'node',
  roots: ['<rootDir>/reliability'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] },
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  testTimeout: 120000,
  // One file at a time: the load and memory figures are measured, and the machine has 2 cores.
  maxWorkers: 1,
  // A leaked socket or timer must fail the run (faults.test.ts checks the handles), not hang it.
  forceExit: true,
  // Clears reliability/last-run/ before the run; prints and saves the figures of every file after it.
  globalSetup: '<rootDir>/reliability/support/global-setup.js',
  globalTeardown: '<rootDir>/reliability/support/global-teardown.js',
};
