import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { K0, K1 } from './support/gateway.js';
import { MockUpstream, byKey, ok, status } from './support/mock-upstream.js';

/**
 * The package as a user gets it: built, packed, installed from the tarball
 * into a fresh app (express from the npm cache), and used from CommonJS, ESM
 * and TypeScript. The optional peers (ioredis, prom-client, @opentelemetry/api)
 * are not installed there; a second app has them, for the subpath entries' types.
 */
const root = path.resolve(__dirname, '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const manifest = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as {
  exports: Record<string, string | Record<'import' | 'require', { types: string; default: string }>>;
  typesVersions: Record<string, Record<string, string[]>>;
  sideEffects: unknown;
  peerDependenciesMeta: Record<string, { optional?: boolean }>;
  devDependencies: Record<string, string>;
};
/** The optional peers (ioredis, prom-client, ...) at the versions the package is tested against: its dev dependencies. */
const optionalPeers = Object.keys(manifest.peerDependenciesMeta)
  .filter((name) => manifest.peerDependenciesMeta[name]?.optional)
  .map((name) => `${name}@${manifest.devDependencies[name]}`);
/** The subpath entries ('redis', 'metrics', ...): every key of the exports map but '.' and './package.json'. */
const subpaths = Object.keys(manifest.exports)
  .filter((key) => key !== '.' && key !== './package.json')
  .map((key) => key.slice(2));
/** The import and require conditions of one exports entry. */
function conditions(key: string): Record<'import' | 'require', { types: string; default: string }> {
  const entry = manifest.exports[key];
  if (typeof entry !== 'object') throw new Error(`exports["${key}"] is not an object with import and require`);
  return entry;
}
let work: string;
let app: string;
let appWithPeers: string;
let upstream: MockUpstream;
let tarball: { filename: string; size: number; unpackedSize: number; files: { path: string }[] };

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): string {
  const result = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${result.status}):\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

/** npm install in a new folder, asynchronously: the two apps install side by side. */
async function install(dir: string, args: string[]): Promise<void> {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true }));
  await promisify(execFile)(npm, args, { cwd: dir, timeout: 180_000 }).catch((error: Error & { stdout?: string; stderr?: string }) => {
    throw new Error(`npm ${args.join(' ')} failed in ${dir}:\n${error.stdout}\n${error.stderr}`);
  });
}

beforeAll(async () => {
  upstream = await MockUpstream.start();
  work = mkdtempSync(path.join(tmpdir(), 'ekf-package-'));
  run(npm, ['run', 'build'], root);
  [tarball] = JSON.parse(run(npm, ['pack', '--json', '--pack-destination', work], root));
  app = path.join(work, 'app');
  appWithPeers = path.join(work, 'app-with-peers');
  const common = [
    'install',
    '--prefer-offline',
    '--no-audit',
    '--no-fund',
    path.join(work, tarball.filename),
    'express@5',
    '@types/express@5',
    '@types/node@22',
  ];
  // The OpenTelemetry SDK too, so that the consumers below can read the spans the ./opentelemetry entry makes.
  const sdk = ['@opentelemetry/sdk-trace-base', '@opentelemetry/context-async-hooks'].map(
    (name) => `${name}@${manifest.devDependencies[name]}`,
  );
  await Promise.all([install(app, common), install(appWithPeers, [...common, ...optionalPeers, ...sdk])]);
}, 240_000);

