// A jest reporter: after the summary, one line for each suite that was skipped (or, in CI mode, failed)
// because a service it needs is missing, with the command that would enable it. The suites record
// themselves (services.ts); services-setup.js found the services.
const fs = require('node:fs');
const path = require('node:path');

module.exports = class ServicesReporter {
  constructor(globalConfig) {
    this.rootDir = globalConfig.rootDir;
  }

  onRunComplete(_contexts, results) {
    const file = process.env.EKF_TEST_SKIPS;
    if (!file || !fs.existsSync(file)) return;
    const { strict, services } = JSON.parse(process.env.EKF_TEST_SERVICES ?? '{}');
    const records = fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line));
    fs.rmSync(file, { force: true });
    const byFile = new Map();
    for (const { testPath, service } of records) byFile.set(testPath, service);
    const lines = [...byFile].map(([testPath, service]) => {
      const runs = results.testResults.filter((r) => r.testFilePath === testPath);
      const tests = Math.max(0, ...runs.map((r) => r.numPendingTests));
      const projects = runs.map((r) => r.displayName?.name).filter(Boolean);
      const what = `${path.relative(this.rootDir, testPath)} (${tests} ${tests === 1 ? 'test' : 'tests'}${projects.length > 0 ? `, on ${projects.join(' and ')}` : ''})`;
      const { missing, enable } = services?.[service] ?? { missing: `${service} not found`, enable: `install ${service}` };
      return strict
        ? `FAILED  ${what}: ${missing}; CI mode fails on a missing service. To run it: ${enable}.`
        : `SKIPPED ${what}: ${missing}. To run it: ${enable}.`;
    });
    if (lines.length > 0) process.stderr.write(`\n${lines.join('\n')}\n`);
  }
};
