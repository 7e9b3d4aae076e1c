import { appendFileSync } from 'node:fs';

/**
 * For a suite that needs a service (a real redis-server, Debian's Chromium): the jest functions to use
 * instead of the globals, as `const { test, beforeAll, afterAll, beforeEach, afterEach } = needs('redis-server');`.
 *
 * services-setup.js (jest's globalSetup) looked for the services and installed what it could. When the
 * service is there, these are jest's own. When it is missing, the suite's tests are skipped and its hooks
 * do nothing (services-reporter.js prints one line for it, with the command that would enable it); in CI
 * mode one more test fails, naming the service, so that a skip can never pass CI.
 */
export function needs(service: 'redis-server' | 'chromium'): SuiteFunctions {
  const own = { test, beforeAll, afterAll, beforeEach, afterEach };
  // Without the globalSetup (jest run with another config), the suite runs: its own errors say what is missing.
  const found = process.env['EKF_TEST_SERVICES'];
  if (!found) return own;
  const { strict, services } = JSON.parse(found) as {
    strict: boolean;
    services: Record<string, { path?: string; missing?: string; enable?: string }>;
  };
  const state = services[service];
  if (!state?.missing) return own;

  const testPath = expect.getState().testPath;
  const record = process.env['EKF_TEST_SKIPS'];
  if (record && testPath) appendFileSync(record, JSON.stringify({ testPath, service }) + '\n');
  if (strict) {
    test(`${service} is installed (CI mode: a suite that needs it must run)`, () => {
      const error = new Error(`${state.missing}. To run this suite: ${state.enable}.`);
      error.stack = error.message; // the message is all there is to say: no code frame
      throw error;
    });
  }
  const skip = () => {};
  return { test: test.skip, beforeAll: skip, afterAll: skip, beforeEach: skip, afterEach: skip };
}

interface SuiteFunctions {
  test: typeof test;
  beforeAll: typeof beforeAll;
  afterAll: typeof afterAll;
  beforeEach: typeof beforeEach;
  afterEach: typeof afterEach;
}
