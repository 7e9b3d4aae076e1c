import type { KeySnapshot } from '../lib/index.js';
import type { UpstreamCall } from './fake-upstream.js';

/** Output helpers. Nothing here ever receives a key value to print: only ids, hints and statuses. */

const colour = Boolean(process.stdout.isTTY) && !process.env['NO_COLOR'];
const paint =
  (code: string) =>
  (text: string): string =>
    colour ? `\x1b[${code}m${text}\x1b[0m` : text;
export const bold = paint('1');
export const dim = paint('2');
export const red = paint('31');
export const green = paint('32');
export const yellow = paint('33');
export const cyan = paint('36');

export const LABEL_WIDTH = 13;
/** "   label        text", and continuation lines aligned under the text. */
export function labelled(label: string, lines: string | string[]): string {
  const [first = '', ...rest] = Array.isArray(lines) ? lines : [lines];
  const pad = ' '.repeat(3 + LABEL_WIDTH);
  return [`   ${dim(label.padEnd(LABEL_WIDTH))}${first}`, ...rest.map((line) => pad + line)].join('\n');
}

export function status(code: number): string {
  const text = String(code);
  return code < 300 ? green(text) : code === 429 ? yellow(text) : red(text);
}

function secondsLeft(until: number, now: number): number {
  return Math.max(0, Math.ceil((until - now) / 1000));
}

/** One line per key: id, hint, state. */
export function snapshotLines(snapshot: readonly KeySnapshot[], now = Date.now()): string[] {
  const idWidth = Math.max(...snapshot.map((k) => k.id.length));
  const hints = snapshot.map((k) => (k.hint ? `…${k.hint}` : '(no hint)'));
  const hintWidth = Math.max(...hints.map((h) => h.length));
  return snapshot.map((k, index) => {
    const hint = hints[index]!;
    const model = k.models?.[0];
    const state =
      k.state === 'available'
        ? model
          ? yellow(`cooling for ${model.model}, ${secondsLeft(model.cooldownUntil, now)}s left`)
          : green('available')
        : k.state === 'disabled'
          ? red(k.disabledReason === 'quota' ? 'out of quota' : 'disabled')
          : yellow(`cooling, ${secondsLeft(k.cooldownUntil ?? now, now)}s left`);
    return `${k.id.padEnd(idWidth)}  ${hint.padEnd(hintWidth)}  ${state}`;
  });
}

/** The same, on one line, for the log of requests made after the script. */
export function snapshotSummary(snapshot: readonly KeySnapshot[], now = Date.now()): string {
  return snapshot
    .map((k) => {
      const model = k.models?.[0];
      if (k.state === 'cooling') return `${k.id} cooling ${secondsLeft(k.cooldownUntil ?? now, now)}s`;
      if (model) return `${k.id} cooling for ${model.model} ${secondsLeft(model.cooldownUntil, now)}s`;
      return `${k.id} ${k.state}`;
    })
    .join(', ');
}

/** How a key is named in output: its pool id, or the hint of a client's own key. */
export type KeyNamer = (value: string | undefined) => string;

export function keyNamer(poolKeys: ReadonlyMap<string, string>): KeyNamer {
  return (value) => {
    if (value === undefined) return 'no key';
    const id = poolKeys.get(value);
    if (id !== undefined) return id;
    return `client's own key ${value.length >= 16 ? `…${value.slice(-4)}` : ''}`.trimEnd();
  };
}

/** "key-0 (429, cooling 30s for gpt-4o-mini) -> key-1 (401, disabled) -> key-2 (200)", read from the upstream's calls and the pool after them. */
export function keysTried(calls: readonly UpstreamCall[], name: KeyNamer, snapshot: readonly KeySnapshot[], now = Date.now()): string {
  if (calls.length === 0) return dim('none (answered by the gateway itself)');
  return calls
    .map((call) => {
      const id = name(call.key);
      const state = snapshot.find((k) => k.id === id);
      let note = '';
      const model = state?.models?.[0];
      if (state?.state === 'cooling' && call.status === 429) note = `, cooling ${secondsLeft(state.cooldownUntil ?? now, now)}s`;
      else if (model && call.status === 429) note = `, cooling ${secondsLeft(model.cooldownUntil, now)}s for ${model.model}`;
      else if (state?.state === 'disabled' && call.status === 401) note = ', disabled';
      else if (call.status === 403) note = ', skipped';
      return `${id} (${status(call.status)}${note})`;
    })
    .join(' -> ');
}

export function excerpt(text: string, max = 90): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 3)}...` : flat;
}
