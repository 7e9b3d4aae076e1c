import express, { type Express } from 'express';
import http, { type IncomingHttpHeaders } from 'node:http';
import { KeyFailoverError, keyPassthrough, KeyPool, type KeyFailoverMiddleware, type KeyPassthroughOptions } from '../lib/index.js';
import { FakeClock, K0, KEYS, listen, useMockUpstream } from './support/gateway.js';
import { json } from './support/mock-upstream.js';

/**
 * What keyPassthrough refuses before any key is used: methods the provider
 * APIs do not have, and paths that would leave the API (or reach its admin
 * part). Each refusal is the gateway's own provider-shaped answer; the
 * upstream never sees the request.
 */
const upstream = useMockUpstream();
const opened: KeyFailoverMiddleware[] = [];
afterAll(() => Promise.all(opened.map((m) => m.close())));

function app(options: KeyPassthroughOptions = {}): { app: Express; pool: KeyPool } {
  const a = express();
  const pool = new KeyPool({ keys: [...KEYS], now: new FakeClock().now });
  const passthrough = keyPassthrough({ target: upstream.url, pool, logger: false, ...options });
  opened.push(passthrough);
  a.use(passthrough);
  return { app: a, pool };
}

interface Raw {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A raw request line over a real socket: no client-side normalisation of the method or the path. */
async function raw(a: Express, method: string, path: string, headers: Record<string, string> = {}): Promise<Raw> {
  const server = await listen(a);
  try {
    const port = Number(new URL(server.url).port);
    return await new Promise<Raw>((resolve, reject) => {
      http
        .request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
        })
        .on('error', reject)
        .end();
    });
  } finally {
    await server.close();
  }
}

describe('methods', () => {
  // Apache answers TRACE by echoing the request it received: the pool key would come back to the client.
  const echoTrace = (): void => {
    upstream.behaviour = (req, res) => {
      if (req.method !== 'TRACE') return json(res, 200, { ok: true });
      res.writeHead(200, { 'content-type': 'message/http' });
      res.end(
        `TRACE ${req.url} HTTP/1.1\r\n${Object.entries(req.headers)
          .map(([n, v]) => `${n}: ${String(v)}`)
          .join('\r\n')}\r\n\r\n`,
      );
    };
  };

  test.each(['TRACE', 'PROPFIND', 'PURGE', 'MKCOL', 'LOCK', 'COPY', 'MOVE', 'SEARCH', 'REPORT'])(
    '%s: 405 with Allow, OpenAI-shaped, the upstream never sees it',
    async (method) => {
      echoTrace();
      const res = await raw(app().app, method, '/v1/models');
      expect(res.status).toBe(405);
      expect(res.headers.allow).toBe('GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS');
      expect(JSON.parse(res.body)).toEqual({
        error: {
          message: 'The gateway does not forward this HTTP method; the Allow header lists the ones it does.',
          type: 'invalid_request_error',
          param: null,
          code: 'method_not_allowed',
        },
      });
      for (const key of KEYS) expect(res.body + JSON.stringify(res.headers)).not.toContain(key);
      expect(upstream.seen).toHaveLength(0);
    },
  );

  test('the Anthropic shape for the anthropic provider', async () => {
    const res = await raw(app({ provider: 'anthropic' }).app, 'TRACE', '/v1/models');
    expect([res.status, res.headers.allow]).toEqual([405, 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS']);
    expect(JSON.parse(res.body)).toEqual({
      type: 'error',
      error: {
        type: 'invalid_request_error',
        message: 'The gateway does not forward this HTTP method; the Allow header lists the ones it does.',
      },
    });
    expect(upstream.seen).toHaveLength(0);
  });

  test('the methods the provider APIs use are forwarded with a pool key, in that order', async () => {
    const { app: a } = app({ allow: '/' }); // the account's stored objects allowed
    const statuses: number[] = [];
    for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
      statuses.push((await raw(a, method, '/v1/files/file-abc')).status);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 200]);
    expect(upstream.seen.map((r) => [r.method, r.url, r.key])).toEqual(
      ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'].map((m) => [m, '/v1/files/file-abc', K0]),
    );
  });
});

