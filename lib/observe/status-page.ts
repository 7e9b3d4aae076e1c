/**
 * The HTML view of poolStatus(): one self-contained page (inline CSS and
 * script, no external loads) that shows each key's state and counts its
 * cooldown down, and refreshes itself from the JSON view every 2 seconds.
 *
 * Every value written into the HTML is escaped (ids are user configuration);
 * the script builds rows with textContent only. The Content-Security-Policy
 * allows exactly this page's script and style, by hash, and fetches to the
 * same origin.
 */
import { createHash } from 'node:crypto';
import type { KeySnapshot, KeyStateName, Strategy } from '../pool/key-pool.js';

export interface PoolStatusBody {
  /** The pool's clock (epoch ms) when the status was read; the page counts down against it. */
  now: number;
  strategy: Strategy;
  counts: Record<KeyStateName, number>;
  keys: KeySnapshot[];
}

/** Badge background per state; also what the page test looks for in the screenshot. */
export const STATE_COLOURS: Readonly<Record<KeyStateName, string>> = {
  available: '#1a7f37',
  cooling: '#e3a008',
  disabled: '#cf222e',
};

export const REFRESH_MS = 2000;

const STYLE = `
:root { font: 14px/1.4 system-ui, sans-serif; color: #1f2328; background: #fff; }
body { margin: 24px; }
h1 { font-size: 18px; margin: 0 0 4px; }
.summary, #note { color: #59636e; margin: 4px 0 12px; }
#note.stale { color: ${STATE_COLOURS.disabled}; }
table { border-collapse: collapse; min-width: 480px; }
th, td { text-align: left; padding: 6px 12px; border-bottom: 1px solid #d1d9e0; }
th { font-weight: 600; color: #59636e; }
td.id, td.hint, td.group { font-family: ui-monospace, monospace; }
td.remaining, td.models { font-variant-numeric: tabular-nums; }
td.models .model { display: block; font-family: ui-monospace, monospace; }
.reason { margin-left: 6px; color: #59636e; }
.badge { display: inline-block; min-width: 6em; padding: 3px 10px; border-radius: 10px; text-align: center; font-weight: 600; }
.badge.available { background: ${STATE_COLOURS.available}; color: #fff; }
.badge.cooling { background: ${STATE_COLOURS.cooling}; color: #1f2328; }
.badge.disabled { background: ${STATE_COLOURS.disabled}; color: #fff; }
`;

// Plain browser JavaScript. remaining() must give the same text as formatRemaining() below.
const SCRIPT = `
(() => {
  'use strict';
  const root = document.getElementById('pool');
  const tbody = root.querySelector('tbody');
  const counts = document.getElementById('counts');
  const strategy = document.getElementById('strategy');
  const note = document.getElementById('note');
  const STATES = ['available', 'cooling', 'disabled'];
  let offset = Number(root.getAttribute('data-now')) - Date.now();
  const url = new URL(location.href);
  url.searchParams.set('format', 'json');

  const pad = (n) => (n < 10 ? '0' + n : String(n));
  const remaining = (ms) => {
    const s = Math.max(0, Math.ceil(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return h > 0 ? h + 'h ' + pad(m) + 'm ' + pad(sec) + 's' : m > 0 ? m + 'm ' + pad(sec) + 's' : sec + 's';
  };
  const tick = () => {
    const now = Date.now() + offset;
    for (const cell of root.querySelectorAll('[data-until]')) {
      cell.textContent = remaining(Number(cell.getAttribute('data-until')) - now);
    }
  };
  const cell = (tr, className, text) => {
    const td = document.createElement('td');
    td.className = className;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  };
  const render = (data) => {
    offset = data.now - Date.now();
    strategy.textContent = String(data.strategy);
    counts.textContent = STATES.map((s) => (data.counts[s] || 0) + ' ' + s).join(' · ');
    tbody.replaceChildren(...data.keys.map((key) => {
      const state = STATES.includes(key.state) ? key.state : 'unknown';
      const tr = document.createElement('tr');
      tr.setAttribute('data-key-id', String(key.id));
      tr.setAttribute('data-state', state);
      cell(tr, 'id', String(key.id));
      cell(tr, 'hint', key.hint ? '…' + key.hint : '—');
      cell(tr, 'group', typeof key.group === 'string' ? key.group : '—');
      const badge = document.createElement('span');
      badge.className = 'badge ' + state;
      badge.textContent = state;
      const stateCell = cell(tr, 'state', '');
      stateCell.appendChild(badge);
      const why = (text) => {
        const reason = document.createElement('span');
        reason.className = 'reason';
        reason.textContent = text;
        stateCell.appendChild(reason);
      };
      if (state === 'disabled' && key.disabledReason === 'quota') why('out of quota');
      if (state === 'cooling' && key.coolingReason === 'remaining') why('limit used up');
      if (key.probing === true) why('probing');
      const until = state === 'cooling' ? key.cooldownUntil : state === 'disabled' ? key.disabledUntil : undefined;
      const left = cell(tr, 'remaining', state === 'disabled' && until === undefined ? 'until enabled' : '');
      if (typeof until === 'number') {
        left.setAttribute('data-until', String(until));
        const date = new Date(until);
        if (!Number.isNaN(date.getTime())) left.title = date.toISOString(); // past the year 275760 there is no date to show
      }
      const models = cell(tr, 'models', '');
      for (const entry of Array.isArray(key.models) ? key.models : []) {
        const line = document.createElement('span');
        line.className = 'model';
        line.setAttribute('data-model', String(entry.model));
        line.append(String(entry.model) + ' ');
        const time = document.createElement('span');
        time.setAttribute('data-until', String(entry.cooldownUntil));
        line.appendChild(time);
        if (entry.reason === 'remaining') {
          line.setAttribute('data-reason', 'remaining');
          line.append(' (limit used up)');
        }
        models.appendChild(line);
      }
      return tr;
    }));
    tick();
  };
  const refresh = async () => {
    try {
      const res = await fetch(url, { headers: { accept: 'application/json' }, cache: 'no-store', credentials: 'same-origin' });
      if (!res.ok) throw new Error('HTTP ' + res.status);
      render(await res.json());
      note.className = '';
      note.textContent = 'Updated ' + new Date().toLocaleTimeString() + '; refreshes every ${REFRESH_MS / 1000} s.';
    } catch (error) {
      note.className = 'stale';
      note.textContent = 'Refresh failed (' + error.message + '); showing the last state, counting down.';
    } finally {
      setTimeout(refresh, ${REFRESH_MS});
    }
  };
  setInterval(tick, 250);
  tick();
  setTimeout(refresh, ${REFRESH_MS});
})();
`;

