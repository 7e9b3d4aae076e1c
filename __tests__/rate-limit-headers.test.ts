import fc from 'fast-check';
import { cooldownFromHeaders, goDuration, type ResponseHeaders } from '../lib/upstream/rate-limit-headers.js';

const now = Date.parse('2026-03-01T12:00:00Z');
const wide = { minMs: 0, maxMs: Number.MAX_SAFE_INTEGER };

describe('each real format, without bounds', () => {
  test.each<[string, ResponseHeaders, number | undefined]>([
    ['Retry-After delta-seconds', { 'retry-after': '20' }, 20_000],
    ['Retry-After fractional seconds', { 'retry-after': '1.5' }, 1_500],
    ['Retry-After zero', { 'retry-after': '0' }, 0],
    ['Retry-After HTTP-date', { 'retry-after': 'Sun, 01 Mar 2026 12:00:42 GMT' }, 42_000],
    ['Retry-After HTTP-date in the past: no information', { 'retry-after': 'Sun, 01 Mar 2026 11:59:00 GMT' }, undefined],
    ['retry-after-ms (OpenAI)', { 'retry-after-ms': '1234.2' }, 1235],
    ['retry-after-ms wins over Retry-After', { 'retry-after-ms': '500', 'retry-after': '30' }, 500],
    ['garbage retry-after-ms falls through to Retry-After', { 'retry-after-ms': 'soon', 'retry-after': '3' }, 3_000],
    ['garbage', { 'retry-after': 'later, maybe' }, undefined],
    ['negative', { 'retry-after': '-5' }, undefined],
    ['missing', {}, undefined],
    ['a repeated header: the first value', { 'retry-after': ['7', '9'] }, 7_000],
    // OpenAI: x-ratelimit-reset-* durations, the exhausted limit's reset.
    [
      'OpenAI tokens exhausted',
      {
        'x-ratelimit-reset-requests': '1s',
        'x-ratelimit-reset-tokens': '6m0s',
        'x-ratelimit-remaining-requests': '59',
        'x-ratelimit-remaining-tokens': '0',
      },
      360_000,
    ],
    [
      'OpenAI requests exhausted',
      {
        'x-ratelimit-reset-requests': '20ms',
        'x-ratelimit-reset-tokens': '1h2m3.5s',
        'x-ratelimit-remaining-requests': '0',
        'x-ratelimit-remaining-tokens': '100',
      },
      20,
    ],
    [
      'OpenAI both exhausted: the longer',
      {
        'x-ratelimit-reset-requests': '2s',
        'x-ratelimit-reset-tokens': '1m30s',
        'x-ratelimit-remaining-requests': '0',
        'x-ratelimit-remaining-tokens': '0',
      },
      90_000,
    ],
    ['OpenAI, remaining unknown: the sooner', { 'x-ratelimit-reset-requests': '8.64s', 'x-ratelimit-reset-tokens': '1h2m3.5s' }, 8_640],
    ['OpenAI, one reset only', { 'x-ratelimit-reset-tokens': '1h2m3.5s' }, 3_723_500],
    [
      'Retry-After wins over OpenAI resets',
      { 'retry-after': '4', 'x-ratelimit-reset-tokens': '6m0s', 'x-ratelimit-remaining-tokens': '0' },
      4_000,
    ],
    ['OpenAI garbage duration', { 'x-ratelimit-reset-tokens': '6 minutes' }, undefined],
    // Anthropic: RFC 3339 reset times.
    [
      'Anthropic output tokens exhausted',
      {
        'anthropic-ratelimit-requests-remaining': '49',
        'anthropic-ratelimit-requests-reset': '2026-03-01T12:00:01Z',
        'anthropic-ratelimit-output-tokens-remaining': '0',
        'anthropic-ratelimit-output-tokens-reset': '2026-03-01T12:00:45Z',
      },
      45_000,
    ],
    [
      'Anthropic, remaining unknown: the sooner',
      {
        'anthropic-ratelimit-tokens-reset': '2026-03-01T12:00:30Z',
        'anthropic-ratelimit-input-tokens-reset': '2026-03-01T12:00:10.250Z',
      },
      10_250,
    ],
    ['Anthropic reset in the past: no information', { 'anthropic-ratelimit-requests-reset': '2026-03-01T11:00:00Z' }, undefined],
    ['Anthropic retry-after wins over resets', { 'retry-after': '12', 'anthropic-ratelimit-tokens-reset': '2026-03-01T12:10:00Z' }, 12_000],
  ])('%s', (_name, headers, expected) => {
    expect(cooldownFromHeaders(headers, now, wide)).toBe(expected);
  });
});

