/**
 * OpenTelemetry traces of a KeyPool's work, through @opentelemetry/api (an
 * optional peer dependency, loaded only by `express-key-failover/opentelemetry`).
 *
 * `poolTracing(pool)` is a middleware mounted in front of keyFailover /
 * keyPassthrough: it starts one span per client request and makes it active.
 * It also listens to the pool's `attempt`, `failover` and `exhausted`
 * events, which the walk emits synchronously in the request's async context:
 * each attempt becomes a child span of its request's span (started
 * `durationMs` before the event), each failover and exhaustion an event on
 * it. Nothing else in the package knows of tracing.
 *
 * Keys appear by id and hint only; model names (the clients' strings) are
 * cut to 128 characters.
 */
import { context, createContextKey, SpanKind, SpanStatusCode, trace, type Attributes, type Span, type Tracer } from '@opentelemetry/api';
import type { NextFunction, Request, Response } from 'express';
import { performance } from 'node:perf_hooks';
import { isKeyPool } from '../options.js';
import type { KeyPoolEvents } from '../pool/events.js';
import type { KeyPool } from '../pool/key-pool.js';
import type { Provider } from '../providers/provider.js';
import { KeyFailoverError, checkKnownOptions, describeValue } from '../validations.js';

export interface PoolTracingOptions {
  /** The tracer the spans are made with. Default: `trace.getTracer('express-key-failover')` (the global provider's). */
  tracer?: Tracer;
  /** What `gen_ai.provider.name` says: `'openai'` (default), `'anthropic'`, or the provider given to keyFailover. */
  provider?: 'openai' | 'anthropic' | Provider;
}

/** The middleware, plus `stop()` to stop listening to the pool. */
export type PoolTracing = ((req: Request, res: Response, next: NextFunction) => void) & { stop(): void };

/** What the spans of one client request share. */
interface RequestTrace {
  readonly span: Span;
  readonly operation: Operation | undefined;
  attempts: number;
  modelSet: boolean;
  last?: AttemptEvent;
  /** When the request span ended (epochMs()): a relayed stream's attempt event can come a few µs after the client's close. */
  endedAt?: number;
}

/** `inStream`: the failure was found inside a 200 stream (the stream hold's events carry it). */
type AttemptEvent = KeyPoolEvents['attempt'][0] & { inStream?: boolean };
type Operation = { name: string; apiType?: string };

const WHERE = 'poolTracing()';
const MAX_MODEL_LENGTH = 128;
// Semantic-convention names (OpenTelemetry semconv 1.45: GenAI, HTTP, error); `ekf.*` for the rest.
const ATTR = {
  provider: 'gen_ai.provider.name',
  operation: 'gen_ai.operation.name',
  model: 'gen_ai.request.model',
  apiType: 'openai.api.type',
  status: 'http.response.status_code',
  method: 'http.request.method',
  resendCount: 'http.request.resend_count',
  errorType: 'error.type',
  keyId: 'ekf.key.id',
  keyHint: 'ekf.key.hint',
  attempt: 'ekf.attempt',
  attempts: 'ekf.attempts',
  outcome: 'ekf.attempt.outcome',
  cause: 'ekf.cause',
  action: 'ekf.action',
  inStream: 'ekf.in_stream',
  exhausted: 'ekf.exhausted.reason',
  retryAfterMs: 'ekf.retry_after_ms',
} as const;

// The GenAI registry's names for the providers this package knows; any other is its own name.
const PROVIDER_NAMES: Readonly<Record<string, string>> = { azure: 'azure.ai.openai' };

/**
 * One span per client request (active while the request is handled) and one child span per
 * upstream attempt of `pool`. Mount it where keyFailover is mounted, in front of it.
 */
