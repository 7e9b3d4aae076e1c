// Runs once before the reliability suite: starts from an empty reliability/last-run/.
const fs = require('node:fs');
const path = require('node:path');

module.exports = async function globalSetup() {
  const dir = path.join(__dirname, '..', 'last-run');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  globalThis.__reliabilityStarted = Date.now();
};