describe('bounds', () => {
  test('default floor 1 s and cap 1 h', () => {
    expect(cooldownFromHeaders({ 'retry-after': '0' }, now)).toBe(1_000);
    expect(cooldownFromHeaders({ 'retry-after-ms': '250' }, now)).toBe(1_000);
    expect(cooldownFromHeaders({ 'retry-after': '86400' }, now)).toBe(3_600_000);
    expect(cooldownFromHeaders({ 'retry-after': '9'.repeat(400) }, now)).toBe(3_600_000);
    expect(cooldownFromHeaders({}, now)).toBeUndefined();
  });

  test('bounds given', () => {
    expect(cooldownFromHeaders({ 'retry-after': '2' }, now, { minMs: 5_000, maxMs: 10_000 })).toBe(5_000);
    expect(cooldownFromHeaders({ 'retry-after': '20' }, now, { minMs: 5_000, maxMs: 10_000 })).toBe(10_000);
  });
});

test.each([
  ['1s', 1000],
  ['6m0s', 360_000],
  ['20ms', 20],
  ['1h2m3.5s', 3_723_500],
  ['500us', 0.5],
  ['0s', 0],
  ['', undefined],
  ['1', undefined],
  ['1x', undefined],
  ['s', undefined],
  ['1s ', undefined],
])('goDuration(%p) = %p', (text, ms) => {
  expect(goDuration(text)).toBe(ms);
});

describe('properties', () => {
  const names = [
    'retry-after',
    'retry-after-ms',
    'x-ratelimit-reset-requests',
    'x-ratelimit-reset-tokens',
    'x-ratelimit-remaining-requests',
    'x-ratelimit-remaining-tokens',
    'anthropic-ratelimit-requests-reset',
    'anthropic-ratelimit-tokens-reset',
    'anthropic-ratelimit-output-tokens-remaining',
    'anthropic-ratelimit-output-tokens-reset',
  ];
  const numberish = fc.oneof(
    fc.nat().map(String),
    fc.double({ noNaN: false }).map(String),
    fc.bigInt({ min: 0n, max: 10n ** 400n }).map(String),
    fc.constantFrom('0', '-1', '1e309', 'Infinity', 'NaN', '٣', '１２', '0x10', ' 5 '),
  );
  const durationish = fc
    .array(
      fc.tuple(
        fc.oneof(fc.nat(), fc.double({ min: 0, max: 1e6, noNaN: true })),
        fc.constantFrom('h', 'm', 's', 'ms', 'us', 'µs', 'ns', 'x', ''),
      ),
      { maxLength: 4 },
    )
    .map((parts) => parts.map(([n, u]) => `${n}${u}`).join(''));
  const dateish = fc
    .date({ min: new Date(-8.64e15), max: new Date(8.64e15), noInvalidDate: true })
    .map((d) => (Math.random() < 0.5 ? d.toUTCString() : d.toISOString()));
  const value = fc.oneof(numberish, durationish, dateish, fc.string(), fc.string({ unit: 'binary' }));
  const headerValue = fc.oneof(value, fc.array(value, { maxLength: 3 }), fc.constant(undefined));
  const headers = fc.dictionary(fc.constantFrom(...names), headerValue) as fc.Arbitrary<ResponseHeaders>;
  const bounds = fc
    .tuple(fc.nat({ max: 10_000_000 }), fc.nat({ max: 10_000_000 }))
    .map(([a, b]) => ({ minMs: Math.min(a, b), maxMs: Math.max(a, b) }));
  const clock = fc.integer({ min: 0, max: 4_102_444_800_000 });

  test('never throws; an integer within [min, max] or undefined', () => {
    fc.assert(
      fc.property(headers, clock, bounds, (h, t, b) => {
        const ms = cooldownFromHeaders(h, t, b);
        if (ms === undefined) return;
        expect(Number.isInteger(ms)).toBe(true);
        expect(ms).toBeGreaterThanOrEqual(b.minMs);
        expect(ms).toBeLessThanOrEqual(b.maxMs);
      }),
      { numRuns: 3000 },
    );
  });

  test('with the default bounds: never NaN, negative, fractional, under 1 s or over 1 h', () => {
    fc.assert(
      fc.property(headers, clock, (h, t) => {
        const ms = cooldownFromHeaders(h, t);
        return ms === undefined || (Number.isInteger(ms) && ms >= 1_000 && ms <= 3_600_000);
      }),
      { numRuns: 3000 },
    );
  });

  test('a valid delta-seconds Retry-After is honoured exactly within the bounds', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000 }), headers, clock, (seconds, other, t) => {
        const ms = cooldownFromHeaders({ ...other, 'retry-after-ms': undefined, 'retry-after': String(seconds) }, t, wide);
        return ms === seconds * 1000;
      }),
    );
  });
});