export function poolTracing(pool: KeyPool, options: PoolTracingOptions = {}): PoolTracing {
  if (!isKeyPool(pool)) {
    throw new KeyFailoverError('ERR_EKF_INVALID_OPTION', `${WHERE}: the first argument must be a KeyPool, got ${describeValue(pool)}.`);
  }
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new KeyFailoverError('ERR_EKF_INVALID_OPTION', `${WHERE}: options must be an object, got ${describeValue(options)}.`);
  }
  checkKnownOptions(WHERE, options, ['tracer', 'provider']);
  const tracer = checkTracer(options.tracer) ?? trace.getTracer('express-key-failover');
  const provider = checkProviderName(options.provider ?? 'openai');
  const REQUEST = createContextKey('express-key-failover request trace');

  const onAttempt = (event: AttemptEvent): void => {
    const active = context.active();
    const request = active.getValue(REQUEST) as RequestTrace | undefined;
    // A child span never ends after its parent: an attempt reported after the request ended ends with it.
    const end = Math.min(epochMs(), request?.endedAt ?? Infinity);
    const model = event.model === undefined ? undefined : bounded(event.model);
    const operation = request?.operation;
    const attributes: Attributes = {
      [ATTR.provider]: provider,
      [ATTR.keyId]: event.id,
      [ATTR.keyHint]: event.hint,
      [ATTR.attempt]: event.attempt,
      [ATTR.outcome]: event.outcome,
      [ATTR.inStream]: event.inStream === true,
    };
    if (operation) attributes[ATTR.operation] = operation.name;
    if (operation?.apiType) attributes[ATTR.apiType] = operation.apiType;
    if (model !== undefined) attributes[ATTR.model] = model;
    if (event.attempt > 1) attributes[ATTR.resendCount] = event.attempt - 1;
    if (event.status !== undefined) attributes[ATTR.status] = event.status;
    if (event.cause !== undefined) attributes[ATTR.cause] = event.cause;
    const errorType = attemptError(event);
    if (errorType !== undefined) attributes[ATTR.errorType] = errorType;

    const name = operation ? (model === undefined ? operation.name : `${operation.name} ${model}`) : 'ekf attempt';
    const parent = request ? trace.setSpan(active, request.span) : active;
    const span = tracer.startSpan(name, { kind: SpanKind.CLIENT, startTime: end - event.durationMs, attributes }, parent);
    if (errorType !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: `attempt ${event.outcome}` });
    span.end(end);

    if (request) {
      request.attempts++;
      request.last = event;
      if (model !== undefined && !request.modelSet) {
        request.modelSet = true;
        request.span.setAttribute(ATTR.model, model);
      }
    }
  };

  const onFailover = (event: KeyPoolEvents['failover'][0] & { inStream?: boolean }): void => {
    const request = context.active().getValue(REQUEST) as RequestTrace | undefined;
    const attributes: Attributes = {
      [ATTR.keyId]: event.id,
      [ATTR.keyHint]: event.hint,
      [ATTR.status]: event.status,
      [ATTR.action]: event.action,
    };
    if (event.cause !== undefined) attributes[ATTR.cause] = event.cause;
    if (event.inStream !== undefined) attributes[ATTR.inStream] = event.inStream;
    request?.span.addEvent('ekf.failover', attributes);
  };

  const onExhausted = (event: KeyPoolEvents['exhausted'][0]): void => {
    const request = context.active().getValue(REQUEST) as RequestTrace | undefined;
    if (!request) return;
    const attributes: Attributes = { [ATTR.exhausted]: event.reason };
    if (event.retryAfterMs !== undefined) attributes[ATTR.retryAfterMs] = Math.ceil(event.retryAfterMs);
    request.span.setAttribute(ATTR.exhausted, event.reason);
    request.span.addEvent('ekf.exhausted', attributes);
  };

  pool.on('attempt', onAttempt);
  pool.on('failover', onFailover);
  pool.on('exhausted', onExhausted);

  const middleware = (req: Request, res: Response, next: NextFunction): void => {
    const operation = operationOf(req.method, req.path);
    const attributes: Attributes = { [ATTR.provider]: provider, [ATTR.method]: req.method };
    if (operation) attributes[ATTR.operation] = operation.name;
    if (operation?.apiType) attributes[ATTR.apiType] = operation.apiType;
    const span = tracer.startSpan(
      `ekf ${operation?.name ?? req.method}`,
      { kind: SpanKind.INTERNAL, startTime: epochMs(), attributes },
      context.active(),
    );
    const request: RequestTrace = { span, operation, attempts: 0, modelSet: false };
    res.once('close', () => endRequest(request, res));
    context.with(trace.setSpan(context.active(), span).setValue(REQUEST, request), next);
  };

  return Object.assign(middleware, {
    stop: () => {
      pool.off('attempt', onAttempt);
      pool.off('failover', onFailover);
      pool.off('exhausted', onExhausted);
    },
  });
}

