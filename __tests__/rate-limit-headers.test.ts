import { cooldownFromHeaders } from '../lib/upstream/rate-limit-headers.js';

const now = Date.parse('2026-03-01T12:00:00Z');

test.each([
  ['delta-seconds', { 'retry-after': '20' }, 20_000],
  ['fractional seconds', { 'retry-after': '1.5' }, 1_500],
  ['zero', { 'retry-after': '0' }, 0],
  ['HTTP-date', { 'retry-after': 'Sun, 01 Mar 2026 12:00:42 GMT' }, 42_000],
  ['HTTP-date in the past', { 'retry-after': 'Sun, 01 Mar 2026 11:59:00 GMT' }, undefined],
  ['retry-after-ms', { 'retry-after-ms': '1234.2' }, 1235],
  ['retry-after-ms wins over Retry-After', { 'retry-after-ms': '500', 'retry-after': '30' }, 500],
  ['garbage retry-after-ms falls back to Retry-After', { 'retry-after-ms': 'soon', 'retry-after': '3' }, 3_000],
  ['garbage', { 'retry-after': 'later, maybe' }, undefined],
  ['negative', { 'retry-after': '-5' }, undefined],
  ['missing', {}, undefined],
  ['repeated header', { 'retry-after': ['7', '9'] }, 7_000],
  ['absurdly large', { 'retry-after': '9'.repeat(400) }, 365 * 24 * 3600 * 1000],
])('%s', (_name, headers, expected) => {
  expect(cooldownFromHeaders(headers, now)).toBe(expected);
});