afterAll(async () => {
  await upstream?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the tarball holds only what a user needs', () => {
  const files = tarball.files.map((f) => f.path).sort();
  const unexpected = files.filter(
    (f) => !/^(dist\/(cjs|esm)\/.+\.(js|d\.ts)|dist\/(cjs|esm)\/package\.json|README\.md|LICENSE|CHANGELOG\.md|package\.json)$/.test(f),
  );
  expect(unexpected).toEqual([]);
  // Every file the exports map (and so typesVersions) points to, for every entry.
  const targets = Object.keys(manifest.exports)
    .filter((key) => key !== './package.json')
    .flatMap((key) => Object.values(conditions(key)).flatMap((c) => [c.types, c.default]))
    .map((target) => target.replace(/^\.\//, ''));
  expect(targets).toContain('dist/cjs/index.js');
  for (const needed of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', ...targets]) {
    expect(files).toContain(needed);
  }
  // Reported in the closing note; a generous ceiling catches an accidental bundle of node_modules.
  console.log(`tarball ${tarball.filename}: ${tarball.size} bytes packed, ${tarball.unpackedSize} unpacked, ${files.length} files`);
  expect(tarball.size).toBeLessThan(300_000);
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

test('the main entry loads without the optional peers; ./redis, ./metrics and ./opentelemetry say what is missing', () => {
  const script = `
    const main = require('express-key-failover');
    const out = { main: Object.keys(main).sort() };
    for (const entry of ['redis', 'metrics', 'opentelemetry', 'http-proxy-middleware']) {
      try { require('express-key-failover/' + entry); out[entry] = 'loaded'; } catch (e) { out[entry] = e.code + ' ' + /Cannot find module '([^']+)'/.exec(e.message)?.[1]; }
    }
    console.log(JSON.stringify(out));`;
  const out = JSON.parse(run(process.execPath, ['-e', script], app));
  expect(out.main).toEqual(expect.arrayContaining(['keyFailover', 'keyPassthrough', 'createFailoverFetch', 'KeyPool', 'openaiCompatible']));
  expect(out.redis).toBe('MODULE_NOT_FOUND ioredis');
  expect(out.metrics).toBe('MODULE_NOT_FOUND prom-client');
  expect(out.opentelemetry).toBe('MODULE_NOT_FOUND @opentelemetry/api');
  // The plugin is handed http-proxy-middleware's proxy server: it loads nothing of the package itself.
  expect(out['http-proxy-middleware']).toBe('loaded');
});

/**
 * The ./http-proxy-middleware and ./opentelemetry entries as a gateway uses
 * them, from CommonJS (http-proxy-middleware 4 is ESM-only: Node 22.12+
 * loads it with require()) and from ESM: a proxied GET that fails over, and
 * its spans read from the SDK's in-memory exporter.
 */
const integrationsConsumer = (kind: 'cjs' | 'esm') => `
${
  kind === 'cjs'
    ? `const express = require('express');
const { createProxyMiddleware } = require('http-proxy-middleware');
const { context } = require('@opentelemetry/api');
const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks');
const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { KeyPool } = require('express-key-failover');
const { keyFailoverPlugin } = require('express-key-failover/http-proxy-middleware');
const { poolTracing } = require('express-key-failover/opentelemetry');`
    : `import express from 'express';
import { createProxyMiddleware } from 'http-proxy-middleware';
import { context } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { KeyPool } from 'express-key-failover';
import { keyFailoverPlugin } from 'express-key-failover/http-proxy-middleware';
import { poolTracing } from 'express-key-failover/opentelemetry';`
}
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
const exporter = new InMemorySpanExporter();
const tracer = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }).getTracer('consumer');
const pool = new KeyPool(['${K0}', '${K1}']);
const app = express();
app.use('/openai', poolTracing(pool, { tracer }), createProxyMiddleware({ target: process.env.UPSTREAM, changeOrigin: true, plugins: [keyFailoverPlugin({ pool })] }));
const server = app.listen(0, '127.0.0.1', async () => {
  const res = await fetch('http://127.0.0.1:' + server.address().port + '/openai/v1/models');
  const body = await res.json();
  await new Promise((resolve) => setTimeout(resolve, 50));
  const spans = exporter.getFinishedSpans().map((s) => [s.name, s.attributes['ekf.key.id'] ?? null, s.attributes['ekf.attempt.outcome'] ?? null]);
  console.log(JSON.stringify({ status: res.status, body, states: pool.snapshot().map((k) => (k.models ? k.models.map((m) => m.model).join() : k.state)), spans }));
  server.close();
});
`;

test.each(['cjs', 'esm'] as const)('from %s: the http-proxy-middleware plugin fails over, and the spans say so', async (kind) => {
  upstream.reset();
  upstream.behaviour = byKey({ [K0]: status(429) }, ok({ object: 'list', served: kind }));
  const file = path.join(appWithPeers, kind === 'cjs' ? 'integrations.cjs' : 'integrations.mjs');
  writeFileSync(file, integrationsConsumer(kind));
  const { stdout } = await promisify(execFile)(process.execPath, [file], {
    cwd: appWithPeers,
    env: { ...process.env, UPSTREAM: upstream.url },
    timeout: 30_000,
  });
  expect(JSON.parse(stdout)).toEqual({
    status: 200,
    body: { object: 'list', served: kind },
    states: ['/v1/models', 'available'], // key-0 cools for the route it was limited on
    spans: [
      ['ekf attempt', 'key-0', 'cooldown'],
      ['ekf attempt', 'key-1', 'relayed'],
      ['ekf GET', 'key-1', null],
    ],
  });
  expect(upstream.keysSeen()).toEqual([K0, K1]);
});

type Resolution = 'node10' | 'node16' | 'bundler';

/**
 * A consumer's tsconfig. node10 is what `"module": "commonjs"` without a
 * `moduleResolution` still gets: no exports map, so the subpaths resolve
 * through `typesVersions`.
 */
function tsconfig(resolution: Resolution) {
  const module = { node10: 'commonjs', node16: 'node16', bundler: 'esnext' }[resolution];
  return {
    compilerOptions: {
      strict: true,
      noEmit: true,
      target: 'ES2022',
      module,
      ...(resolution === 'node10' ? {} : { moduleResolution: resolution }),
      types: ['node'],
      esModuleInterop: true,
      lib: ['ES2023', 'DOM'],
    },
    files: ['index.ts'],
  };
}

function typeCheck(dir: string, resolution: Resolution, source: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'index.ts'), source);
  writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify(tsconfig(resolution)));
  if (resolution === 'node16') writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
  run(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', dir], dir);
}

const RESOLUTIONS = ['node10', 'node16', 'bundler'] as const;

test.each(RESOLUTIONS)(
  'a TypeScript consumer of the main entry type-checks under moduleResolution %s, without the optional peers',
  (resolution) => {
    typeCheck(
      path.join(app, `ts-${resolution}`),
      resolution,
      `import express from 'express';
import { keyFailover, KeyPool, createFailoverFetch, openaiCompatible, type KeySnapshot, type KeyFailoverOptions } from 'express-key-failover';
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
app.use('/azure', keyFailover({ target: 'https://r.openai.azure.com', provider: openaiCompatible({ preset: 'azure', routes: ['/openai/deployments/:deployment/embeddings'] }) }));
// @ts-expect-error the presets are named
openaiCompatible({ preset: 'bedrock' });
export { states, fetch };
`,
    );
  },
);

/**
 * What a consumer writes with each subpath entry; each uses the entry's types
 * against its peer's own (an @ts-expect-error proves they are not `any`). A new
 * entry in the exports map needs its line here.
 */
const SUBPATH_USAGE: Record<string, string> = {
  redis: `import { Redis } from 'ioredis';
import { RedisStateStore, type RedisStateStoreOptions } from 'express-key-failover/redis';
const options: RedisStateStoreOptions = { url: 'redis://127.0.0.1:6379', prefix: 'ekf:' };
export const stores = [new RedisStateStore(options), new RedisStateStore({ client: new Redis({ lazyConnect: true }) })];
// @ts-expect-error url is a string
new RedisStateStore({ url: 6379 });
`,
  metrics: `import { Registry } from 'prom-client';
import { poolMetrics, type PoolMetrics } from 'express-key-failover/metrics';
export const metrics: PoolMetrics = poolMetrics(new KeyPool(['sk-a']), { register: new Registry(), prefix: 'gateway_' });
// @ts-expect-error the first argument is a KeyPool
poolMetrics({});
`,
  opentelemetry: `import { trace } from '@opentelemetry/api';
import { poolTracing, type PoolTracing, type PoolTracingOptions } from 'express-key-failover/opentelemetry';
const tracingOptions: PoolTracingOptions = { tracer: trace.getTracer('gateway'), provider: 'anthropic' };
export const tracing: PoolTracing = poolTracing(new KeyPool(['sk-a']), tracingOptions);
// @ts-expect-error the tracer is an OpenTelemetry Tracer
poolTracing(new KeyPool(['sk-a']), { tracer: 'gateway' });
`,
  'http-proxy-middleware': `import { createProxyMiddleware } from 'http-proxy-middleware';
import { keyFailoverPlugin, type KeyFailoverPluginOptions } from 'express-key-failover/http-proxy-middleware';
const pluginOptions: KeyFailoverPluginOptions = { pool: new KeyPool(['sk-a']), provider: 'anthropic', deny: ['/v1/organizations'] };
export const proxy = createProxyMiddleware({ target: 'https://api.anthropic.com', changeOrigin: true, plugins: [keyFailoverPlugin(pluginOptions)] });
// @ts-expect-error failover actions are typed
keyFailoverPlugin({ failover: { 429: 'retry' } });
`,
};

test('every subpath entry has a TypeScript consumer below', () => {
  expect(Object.keys(SUBPATH_USAGE).sort()).toEqual([...subpaths].sort());
});

test.each(RESOLUTIONS)('a TypeScript consumer of the main entry and every subpath type-checks under moduleResolution %s', (resolution) => {
  const source = [`import { KeyPool } from 'express-key-failover';`, ...subpaths.map((entry) => SUBPATH_USAGE[entry] ?? '')].join('\n');
  typeCheck(path.join(appWithPeers, `ts-${resolution}`), resolution, source);
});

test('typesVersions maps each subpath to the declarations of its exports entry (TypeScript node10 ignores the exports map)', () => {
  const mapped = manifest.typesVersions['*'] ?? {};
  expect(Object.keys(manifest.typesVersions)).toEqual(['*']);
  expect(Object.keys(mapped).sort()).toEqual([...subpaths].sort());
  for (const entry of subpaths) expect({ entry, types: mapped[entry] }).toEqual({ entry, types: [conditions(`./${entry}`).require.types] });
});

test('publint and arethetypeswrong (every resolution mode: node10, node16 from CJS and ESM, bundler) find no problem', () => {
  const publint = run(process.execPath, [path.join(root, 'node_modules/publint/src/cli.js'), '--strict'], root);
  expect(publint).not.toMatch(/Error|Warning/);
  // The default profile: every resolution mode, node10 included.
  const attw = run(
    process.execPath,
    [path.join(root, 'node_modules/@arethetypeswrong/cli/dist/index.js'), '--pack', '.', '--format', 'json'],
    root,
  );
  type Resolutions = Record<string, { resolution?: { fileName: string } }>;
  const report = JSON.parse(attw) as {
    problems: object;
    analysis: { problems: unknown[]; entrypoints: Record<string, { resolutions: Resolutions }> };
  };
  expect(report.analysis.problems).toEqual([]);
  expect(report.problems).toEqual({});
  // Each entry's types, as attw resolved them in each mode: CommonJS declarations for node10 and require, ESM for import and bundlers.
  const resolved = Object.fromEntries(
    Object.entries(report.analysis.entrypoints).map(([entry, { resolutions }]) => [
      entry,
      Object.fromEntries(
        Object.entries(resolutions).map(([mode, r]) => [mode, r.resolution?.fileName.replace('/node_modules/express-key-failover/', './')]),
      ),
    ]),
  );
  const expected = Object.fromEntries(
    Object.keys(manifest.exports).map((entry) => {
      if (entry === './package.json') return [entry, { node10: entry, 'node16-cjs': entry, 'node16-esm': entry, bundler: entry }];
      const { import: esm, require: cjs } = conditions(entry);
      return [entry, { node10: cjs.types, 'node16-cjs': cjs.types, 'node16-esm': esm.types, bundler: esm.types }];
    }),
  );
  expect(resolved).toEqual(expected);
  expect(manifest.sideEffects).toBe(false);
});