/**
 * Every span time is given in one frame, epoch milliseconds from the monotonic clock. A performance
 * timestamp would be converted by each span with its own offset (taken from Date.now() at its start),
 * which can put a child's end up to a millisecond past its parent's.
 */
function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

function endRequest(request: RequestTrace, res: Response): void {
  const { span, last } = request;
  span.setAttribute(ATTR.attempts, request.attempts);
  if (res.headersSent) span.setAttribute(ATTR.status, res.statusCode);
  if (last?.outcome === 'relayed') {
    span.setAttribute(ATTR.keyId, last.id);
    span.setAttribute(ATTR.keyHint, last.hint);
  }
  if (!res.writableFinished) {
    span.setAttribute(ATTR.errorType, 'client_aborted');
    span.setStatus({ code: SpanStatusCode.ERROR, message: 'the client went away before the answer was complete' });
  } else if (res.statusCode >= 500) {
    span.setAttribute(ATTR.errorType, String(res.statusCode));
    span.setStatus({ code: SpanStatusCode.ERROR });
  }
  request.endedAt = epochMs();
  span.end(request.endedAt);
}

/** What made an attempt fail, for `error.type`: its cause, else its status (4xx, 5xx), else how it failed. */
function attemptError(event: AttemptEvent): string | undefined {
  if (event.outcome === 'unreachable' || event.outcome === 'timeout' || event.outcome === 'aborted') return event.outcome;
  if (event.outcome !== 'relayed' && event.cause !== undefined) return event.cause;
  if (event.status !== undefined && event.status >= 400) return String(event.status);
  return undefined;
}

/** The GenAI operation of a request, by the route it takes (relative to the mount point). */
function operationOf(method: string, path: string): Operation | undefined {
  if (method !== 'POST') return undefined;
  if (path.endsWith('/chat/completions')) return { name: 'chat', apiType: 'chat_completions' };
  if (path.endsWith('/responses')) return { name: 'chat', apiType: 'responses' };
  if (path.endsWith('/messages')) return { name: 'chat' };
  if (path.endsWith('/embeddings')) return { name: 'embeddings' };
  if (path.endsWith('/completions')) return { name: 'text_completion' };
  return undefined;
}

/** A client's string, cut to MAX_MODEL_LENGTH characters (whole code points). */
function bounded(value: string): string {
  if (value.length <= MAX_MODEL_LENGTH) return value;
  return Array.from(value).slice(0, MAX_MODEL_LENGTH).join('');
}

function checkTracer(value: unknown): Tracer | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'object' && value !== null && typeof (value as Tracer).startSpan === 'function') return value as Tracer;
  throw new KeyFailoverError(
    'ERR_EKF_INVALID_OPTION',
    `${WHERE}: option "tracer" must be an OpenTelemetry Tracer (trace.getTracer(name)), got ${describeValue(value)}.`,
  );
}

function checkProviderName(value: unknown): string {
  const name = typeof value === 'string' ? value : typeof value === 'object' && value !== null ? (value as Provider).name : undefined;
  if ((value === 'openai' || value === 'anthropic' || typeof value === 'object') && typeof name === 'string' && name !== '') {
    return Object.hasOwn(PROVIDER_NAMES, name) ? PROVIDER_NAMES[name]! : bounded(name);
  }
  throw new KeyFailoverError(
    'ERR_EKF_INVALID_OPTION',
    `${WHERE}: option "provider" must be 'openai', 'anthropic' or a provider from openaiCompatible({...}), got ${
      typeof value === 'string' ? JSON.stringify(value) : describeValue(value)
    }.`,
  );
}