describe('paths', () => {
  const invalidPath = {
    error: {
      message:
        'The request path contains dot segments ("." or ".."), a backslash or an encoded slash, or does not stay under the API base path; the gateway does not forward it.',
      type: 'invalid_request_error',
      param: null,
      code: 'invalid_path',
    },
  };

  test('the premise: WHATWG URL parsing, as an upstream does it, turns backslashes into slashes and resolves them', () => {
    expect(new URL('/v1/..\\..\\admin', 'http://upstream').pathname).toBe('/admin');
    expect(new URL('/base/v1/..\\..\\..\\admin', 'http://upstream').pathname).toBe('/admin');
    expect(new URL('/v1/%2E./admin', 'http://upstream').pathname).toBe('/admin');
  });

  test.each([
    '/v1/..\\..\\admin',
    '/v1\\..\\admin',
    '/v1/files\\..\\..\\admin',
    '/v1/files/file-abc\\content',
    '/v1/files%2f..%2f..%2fadmin',
    '/v1/files%2F..%2F..%2Fadmin',
    '/v1/files%5c..%5c..%5cadmin',
    '/v1/files%5C..%5C..%5Cadmin',
    '/v1/files/..%2fadmin',
    '/v1/%2E./admin',
    '/v1/.%2e/admin',
    '/v1/../admin',
    '/v1/./models',
    '//127.0.0.1:9/v1/models',
    '//v1/models',
    '/v1/files/%zz',
    '/v1/files/%E0%A4%A',
  ])('%s: 400 invalid_path, the upstream never sees it', async (path) => {
    const res = await raw(app().app, 'GET', path);
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toEqual(invalidPath);
    expect(upstream.seen).toHaveLength(0);
  });

  test('under a target with a base path, every refused form stays refused, and a plain path keeps the base', async () => {
    const a = express();
    const passthrough = keyPassthrough({ target: `${upstream.url}/base`, pool: new KeyPool([...KEYS]), logger: false });
    opened.push(passthrough);
    a.use('/openai', passthrough);
    const statuses: [string, number][] = [];
    for (const path of ['/openai/v1/..\\..\\..\\admin', '/openai/..\\admin', '/openai/v1%5c..%5c..%5cadmin', '/openai/v1/models']) {
      statuses.push([path, (await raw(a, 'GET', path)).status]);
    }
    expect(statuses).toEqual([
      ['/openai/v1/..\\..\\..\\admin', 400],
      ['/openai/..\\admin', 400],
      ['/openai/v1%5c..%5c..%5cadmin', 400],
      ['/openai/v1/models', 200],
    ]);
    expect(upstream.seen.map((r) => [r.url, r.key])).toEqual([['/base/v1/models', K0]]);
  });

  test('ordinary paths, percent-encoded characters and queries pass unchanged', async () => {
    const { app: a } = app({ allow: '/' }); // the account's stored objects allowed: the paths are the point here
    for (const path of [
      '/v1/files/file-abc/content',
      '/v1/vector_stores/vs_1/files?limit=10&after=file%2F1',
      '/v1/files/a%20b',
      '/v1/models/ft:gpt-4o:org:x',
    ]) {
      expect((await raw(a, 'GET', path)).status).toBe(200);
    }
    expect(upstream.seen.map((r) => r.url)).toEqual([
      '/v1/files/file-abc/content',
      '/v1/vector_stores/vs_1/files?limit=10&after=file%2F1',
      '/v1/files/a%20b',
      '/v1/models/ft:gpt-4o:org:x',
    ]);
  });
});

