import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { prng } from './common.js';

/**
 * An upstream that enforces OpenAI-like limits, the way OpenAI describes them:
 * per organization (every key of it shares one limit) and per model, on a
 * rolling window that replenishes continuously (a bucket of `requests` that
 * refills `requests` per `windowMs`, so that `x-ratelimit-reset-requests` is
 * the time until it is full again, as in OpenAI's "1 of 60 used: reset 1s").
 * Rejected requests count against the limit ("unsuccessful requests
 * contribute to your per-minute limit"), down to one window of debt. Every
 * answer carries the real headers: `x-ratelimit-{limit,remaining,reset}-
 * {requests,tokens}`, `openai-organization`, `x-request-id`; 429s carry
 * OpenAI's body (`rate_limit_exceeded`, "Rate limit reached for <model> in
 * organization <org> on requests per min (RPM): ...") and no Retry-After.
 */

const DEBT_WINDOWS = Number(process.env['SOAK_DEBT_WINDOWS'] ?? 1);

export interface ModelLimit {
  /** Requests per window, and the bucket's size. */
  requests: number;
  /** Tokens per window (each request takes `tokensPerRequest`). */
  tokens: number;
}

export interface LimitedUpstreamOptions {
  /** Which organization each key value belongs to. */
  organizationOf: (key: string) => string | undefined;
  /** The limit of every organization, per model. */
  limits: Readonly<Record<string, ModelLimit>>;
  windowMs: number;
  tokensPerRequest: number;
  /** Time to answer a request that is let in (ms), drawn uniformly. */
  latencyMs: readonly [number, number];
  seed: number;
}

interface Bucket {
  requests: number;
  tokens: number;
  at: number;
}

export interface LimitedCounts {
  requests: number;
  ok: number;
  rejected: number;
  /** Requests let in, per organization and model. */
  served: Record<string, number>;
}

export class LimitedUpstream {
  private readonly server: http.Server;
  private buckets = new Map<string, Bucket>();
  private readonly random: () => number;
  private ids = 0;
  counts: LimitedCounts = { requests: 0, ok: 0, rejected: 0, served: {} };

  constructor(private readonly options: LimitedUpstreamOptions) {
    this.random = prng(options.seed);
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.keepAliveTimeout = 30_000;
  }

  listen(): Promise<string> {
    return new Promise((resolve) =>
      this.server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(this.server.address() as AddressInfo).port}`)),
    );
  }

  /** Every bucket full again, the counts at zero: a fresh run. */
  reset(): void {
    this.buckets = new Map();
    this.resetCounts();
  }

  /** The counts at zero, the buckets as they are (the end of a warm-up). */
  resetCounts(): void {
    this.counts = { requests: 0, ok: 0, rejected: 0, served: {} };
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const key = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
      const org = key === undefined ? undefined : this.options.organizationOf(key);
      let model = '';
      try {
        model = String((JSON.parse(Buffer.concat(chunks).toString()) as { model?: unknown }).model ?? '');
      } catch {
        // not JSON: no model
      }
      const limit = this.options.limits[model];
      if (org === undefined || limit === undefined)
        return json(res, 401, { error: { message: 'unknown key or model', code: 'invalid_api_key' } }, {});
      this.counts.requests++;
      const { admitted, headers, nextSlotMs } = this.take(org, model, limit);
      if (!admitted) {
        this.counts.rejected++;
        const wait = headers['x-ratelimit-reset-requests']!;
        const body = {
          error: {
            message: `Rate limit reached for ${model} in organization ${org} on requests per min (RPM): Limit ${limit.requests}, Used ${limit.requests}, Requested 1. Please try again in ${wait}. Visit https://platform.openai.com/account/rate-limits to learn more.`,
            type: 'requests',
            param: null,
            code: 'rate_limit_exceeded',
          },
        };
        // SOAK_RETRY_AFTER=1: the 429 also says when one request would be let in (Retry-After, whole seconds).
        if (process.env['SOAK_RETRY_AFTER'] === '1') headers['retry-after'] = String(Math.max(1, Math.ceil(nextSlotMs / 1000)));
        setTimeout(() => json(res, 429, body, headers), 5 + this.random() * 10);
        return;
      }
      this.counts.ok++;
      const served = `${org} ${model}`;
      this.counts.served[served] = (this.counts.served[served] ?? 0) + 1;
      const [low, high] = this.options.latencyMs;
      setTimeout(
        () =>
          json(
            res,
            200,
            {
              id: `chatcmpl-${++this.ids}`,
              object: 'chat.completion',
              model,
              choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
              usage: {
                prompt_tokens: this.options.tokensPerRequest - 20,
                completion_tokens: 20,
                total_tokens: this.options.tokensPerRequest,
              },
            },
            headers,
          ),
        low + this.random() * (high - low),
      );
    });
  }

  /** One request against (org, model): let in when a request is left; taken from the bucket either way. */
  private take(org: string, model: string, limit: ModelLimit): { admitted: boolean; headers: Record<string, string>; nextSlotMs: number } {
    const now = Date.now();
    const { windowMs, tokensPerRequest } = this.options;
    const name = `${org}\u0000${model}`;
    let bucket = this.buckets.get(name);
    if (bucket === undefined) this.buckets.set(name, (bucket = { requests: limit.requests, tokens: limit.tokens, at: now }));
    const elapsed = now - bucket.at;
    bucket.requests = Math.min(limit.requests, bucket.requests + (elapsed * limit.requests) / windowMs);
    bucket.tokens = Math.min(limit.tokens, bucket.tokens + (elapsed * limit.tokens) / windowMs);
    bucket.at = now;
    const admitted = bucket.requests >= 1 && bucket.tokens >= tokensPerRequest;
    // A rejected request counts against the limit too, down to one window of debt.
    bucket.requests = Math.max(-DEBT_WINDOWS * limit.requests, bucket.requests - 1);
    if (admitted) bucket.tokens -= tokensPerRequest;
    const untilFull = (left: number, max: number) => goDuration(((max - left) * windowMs) / max);
    return {
      admitted,
      nextSlotMs: bucket.requests >= 1 ? 0 : ((1 - bucket.requests) * windowMs) / limit.requests,
      headers: {
        'openai-organization': org,
        'openai-processing-ms': '120',
        'openai-version': '2020-10-01',
        'x-request-id': `req_${now.toString(16)}${(this.ids + 1).toString(16).padStart(8, '0')}`,
        'x-ratelimit-limit-requests': String(limit.requests),
        'x-ratelimit-limit-tokens': String(limit.tokens),
        'x-ratelimit-remaining-requests': String(Math.max(0, Math.floor(bucket.requests))),
        'x-ratelimit-remaining-tokens': String(Math.max(0, Math.floor(bucket.tokens))),
        'x-ratelimit-reset-requests': untilFull(bucket.requests, limit.requests),
        'x-ratelimit-reset-tokens': untilFull(bucket.tokens, limit.tokens),
      },
    };
  }
}

/** A duration as OpenAI writes it (Go's): `20ms`, `1.088s`, `6m0s`. */
export function goDuration(ms: number): string {
  const whole = Math.max(0, Math.round(ms));
  if (whole < 1000) return `${whole}ms`;
  if (whole < 60_000) return `${(whole / 1000).toFixed(3).replace(/\.?0+$/, '')}s`;
  return `${Math.floor(whole / 60_000)}m${((whole % 60_000) / 1000).toFixed(3).replace(/\.?0+$/, '')}s`;
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string>): void {
  if (res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}
