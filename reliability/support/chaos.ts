import type { ServerResponse } from 'node:http';
import { KEYS, prng } from './common.js';
import { json, type Behaviour, type Seen } from './upstream.js';

export type Mode = 'ok' | 'slow' | 'limited' | 'revoked';

export interface ChaosOptions {
  seed: number;
  /** Longer than the gateway's timeoutMs: a share of slow answers. */
  beyondTimeoutMs: number;
  /** Called when a revoked key becomes valid again upstream: the operator re-enables it. */
  onRecover: (keyIndex: number) => void;
}

/** The 429 styles the chaos upstream uses, with the cooldown each must produce. */
export const RETRY_STYLES = ['retry-after', 'retry-after-ms', 'http-date', 'x-ratelimit-reset', 'none'] as const;
export type RetryStyle = (typeof RETRY_STYLES)[number];

/**
 * An upstream whose keys flip between healthy, slow, rate-limited (429 with
 * varied delay headers) and revoked (401) on their own schedule, plus storms
 * that put every key in one mode at once. 429 and 401 bodies echo the key
 * value, as a hostile upstream might: the gateway must never let them out.
 */
export class Chaos {
  readonly modes: Mode[] = KEYS.map(() => 'ok');
  private readonly nextFlip: number[] = KEYS.map(() => 0);
  private readonly random: () => number;
  private timer: NodeJS.Timeout | undefined;
  readonly counts = { flips: 0, storms: 0, recoveries: 0, slow: 0, beyondTimeout: 0, ok: 0, limited: 0, revoked: 0 };
  readonly retryStyles: Record<RetryStyle, number> = {
    'retry-after': 0,
    'retry-after-ms': 0,
    'http-date': 0,
    'x-ratelimit-reset': 0,
    none: 0,
  };

  constructor(private readonly options: ChaosOptions) {
    this.random = prng(options.seed);
  }

  start(): void {
    const now = Date.now();
    this.nextFlip.forEach((_, i) => (this.nextFlip[i] = now + this.flipInterval()));
    this.timer = setInterval(() => this.tick(Date.now()), 25);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private flipInterval(): number {
    return 200 + Math.floor(this.random() * 800);
  }

  private pickMode(): Mode {
    const r = this.random();
    return r < 0.6 ? 'ok' : r < 0.8 ? 'slow' : r < 0.92 ? 'limited' : 'revoked';
  }

  private tick(now: number): void {
    this.modes.forEach((mode, i) => {
      if (now < this.nextFlip[i]!) return;
      this.setMode(i, this.pickMode());
      this.nextFlip[i] = now + this.flipInterval();
    });
  }

  private setMode(i: number, mode: Mode): void {
    const was = this.modes[i];
    this.modes[i] = mode;
    this.counts.flips++;
    if (was === 'revoked' && mode !== 'revoked') {
      this.counts.recoveries++;
      this.options.onRecover(i);
    }
  }

  /** Every key in `mode` for `ms`, then back to their own schedule. */
  storm(mode: Mode, ms: number): void {
    this.counts.storms++;
    const until = Date.now() + ms;
    this.modes.forEach((_, i) => {
      this.setMode(i, mode);
      this.nextFlip[i] = until + Math.floor(this.random() * 100);
    });
  }

  readonly behaviour: Behaviour = async (seen, res) => {
    const index = KEYS.indexOf(seen.key as (typeof KEYS)[number]);
    if (index === -1) return json(res, 500, { error: { message: 'chaos upstream: not a pool key' } });
    const stream = (JSON.parse(seen.body.toString()) as { stream?: boolean }).stream === true;
    const mode = this.modes[index]!;
    seen.note = mode;
    this.counts[mode]++;
    switch (mode) {
      case 'limited':
        return this.rateLimited(seen, res);
      case 'revoked':
        return json(res, 401, { error: { message: `Incorrect API key provided: ${seen.key}`, code: 'invalid_api_key' } });
      case 'ok':
        await delay(5 + this.random() * 40);
        return this.answer(seen, res, stream, () => this.random() * 4);
      case 'slow': {
        this.counts.slow++;
        if (this.random() < 0.1) {
          this.counts.beyondTimeout++;
          seen.note = 'beyond-timeout';
          await delay(this.options.beyondTimeoutMs);
        } else {
          await delay(150 + this.random() * 550);
        }
        return this.answer(seen, res, stream, () => 30 + this.random() * 70);
      }
    }
  };

  private rateLimited(seen: Seen, res: ServerResponse): void {
    const style = RETRY_STYLES[Math.floor(this.random() * RETRY_STYLES.length)]!;
    this.retryStyles[style]++;
    seen.retryStyle = style;
    const headers: Record<string, string> = {};
    const now = Date.now();
    switch (style) {
      case 'retry-after': {
        const seconds = 1 + Math.floor(this.random() * 3);
        headers['retry-after'] = String(seconds);
        seen.retryAfterMs = seconds * 1000;
        break;
      }
      case 'retry-after-ms': {
        const ms = [400, 1500, 2500][Math.floor(this.random() * 3)]!;
        headers['retry-after-ms'] = String(ms);
        seen.retryAfterMs = ms;
        break;
      }
      case 'http-date': {
        const date = Math.floor((now + 2000 + Math.floor(this.random() * 2) * 1000) / 1000) * 1000;
        headers['retry-after'] = new Date(date).toUTCString();
        seen.retryAfterMs = date - now;
        seen.retryDate = date;
        break;
      }
      case 'x-ratelimit-reset':
        headers['x-ratelimit-remaining-requests'] = '0';
        headers['x-ratelimit-reset-requests'] = '1s500ms';
        headers['x-ratelimit-remaining-tokens'] = '5000';
        headers['x-ratelimit-reset-tokens'] = '20ms';
        seen.retryAfterMs = 1500;
        break;
      case 'none':
        break;
    }
    json(res, 429, { error: { message: `Rate limit reached for ${seen.key}`, type: 'requests', code: 'rate_limit_exceeded' } }, headers);
  }

  /** A 200: JSON (some 64 KiB, to cross several chunks) or an SSE stream of 6 events. */
  private async answer(seen: Seen, res: ServerResponse, stream: boolean, gap: () => number): Promise<void> {
    if (res.destroyed) return;
    if (stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      for (let n = 0; n < 6; n++) {
        if (res.destroyed) return;
        res.write(`data: {"id":"chatcmpl-${seen.loadId}","n":${n},"delta":"tok${n}"}\n\n`);
        await delay(gap());
      }
      if (!res.destroyed) res.end('data: [DONE]\n\n');
      return;
    }
    const big = this.random() < 0.1;
    json(res, 200, {
      id: `chatcmpl-${seen.loadId}`,
      object: 'chat.completion',
      served_by: seen.keyId,
      choices: [{ message: { role: 'assistant', content: big ? 'x'.repeat(64 * 1024) : 'hello' } }],
    });
  }
}

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