describe('allow and deny', () => {
  const notAllowed = {
    error: {
      message: 'The gateway does not forward requests to this path.',
      type: 'invalid_request_error',
      param: null,
      code: 'path_not_allowed',
    },
  };
  async function statuses(a: Express, requests: [string, string][]): Promise<[string, string, number][]> {
    const out: [string, string, number][] = [];
    for (const [method, path] of requests) out.push([method, path, (await raw(a, method, path)).status]);
    return out;
  }

  test("by default OpenAI's admin API is refused (403, OpenAI-shaped), in every spelling; the rest of the API is forwarded", async () => {
    const { app: a } = app();
    const admin: [string, string][] = [
      ['GET', '/v1/organization/users'],
      ['POST', '/v1/organization/admin_api_keys'],
      ['GET', '/v1/organization/usage/completions?start_time=0'],
      ['DELETE', '/v1/organization/projects/proj_1/api_keys/key_1'],
      ['GET', '/v1/organization'],
      ['GET', '/v1/organization/'],
      ['GET', '/V1/Organization/users'],
      ['GET', '/v1//organization/users'],
      ['GET', '/v1/%6Frganization/users'],
      ['GET', '/v1/organizations/users'], // Anthropic's spelling, refused for every provider
    ];
    expect(await statuses(a, admin)).toEqual(admin.map(([m, p]) => [m, p, 403]));
    const res = await raw(a, 'GET', '/v1/organization/users');
    expect(JSON.parse(res.body)).toEqual(notAllowed);
    expect(upstream.seen).toHaveLength(0);

    const api: [string, string][] = [
      ['GET', '/v1/models'],
      ['GET', '/v1/organization_settings'], // not under the prefix: a prefix is whole segments
      ['POST', '/v1/files'],
    ];
    expect(await statuses(a, api)).toEqual(api.map(([m, p]) => [m, p, 200]));
    expect(upstream.seen.map((r) => [r.method, r.url, r.key])).toEqual(api.map(([m, p]) => [m, p, K0]));
  });

  test("by default Anthropic's admin API is refused with Anthropic's permission_error", async () => {
    const { app: a } = app({ provider: 'anthropic' });
    for (const path of [
      '/v1/organizations/users',
      '/v1/organizations/api_keys',
      '/v1/organizations/usage_report/messages',
      '/v1/organizations/me',
    ]) {
      const res = await raw(a, 'GET', path);
      expect([path, res.status]).toEqual([path, 403]);
      expect(JSON.parse(res.body)).toEqual({
        type: 'error',
        error: { type: 'permission_error', message: 'The gateway does not forward requests to this path.' },
      });
    }
    expect((await raw(a, 'GET', '/v1/models')).status).toBe(200);
    expect(upstream.seen.map((r) => [r.url, r.key])).toEqual([['/v1/models', K0]]);
  });

  test('allow: only the listed prefixes (whole segments, any case) are forwarded; the admin API stays refused', async () => {
    const { app: a } = app({ allow: ['/v1/models', '/v1/files/'] });
    const requests: [string, string][] = [
      ['GET', '/v1/models'],
      ['GET', '/v1/models/gpt-4o'],
      ['GET', '/v1/MODELS'],
      ['POST', '/v1/files'],
      ['GET', '/v1/files/file-abc/content'],
      ['GET', '/v1/filesystem'],
      ['POST', '/v1/batches'],
      ['GET', '/v1/organization/users'],
      ['GET', '/'],
    ];
    expect(await statuses(a, requests)).toEqual([
      ['GET', '/v1/models', 200],
      ['GET', '/v1/models/gpt-4o', 200],
      ['GET', '/v1/MODELS', 200],
      ['POST', '/v1/files', 200],
      ['GET', '/v1/files/file-abc/content', 200],
      ['GET', '/v1/filesystem', 403],
      ['POST', '/v1/batches', 403],
      ['GET', '/v1/organization/users', 403],
      ['GET', '/', 403],
    ]);
    expect(upstream.seen.map((r) => r.url)).toEqual([
      '/v1/models',
      '/v1/models/gpt-4o',
      '/v1/MODELS',
      '/v1/files',
      '/v1/files/file-abc/content',
    ]);
  });

  test('deny with a function sees the decoded path and the request; a deny given replaces the default', async () => {
    const seenPaths: string[] = [];
    const { app: a } = app({
      allow: '/', // and the stored objects of the account too
      deny: [
        '/v1/fine_tuning',
        (path, req) => {
          seenPaths.push(path);
          return req.method === 'DELETE' && path.startsWith('/v1/files/');
        },
      ],
    });
    expect(
      await statuses(a, [
        ['DELETE', '/v1/files/file-abc'],
        ['GET', '/v1/files/file-%61bc'],
        ['POST', '/v1/fine_tuning/jobs'],
        ['GET', '/v1/organization/users'],
      ]),
    ).toEqual([
      ['DELETE', '/v1/files/file-abc', 403],
      ['GET', '/v1/files/file-%61bc', 200],
      ['POST', '/v1/fine_tuning/jobs', 403],
      ['GET', '/v1/organization/users', 200],
    ]);
    expect(seenPaths).toEqual(['/v1/files/file-abc', '/v1/files/file-abc', '/v1/organization/users']);
    expect(upstream.seen.map((r) => [r.method, r.url])).toEqual([
      ['GET', '/v1/files/file-%61bc'],
      ['GET', '/v1/organization/users'],
    ]);
  });

  test('allow with a function; a request with a client key (byok) is held to the same rules', async () => {
    const { app: a } = app({ allow: (path) => path === '/v1/models', byok: (req) => req.get('x-client-key') });
    const denied = await raw(a, 'GET', '/v1/files', { 'x-client-key': 'sk-client-0000000000000000aa' });
    const allowed = await raw(a, 'GET', '/v1/models', { 'x-client-key': 'sk-client-0000000000000000aa' });
    expect([denied.status, allowed.status]).toEqual([403, 200]);
    expect(upstream.keysSeen()).toEqual(['sk-client-0000000000000000aa']);
  });

  test('a rule function that returns something else than a boolean (an async function) fails the request closed', async () => {
    const { app: a } = app({ deny: (async () => false) as never });
    const errors: string[] = [];
    a.use(((error, _req, _res, next) => {
      errors.push(String(error));
      next(error); // Express's own handler answers 500
    }) as express.ErrorRequestHandler);
    expect((await raw(a, 'GET', '/v1/models')).status).toBe(500);
    expect(errors).toEqual([expect.stringContaining('a function in option "deny" returned object; it must return true or false')]);
    expect(upstream.seen).toHaveLength(0);
  });

  test.each([
    [{ allow: [] }, /option "allow" is an empty array, which would refuse every path/],
    [
      { allow: 'v1/models' },
      /option "allow" must be a path prefix such as '\/v1\/files', a function \(path, req\) => boolean, or an array of them; got a string\./,
    ],
    [{ deny: [K0] }, /option "deny" .*; entry 0 is a string\./], // a key in the wrong place is not echoed
    [{ allow: ['/v1/models', '/v1/files?purpose=batch'] }, /option "allow" .*; entry 1 is "\/v1\/files\?purpose=batch"/],
    [{ deny: [42] }, /option "deny" .*; entry 0 is 42/],
    [{ deny: '/v1/../admin' }, /option "deny" .*got "\/v1\/..\/admin"/],
    [{ deny: '/v1/%6Frganization' }, /option "deny" .*got "\/v1\/%6Frganization"/],
    [{ deny: '\\v1' }, /option "deny"/],
    [{ deny: null }, /option "deny" .*got null/],
  ])('keyPassthrough(%p) throws naming the option', (options, message) => {
    let error: unknown;
    try {
      keyPassthrough(options as never);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(KeyFailoverError);
    expect((error as KeyFailoverError).code).toBe('ERR_EKF_INVALID_OPTION');
    expect((error as Error).message).toMatch(/^keyPassthrough\(\): /);
    expect((error as Error).message).toMatch(message);
  });
});
