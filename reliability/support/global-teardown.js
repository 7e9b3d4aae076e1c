// Runs once after the reliability suite: gathers the figures each file wrote to
// reliability/last-run/<file>.json into reliability/last-run/summary.json and prints a summary.
const fs = require('node:fs');
const path = require('node:path');

module.exports = async function globalTeardown() {
  const dir = path.join(__dirname, '..', 'last-run');
  if (!fs.existsSync(dir)) return;
  const files = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json') && f !== 'summary.json')
    .sort();
  const byFile = Object.fromEntries(files.map((f) => [path.basename(f, '.json'), JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'))]));
  const sum = (key) => Object.values(byFile).reduce((total, figures) => total + (Number(figures[key]) || 0), 0);
  const summary = {
    finishedAt: new Date().toISOString(),
    wallSeconds: globalThis.__reliabilityStarted ? (Date.now() - globalThis.__reliabilityStarted) / 1000 : undefined,
    requests: sum('requests'),
    faultsInjected: sum('faultsInjected'),
    failuresSeen: sum('failuresSeen'),
    secretScan: {
      items: Object.values(byFile).reduce((t, f) => t + (f.secretScan?.items ?? 0), 0),
      bytes: Object.values(byFile).reduce((t, f) => t + (f.secretScan?.bytes ?? 0), 0),
      hits: Object.values(byFile).reduce((t, f) => t + (f.secretScan?.hits ?? 0), 0),
    },
    files: byFile,
  };
  fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  const lines = [
    '',
    'Reliability summary (reliability/last-run/summary.json)',
    `  requests through the gateway: ${summary.requests}`,
    `  faults injected:              ${summary.faultsInjected}`,
    `  failures seen:                ${summary.failuresSeen}`,
    `  secret scan:                  ${summary.secretScan.items} items, ${summary.secretScan.bytes} bytes, ${summary.secretScan.hits} key values found`,
  ];
  for (const [name, figures] of Object.entries(byFile)) {
    lines.push(
      `  ${name}: ${figures.summary ?? `${figures.requests ?? 0} requests, ${figures.faultsInjected ?? 0} faults, ${figures.failuresSeen ?? '?'} failures`}`,
    );
  }
  process.stdout.write(lines.join('\n') + '\n');
};
