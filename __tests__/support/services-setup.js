// jest globalSetup: finds the services some suites need (a real redis-server, Debian's Chromium), and
// installs the missing ones with apt-get when it can (root, apt-get on the PATH, as on CI). What it found
// goes to the test workers in EKF_TEST_SERVICES: a suite whose service is missing is skipped (with one
// line at the end of the run, see services-reporter.js), or fails when jest runs in CI mode (CI=true).
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

/** What the suites need; `find` returns the binary's path, or undefined. */
const SERVICES = [
  {
    name: 'redis-server',
    aptPackage: 'redis-server',
    envVar: 'REDIS_SERVER',
    find: () => findExecutable(process.env.REDIS_SERVER || 'redis-server'),
    brew: 'brew install redis',
  },
  {
    name: 'chromium',
    aptPackage: 'chromium',
    envVar: 'CHROMIUM_PATH',
    find: () => findExecutable(process.env.CHROMIUM_PATH || '/usr/bin/chromium'),
    brew: 'brew install --cask chromium, then CHROMIUM_PATH=/Applications/Chromium.app/Contents/MacOS/Chromium',
  },
];

/** A name is looked up on the PATH; a path is checked as it is. */
function findExecutable(nameOrPath) {
  const candidates = nameOrPath.includes('/')
    ? [nameOrPath]
    : (process.env.PATH || '')
        .split(path.delimiter)
        .filter(Boolean)
        .map((dir) => path.join(dir, nameOrPath));
  return candidates.find((file) => {
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return fs.statSync(file).isFile();
    } catch {
      return false;
    }
  });
}

/** The command that would make a missing service available here. */
function enableCommand(service) {
  const alternative = `or set ${service.envVar} to its path`;
  if (process.platform === 'darwin') return `${service.brew} (${alternative})`;
  if (findExecutable('apt-get')) {
    const sudo = process.getuid?.() === 0 ? '' : 'sudo ';
    return `${sudo}apt-get install ${service.aptPackage} (${alternative})`;
  }
  return `install ${service.name} with your package manager (${alternative})`;
}

/**
 * Installs what is missing with apt-get when this is a root shell with apt (as on CI); otherwise, or when
 * that fails, returns why the services are not there.
 */
function installWithApt(missing) {
  if (process.platform !== 'linux' || !findExecutable('apt-get')) return 'no apt-get here to install it';
  if (process.getuid?.() !== 0) return 'npm test installs it with apt-get only when run as root';
  if (process.env.EKF_TEST_INSTALL === '0') return 'not installed: EKF_TEST_INSTALL=0';
  const packages = missing.map((service) => service.aptPackage);
  const log = path.join(os.tmpdir(), 'express-key-failover-apt.log');
  process.stderr.write(
    `\nTest services: installing ${packages.join(' ')} with apt-get for the suites that need them (EKF_TEST_INSTALL=0 skips those suites instead; log: ${log}) ...`,
  );
  const started = Date.now();
  const out = fs.openSync(log, 'w');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const apt = (args, timeout) =>
    spawnSync('apt-get', ['-o', 'DPkg::Lock::Timeout=120', ...args], { stdio: ['ignore', out, out], env, timeout, killSignal: 'SIGTERM' });
  let failed = [];
  const update = apt(['-q', 'update'], 300_000);
  if (update.status !== 0) failed = packages;
  // One at a time if together they fail (a package this release does not have must not cost the other).
  else if (apt(['-q', 'install', '-y', ...packages], 900_000).status !== 0) {
    failed = packages.filter((name) => apt(['-q', 'install', '-y', name], 900_000).status !== 0);
  }
  fs.closeSync(out);
  if (failed.length === 0) {
    process.stderr.write(` done in ${Math.round((Date.now() - started) / 1000)} s.\n`);
    return undefined;
  }
  const tail = fs.readFileSync(log, 'utf8').trim().split('\n').slice(-4).join('\n  ');
  process.stderr.write(` ${failed.join(' ')}: failed. Last lines of the log:\n  ${tail}\n`);
  return `apt-get install failed, see ${log}`;
}

module.exports = async function servicesSetup(globalConfig) {
  // jest --ci, on by default when CI is set (CI=true): every suite must run, so a missing service is a failure.
  let missing = SERVICES.filter((service) => !service.find());
  const notInstalled = missing.length > 0 ? installWithApt(missing) : undefined;
  missing = SERVICES.filter((service) => !service.find());
  const services = Object.fromEntries(
    SERVICES.map((service) => {
      const found = service.find();
      return [
        service.name,
        found
          ? { path: found }
          : {
              missing: `${service.name} not found (${notInstalled ?? 'apt-get installed it, but not where the tests look'})`,
              enable: enableCommand(service),
            },
      ];
    }),
  );
  // Read by services.ts in the test workers (forked after this) and by services-reporter.js.
  process.env.EKF_TEST_SERVICES = JSON.stringify({ strict: Boolean(globalConfig.ci), services });
  process.env.EKF_TEST_SKIPS = path.join(os.tmpdir(), `express-key-failover-skips-${process.pid}.jsonl`);
  fs.rmSync(process.env.EKF_TEST_SKIPS, { force: true });
  if (missing.length > 0 && globalConfig.ci) {
    process.stderr.write(
      `\nTest services: ${missing.map((s) => s.name).join(' and ')} missing, and jest runs in CI mode: the suites that need them fail.\n`,
    );
  }
};
