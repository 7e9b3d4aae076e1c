import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { K0, K1 } from './support/gateway.js';
import { MockUpstream, byKey, ok, status } from './support/mock-upstream.js';

/**
 * The package as a user gets it: built, packed, installed from the tarball
 * into a fresh app (express from the npm cache), and used from CommonJS, ESM
 * and TypeScript. The optional peers (ioredis, prom-client) are not installed.
 */
const root = path.resolve(__dirname, '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
let work: string;
let app: string;
let upstream: MockUpstream;
let tarball: { filename: string; size: number; unpackedSize: number; files: { path: string }[] };

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): string {
  const result = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${result.status}):\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

beforeAll(async () => {
  upstream = await MockUpstream.start();
  work = mkdtempSync(path.join(tmpdir(), 'ekf-package-'));
  run(npm, ['run', 'build'], root);
  [tarball] = JSON.parse(run(npm, ['pack', '--json', '--pack-destination', work], root));
  app = path.join(work, 'app');
  execFileSync('mkdir', ['-p', app]);
  writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true }));
  run(
    npm,
    [
      'install',
      '--prefer-offline',
      '--no-audit',
      '--no-fund',
      path.join(work, tarball.filename),
      'express@5',
      '@types/express@5',
      '@types/node@22',
    ],
    app,
  );
}, 240_000);

afterAll(async () => {
  await upstream.close();
  rmSync(work, { recursive: true, force: true });
});

test('the tarball holds only what a user needs', () => {
  const files = tarball.files.map((f) => f.path).sort();
  const unexpected = files.filter(
    (f) => !/^(dist\/(cjs|esm)\/.+\.(js|d\.ts)|dist\/(cjs|esm)\/package\.json|README\.md|LICENSE|CHANGELOG\.md|package\.json)$/.test(f),
  );
  expect(unexpected).toEqual([]);
  for (const needed of [
    'package.json',
    'README.md',
    'LICENSE',
    'CHANGELOG.md',
    'dist/cjs/index.js',
    'dist/cjs/index.d.ts',
    'dist/esm/index.js',
    'dist/esm/index.d.ts',
  ]) {
    expect(files).toContain(needed);
  }
  // Reported in the closing note; a generous ceiling catches an accidental bundle of node_modules.
  console.log(`tarball ${tarball.filename}: ${tarball.size} bytes packed, ${tarball.unpackedSize} unpacked, ${files.length} files`);
  expect(tarball.size).toBeLessThan(200_000);
});

const consumer = (kind: 'cjs' | 'esm') => `
${kind === 'cjs' ? "const express = require('express');\nconst { keyFailover, KeyPool } = require('express-key-failover');" : "import express from 'express';\nimport { keyFailover, KeyPool } from 'express-key-failover';"}
const app = express();
app.locals.keyPool = new KeyPool(['${K0}', '${K1}']);
const middleware = keyFailover({ target: process.env.UPSTREAM });
app.use(middleware);
const server = app.listen(0, '127.0.0.1', async () => {
  const res = await fetch('http://127.0.0.1:' + server.address().port + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"model":"m","messages":[]}',
  });
  console.log(JSON.stringify({ status: res.status, body: await res.json(), snapshot: app.locals.keyPool.snapshot().map((k) => [k.state, ...(k.models ?? []).map((m) => m.model)].join(' ')) }));
  server.close();
  await middleware.close();
});
`;

test.each(['cjs', 'esm'] as const)('from %s: require / import serve a failover', async (kind) => {
  upstream.reset();
  upstream.behaviour = byKey({ [K0]: status(429) }, ok({ served: kind }));
  const file = path.join(app, kind === 'cjs' ? 'server.cjs' : 'server.mjs');
  writeFileSync(file, consumer(kind));
  // Asynchronously: the mock upstream answers from this process's event loop.
  const { stdout } = await promisify(execFile)(process.execPath, [file], {
    cwd: app,
    env: { ...process.env, UPSTREAM: upstream.url },
    timeout: 30_000,
  });
  const out = JSON.parse(stdout);
  expect(out).toEqual({ status: 200, body: { served: kind }, snapshot: ['available m', 'available'] });
  expect(upstream.keysSeen()).toEqual([K0, K1]);
});

test('the main entry loads without the optional peers; ./redis and ./metrics say what is missing', () => {
  const script = `
    const main = require('express-key-failover');
    const out = { main: Object.keys(main).sort() };
    for (const entry of ['redis', 'metrics']) {
      try { require('express-key-failover/' + entry); out[entry] = 'loaded'; } catch (e) { out[entry] = e.code + ' ' + /Cannot find module '([^']+)'/.exec(e.message)?.[1]; }
    }
    console.log(JSON.stringify(out));`;
  const out = JSON.parse(run(process.execPath, ['-e', script], app));
  expect(out.main).toEqual(expect.arrayContaining(['keyFailover', 'keyPassthrough', 'createFailoverFetch', 'KeyPool', 'openaiCompatible']));
  expect(out.redis).toBe('MODULE_NOT_FOUND ioredis');
  expect(out.metrics).toBe('MODULE_NOT_FOUND prom-client');
});

test.each(['node16', 'bundler'] as const)('a TypeScript consumer type-checks under moduleResolution %s', (resolution) => {
  const dir = path.join(app, `ts-${resolution}`);
  execFileSync('mkdir', ['-p', dir]);
  writeFileSync(
    path.join(dir, 'index.ts'),
    `import express from 'express';
import { keyFailover, KeyPool, createFailoverFetch, type KeySnapshot, type KeyFailoverOptions } from 'express-key-failover';
const options: KeyFailoverOptions = { target: 'https://api.openai.com', failover: { 403: 'disable' }, byok: (req) => req.get('x-key') };
const pool = new KeyPool({ keys: ['sk-a', { id: 'b', key: 'sk-b', weight: 2 }], strategy: 'round-robin' });
pool.on('failover', (e) => console.log(e.id, e.status, e.action));
const app = express();
app.locals['keyPool'] = pool;
app.use(keyFailover(options));
const states: KeySnapshot[] = pool.snapshot();
const fetch: typeof globalThis.fetch = createFailoverFetch(pool);
// @ts-expect-error an unknown failover action is a type error
keyFailover({ failover: { 429: 'retry' } });
export { states, fetch };
`,
  );
  writeFileSync(
    path.join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        target: 'ES2022',
        module: resolution === 'node16' ? 'node16' : 'esnext',
        moduleResolution: resolution,
        types: ['node'],
        esModuleInterop: true,
        lib: ['ES2023', 'DOM'],
      },
      files: ['index.ts'],
    }),
  );
  if (resolution === 'node16') writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
  run(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', dir], dir);
});

test('publint and arethetypeswrong find no problem', () => {
  const publint = run(process.execPath, [path.join(root, 'node_modules/publint/src/cli.js'), '--strict'], root);
  expect(publint).not.toMatch(/Error|Warning/);
  run(process.execPath, [path.join(root, 'node_modules/@arethetypeswrong/cli/dist/index.js'), '--pack', '.', '--profile', 'node16'], root);
  expect(JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).sideEffects).toBe(false);
});