const sha256 = (text: string): string => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

/** Allows this page's own script and style and same-origin fetches; nothing else loads. */
export const STATUS_PAGE_CSP = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

/** "42s", "4m 05s", "1h 02m 03s": whole seconds, rounded up. */
export function formatRemaining(ms: number): string {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const pad = (n: number) => String(n).padStart(2, '0');
  if (h > 0) return `${h}h ${pad(m)}m ${pad(sec)}s`;
  if (m > 0) return `${m}m ${pad(sec)}s`;
  return `${sec}s`;
}

/** The deadline as an ISO time for the cell's title; none past the year 275760 (toISOString would throw), so that rendering never fails. */
function titleOf(until: number): string {
  const date = new Date(until);
  return Number.isNaN(date.getTime()) ? '' : ` title="${escapeHtml(date.toISOString())}"`;
}

function renderRow(key: KeySnapshot, now: number): string {
  const state = Object.hasOwn(STATE_COLOURS, key.state) ? key.state : 'unknown';
  const until = state === 'cooling' ? key.cooldownUntil : state === 'disabled' ? key.disabledUntil : undefined;
  let remaining = '<td class="remaining"></td>';
  if (typeof until === 'number' && Number.isFinite(until)) {
    remaining = `<td class="remaining" data-until="${escapeHtml(until)}"${titleOf(until)}>${escapeHtml(formatRemaining(until - now))}</td>`;
  } else if (state === 'disabled') {
    remaining = '<td class="remaining">until enabled</td>';
  }
  const reasons = [
    state === 'disabled' && key.disabledReason === 'quota' ? 'out of quota' : undefined,
    state === 'cooling' && key.coolingReason === 'remaining' ? 'limit used up' : undefined,
    key.probing === true ? 'probing' : undefined,
  ];
  const reason = reasons.map((text) => (text === undefined ? '' : `<span class="reason">${text}</span>`)).join('');
  const models = (key.models ?? [])
    .map((m) => {
      const ahead = m.reason === 'remaining';
      return (
        `<span class="model" data-model="${escapeHtml(m.model)}"${ahead ? ' data-reason="remaining"' : ''}>${escapeHtml(m.model)} ` +
        `<span data-until="${escapeHtml(m.cooldownUntil)}">${escapeHtml(formatRemaining(m.cooldownUntil - now))}</span>${ahead ? ' (limit used up)' : ''}</span>`
      );
    })
    .join('');
  return (
    `<tr data-key-id="${escapeHtml(key.id)}" data-state="${escapeHtml(state)}">` +
    `<td class="id">${escapeHtml(key.id)}</td>` +
    `<td class="hint">${key.hint ? `…${escapeHtml(key.hint)}` : '—'}</td>` +
    `<td class="group">${key.group === undefined ? '—' : escapeHtml(key.group)}</td>` +
    `<td class="state"><span class="badge ${escapeHtml(state)}">${escapeHtml(state)}</span>${reason}</td>` +
    remaining +
    `<td class="models">${models}</td>` +
    '</tr>'
  );
}

export function renderStatusPage(status: PoolStatusBody): string {
  const counts = (['available', 'cooling', 'disabled'] as const).map((s) => `${status.counts[s]} ${s}`).join(' · ');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Key pool</title>
<style>${STYLE}</style>
</head>
<body>
<main id="pool" data-now="${escapeHtml(status.now)}">
<h1>Key pool</h1>
<p class="summary"><span id="counts">${escapeHtml(counts)}</span> · strategy <span id="strategy">${escapeHtml(status.strategy)}</span></p>
<table>
<thead><tr><th>id</th><th>key</th><th>group</th><th>state</th><th>time left</th><th>cooling for models</th></tr></thead>
<tbody>
${status.keys.map((key) => renderRow(key, status.now)).join('\n')}
</tbody>
</table>
<p id="note">Refreshes every ${REFRESH_MS / 1000} s.</p>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;
}
