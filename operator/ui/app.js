// The wasmatic console: plain DOM over the node's HTTP API, no framework,
// no build step. Text from the node (outputs, errors, names) only ever goes
// in as text nodes, never as HTML.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'wasmatic-token';

// ---- DOM helpers --------------------------------------------------------

/** An element with attributes (`on…` become listeners) and children. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'class') node.className = value;
    else if (value === true) node.setAttribute(key, '');
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(node, ...children) {
  node.replaceChildren();
  for (const child of children.flat()) {
    if (child !== undefined && child !== null && child !== false) node.append(child);
  }
  return node;
}

let uniqueId = 0;
const nextId = (prefix) => `${prefix}-${++uniqueId}`;

/** A labelled input inside a `.field`. */
function field(label, input) {
  if (!input.id) input.id = nextId('f');
  const wrap = el('div', { class: input.type === 'checkbox' ? 'field inline' : 'field' },
    el('label', { for: input.id }, label), input);
  return wrap;
}

const when = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : '—');
const size = (n) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);
const show = (v) => (typeof v === 'string' ? v : JSON.stringify(v, null, 2));

// ---- talking to the node ------------------------------------------------

const UNAUTHORIZED = 'This action needs the node\'s token: enter the token the node was started with ' +
  '(WASMATIC_TOKEN) in the Token field at the top, then try again.';

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

function notice(text, kind = 'error') {
  const box = $('notice');
  if (!text) { box.hidden = true; box.textContent = ''; return; }
  box.textContent = text;
  box.className = kind === 'info' ? 'notice info' : 'notice';
  box.hidden = false;
}

/** Raised for any answer that is not 2xx, with the node's message. */
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/**
 * One request. `body` is sent as is (bytes, text) or as JSON for objects.
 * Answers the parsed JSON (or text) and the duration; throws ApiError.
 */
async function api(method, path, body) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  let payload = body;
  if (body !== undefined && !(body instanceof ArrayBuffer) && !(body instanceof Uint8Array) && typeof body !== 'string') {
    payload = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  } else if (body instanceof ArrayBuffer || body instanceof Uint8Array) {
    headers['Content-Type'] = 'application/wasm';
  }
  const started = performance.now();
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload });
  } catch (e) {
    throw new ApiError(0, `the node did not answer: ${e.message}`);
  }
  const text = await response.text();
  const ms = Math.round(performance.now() - started);
  let data = text;
  if ((response.headers.get('content-type') || '').includes('json') && text) {
    try { data = JSON.parse(text); } catch { /* keep the text */ }
  }
  if (response.status === 401) {
    notice(UNAUTHORIZED);
    throw new ApiError(401, UNAUTHORIZED);
  }
  if (!response.ok) {
    const message = data && typeof data === 'object' && data.error ? data.error : (text || response.statusText);
    throw new ApiError(response.status, message);
  }
  return { data, ms, status: response.status };
}

/** Runs `action`, showing its error (if any) in `out`. */
async function guarded(out, action) {
  try {
    return await action();
  } catch (e) {
    if (out) fill(out, el('p', { class: 'bad', role: 'alert' }, e.status ? `${e.status}: ${e.message}` : e.message));
    if (!(e instanceof ApiError)) console.error(e);
    return undefined;
  }
}

// ---- pages --------------------------------------------------------------

const pages = ['run', 'handlers', 'schedules', 'workflows'];
const onShow = {};
let poll = null;

function stopPolling() {
  if (poll) { clearInterval(poll); poll = null; }
}

/** Refreshes `refresh` every two seconds while its panel is open. */
function startPolling(refresh) {
  stopPolling();
  poll = setInterval(() => { refresh().catch(() => {}); }, 2000);
}

function showPage() {
  const page = pages.includes(location.hash.slice(1)) ? location.hash.slice(1) : 'run';
  stopPolling();
  for (const name of pages) {
    $(`page-${name}`).hidden = name !== page;
    const link = document.querySelector(`nav a[data-page="${name}"]`);
    if (name === page) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }
  if (onShow[page]) onShow[page]();
}

// ---- run history (shared by handlers and schedules) ---------------------

/** A bar per run, oldest left: height the duration, colour ok or failed. */
function runChart(runs) {
  const ns = 'http://www.w3.org/2000/svg';
  const recent = runs.slice(0, 40).reverse();
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', 'chart');
  svg.setAttribute('viewBox', '0 0 400 90');
  svg.setAttribute('role', 'img');
  const failed = recent.filter((r) => !r.ok).length;
  const max = Math.max(1, ...recent.map((r) => r.duration_ms));
  svg.setAttribute('aria-label', `${recent.length} recent runs, ${failed} failed; the longest took ${max} ms`);
  const width = 400 / Math.max(recent.length, 10);
  recent.forEach((run, i) => {
    const h = Math.max(3, Math.round((run.duration_ms / max) * 80));
    const bar = document.createElementNS(ns, 'rect');
    bar.setAttribute('x', String(i * width + 1));
    bar.setAttribute('y', String(88 - h));
    bar.setAttribute('width', String(Math.max(1, width - 2)));
    bar.setAttribute('height', String(h));
    bar.setAttribute('fill', run.ok ? '#1f7a3a' : '#b3261e');
    bar.setAttribute('class', run.ok ? 'bar ok' : 'bar failed');
    const title = document.createElementNS(ns, 'title');
    title.textContent = `run ${run.id}: ${run.ok ? 'ok' : 'failed'}, ${run.duration_ms} ms`;
    bar.append(title);
    svg.append(bar);
  });
  const axis = document.createElementNS(ns, 'line');
  for (const [k, v] of Object.entries({ x1: 0, y1: 88.5, x2: 400, y2: 88.5, stroke: '#aab1bd' })) axis.setAttribute(k, String(v));
  svg.append(axis);
  return el('div', {}, svg, el('div', { class: 'legend' },
    `Last ${recent.length} runs, oldest left: bar height is the duration (longest ${max} ms); green ok, red failed (${failed}).`));
}

/** What a run shows: outcome, output or error, stdout, stderr, audit. */
function runView(run) {
  const outcome = run.ok ? el('span', { class: 'ok' }, 'ok') : el('span', { class: 'bad' }, 'failed');
  const extra = [];
  if (run.stdout) extra.push(el('div', {}, el('strong', {}, 'stdout'), el('pre', {}, run.stdout)));
  if (run.stderr) extra.push(el('div', {}, el('strong', {}, 'stderr'), el('pre', {}, run.stderr)));
  if (run.audit && run.audit.length) {
    extra.push(el('div', {}, el('strong', {}, 'audit'),
      el('ul', {}, run.audit.map((a) => el('li', {}, `${a.level}: ${a.message}`)))));
  }
  return el('div', { class: 'run', 'data-run': run.id },
    el('div', {}, `#${run.id} `, outcome, ` ${when(run.started_at)}, ${run.duration_ms} ms`,
      run.function ? ` — ${run.function}` : '', run.job_id ? ' (scheduled)' : ''),
    run.ok ? el('pre', { class: 'output' }, run.output ?? '') : el('pre', { class: 'bad' }, run.error ?? ''),
    extra.length ? el('details', {}, el('summary', {}, 'stdout, stderr, audit'), extra) : null);
}

function runsView(runs) {
  if (!runs.length) return el('p', { class: 'hint' }, 'No runs yet.');
  return el('div', { class: 'runs' }, runChart(runs), runs.map(runView));
}

// ---- Run a file ---------------------------------------------------------

/** `name(a: u32, b: string) -> t` or `name(i32, i32) -> (i32)`: its params. */
function parseParams(signature) {
  const open = signature.indexOf('(');
  let depth = 0; let close = -1;
  for (let i = open; i < signature.length; i++) {
    const c = signature[i];
    if (c === '(' || c === '<' || c === '{') depth++;
    if (c === ')' || c === '>' || c === '}') depth--;
    if (depth === 0) { close = i; break; }
  }
  const inner = signature.slice(open + 1, close).trim();
  if (!inner) return [];
  const parts = []; let start = 0; depth = 0;
  for (let i = 0; i < inner.length; i++) {
    const c = inner[i];
    if (c === '(' || c === '<' || c === '{') depth++;
    if (c === ')' || c === '>' || c === '}') depth--;
    if (c === ',' && depth === 0) { parts.push(inner.slice(start, i).trim()); start = i + 1; }
  }
  parts.push(inner.slice(start).trim());
  return parts.map((p, i) => {
    const colon = p.indexOf(':');
    return colon > 0 && !p.slice(0, colon).includes('<')
      ? { name: p.slice(0, colon).trim(), type: p.slice(colon + 1).trim() }
      : { name: `arg${i + 1}`, type: p };
  });
}

const NUMBER = /^(i32|i64|u8|u16|u32|u64|s8|s16|s32|s64|f32|f64|float32|float64)$/;

/** An input for a value of WIT or core type `type`, and how to read it. */
function typedInput(type, label) {
  if (NUMBER.test(type)) {
    const input = el('input', { type: 'number', step: /^f/.test(type) ? 'any' : '1', required: true, 'data-type': type });
    return { node: field(`${label} (${type})`, input), read: () => Number(input.value) };
  }
  if (type === 'bool') {
    const input = el('input', { type: 'checkbox', 'data-type': type });
    return { node: field(`${label} (bool)`, input), read: () => input.checked };
  }
  if (type === 'string' || type === 'char') {
    const input = el('input', { type: 'text', 'data-type': type });
    return { node: field(`${label} (${type})`, input), read: () => input.value };
  }
  const input = el('textarea', { rows: 2, class: 'code', 'data-type': type, placeholder: 'JSON' });
  return {
    node: field(`${label} (${type}, as JSON)`, input),
    read: () => {
      try { return JSON.parse(input.value || 'null'); } catch (e) { throw new Error(`${label}: not JSON: ${e.message}`); }
    },
  };
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function base64(bytes) {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/** The result of a run on the Run page. */
function resultView({ ok, value, error, ms, run, stderr, note }) {
  return el('div', { class: 'outcome' },
    ok ? el('p', {}, el('span', { class: 'ok' }, 'Result: '), el('span', { class: 'value' }, value))
      : el('p', { class: 'bad', role: 'alert' }, `Error: ${error}`),
    el('p', { class: 'hint' }, `Duration: ${ms} ms${note ? ` ${note}` : ''}`),
    stderr ? el('div', {}, el('strong', {}, 'stderr'), el('pre', {}, stderr)) : null,
    run ? runView(run) : null);
}

async function lastRun(name) {
  const { data } = await api('GET', `/handlers/${encodeURIComponent(name)}/runs?limit=1`);
  return data[0];
}

/** Registers `bytes` as `name` unless it is already registered with them. */
async function ensureRegistered(name, bytes, digest) {
  try {
    const { data } = await api('GET', `/handlers/${encodeURIComponent(name)}`);
    if (data.digest === digest) return;
  } catch (e) {
    if (e.status !== 404) throw e;
  }
  await api('POST', `/register?name=${encodeURIComponent(name)}`, bytes);
}

async function sha256(bytes) {
  return hex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)));
}

function moduleForms(bytes, inspection) {
  return inspection.exports.map((exp) => {
    const params = parseParams(exp.signature).map((p, i) => typedInput(p.type, `${exp.name} parameter ${i + 1}`));
    const out = el('div', { class: 'result', 'aria-live': 'polite' });
    const form = el('form', {
      'aria-label': `Run ${exp.name}`,
      onsubmit: (ev) => {
        ev.preventDefault();
        guarded(out, async () => {
          const body = { wasm_hex: hex(bytes), function_name: exp.name, params: params.map((p) => p.read()) };
          const { data, ms } = await api('POST', '/', body);
          const results = data.results;
          fill(out, resultView({ ok: true, value: show(results.length === 1 ? results[0] : results), ms, note: '(round trip)' }));
        });
      },
    }, params.map((p) => p.node), el('button', { type: 'submit' }, 'Run'));
    return el('div', { class: 'export', 'data-export': exp.name },
      el('div', { class: 'sig' }, exp.signature), form, out);
  });
}

function jobForm(bytes) {
  const input = el('textarea', { rows: 3, class: 'code' }, '{}');
  const timeout = el('input', { type: 'number', min: 1, max: 30000, value: 5000 });
  const out = el('div', { class: 'result', 'aria-live': 'polite' });
  const form = el('form', {
    'aria-label': 'Run the job',
    onsubmit: (ev) => {
      ev.preventDefault();
      guarded(out, async () => {
        let parsed;
        try { parsed = JSON.parse(input.value || 'null'); } catch (e) { throw new Error(`the input is not JSON: ${e.message}`); }
        const { data } = await api('POST', '/wasm/run', {
          jobId: `console-${Date.now()}`, wasmB64: base64(bytes), timeoutMs: Number(timeout.value), input: parsed,
        });
        fill(out, resultView({ ok: data.ok, value: show(data.result), error: data.error, ms: data.durationMs, stderr: data.stderr }));
      });
    },
  }, field('Input (JSON, on stdin)', input), field('Time limit (ms)', timeout), el('button', { type: 'submit' }, 'Run'));
  return el('div', { class: 'export' }, form, out);
}

function componentForms(bytes, inspection, digest, fileName) {
  const guess = fileName.replace(/\.wasm$/i, '').toLowerCase().replace(/[^a-z0-9_-]/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 64) || 'component';
  const name = el('input', { value: guess, required: true, pattern: '[a-z0-9][a-z0-9_\\-]{0,63}' });
  const intro = el('div', { class: 'field' },
    field('Register as (name)', name),
    el('p', { class: 'hint' }, 'A component runs once registered: Run registers it under this name first (again only if the file changed).'));
  const forms = [];
  if (inspection.kind === 'handler') {
    const input = el('textarea', { rows: 3 });
    const out = el('div', { class: 'result', 'aria-live': 'polite' });
    forms.push(el('div', { class: 'export', 'data-export': 'handler' },
      el('div', { class: 'sig' }, 'handler(input: string) -> string'),
      el('form', {
        'aria-label': 'Run the handler',
        onsubmit: (ev) => {
          ev.preventDefault();
          guarded(out, async () => {
            await ensureRegistered(name.value, bytes, digest);
            const { data, ms } = await api('POST', `/run/${encodeURIComponent(name.value)}`, input.value);
            const run = await lastRun(name.value).catch(() => undefined);
            fill(out, resultView({ ok: true, value: data, ms: run ? run.duration_ms : ms, run }));
          });
        },
      }, field('Input', input), el('button', { type: 'submit' }, 'Run')), out));
  }
  for (const exp of inspection.exports) {
    if (inspection.kind === 'handler' && exp.name === 'handler') continue;
    const params = parseParams(exp.signature).map((p) => typedInput(p.type, `${exp.name} ${p.name}`));
    const out = el('div', { class: 'result', 'aria-live': 'polite' });
    forms.push(el('div', { class: 'export', 'data-export': exp.name },
      el('div', { class: 'sig' }, exp.signature),
      el('form', {
        'aria-label': `Call ${exp.name}`,
        onsubmit: (ev) => {
          ev.preventDefault();
          guarded(out, async () => {
            const args = params.map((p) => p.read());
            await ensureRegistered(name.value, bytes, digest);
            const { data, ms } = await api('POST', `/call/${encodeURIComponent(name.value)}/${encodeURIComponent(exp.name)}`, args);
            const run = await lastRun(name.value).catch(() => undefined);
            fill(out, resultView({ ok: true, value: show(data.result), ms: run ? run.duration_ms : ms, run }));
          });
        },
      }, params.map((p) => p.node), el('button', { type: 'submit' }, 'Run')), out));
  }
  return [intro, ...forms];
}

const KIND_TEXT = {
  module: 'a core module: each export runs with POST / (its parameters typed from its signature)',
  job: 'a WASI command job (core module): it runs with POST /wasm/run, its input on stdin',
  command: 'a WASI command component: it runs with POST /wasm/run, its input on stdin',
  handler: 'a handler component (wasmatic:handler/handler): register it, then run it with an input',
  component: 'a component of its own world: register it, then call its exports',
};

async function inspectFile(file) {
  const what = $('run-what');
  const forms = $('run-forms');
  fill(forms);
  fill(what, el('p', { class: 'hint' }, `Inspecting ${file.name}…`));
  const bytes = new Uint8Array(await file.arrayBuffer());
  await guarded(what, async () => {
    const { data } = await api('POST', '/inspect', bytes);
    fill(what, el('div', { class: 'card' },
      el('p', {}, el('strong', {}, file.name), ` (${size(bytes.length)}) is `, el('span', { class: 'kind', id: 'run-kind' }, data.kind), ': ', KIND_TEXT[data.kind] || ''),
      data.imports.length ? el('details', {}, el('summary', {}, `Imports (${data.imports.length})`), el('ul', {}, data.imports.map((i) => el('li', { class: 'sig' }, i)))) : null,
      el('p', {}, `Exports (${data.exports.length}):`),
      el('ul', {}, data.exports.map((e) => el('li', { class: 'sig' }, e.signature)))));
    let content;
    if (data.kind === 'module') content = moduleForms(bytes, data);
    else if (data.kind === 'job' || data.kind === 'command') content = [jobForm(bytes)];
    else content = componentForms(bytes, data, await sha256(bytes), file.name);
    fill(forms, el('div', { class: 'card' }, el('h3', {}, 'Run'), content));
  });
}

// ---- Handlers & components ----------------------------------------------

let openHandler = null;

async function loadHandlers() {
  const list = $('handlers-list');
  const { data } = await api('GET', '/handlers');
  fill($('handler-names'), data.filter((h) => h.kind === 'handler').map((h) => el('option', { value: h.name })));
  fill(list, data.length ? data.map((h) => el('tr', { 'data-name': h.name },
    el('td', {}, h.name), el('td', {}, h.kind), el('td', {}, size(h.size)),
    el('td', { class: 'actions' },
      el('button', { type: 'button', class: 'small secondary', onclick: () => openDetail(h.name) , 'aria-label': `Open ${h.name}` }, 'Open'),
      el('button', { type: 'button', class: 'small danger', 'aria-label': `Delete ${h.name}`, onclick: () => removeHandler(h.name) }, 'Delete'))))
    : el('tr', {}, el('td', { colspan: 4, class: 'hint' }, 'Nothing registered yet.')));
  return data;
}

async function removeHandler(name) {
  if (!confirm(`Delete ${name}, its schedules and its runs?`)) return;
  await guarded($('register-result'), async () => {
    await api('DELETE', `/handlers/${encodeURIComponent(name)}`);
    if (openHandler === name) { openHandler = null; $('handler-detail').hidden = true; stopPolling(); }
    await loadHandlers();
  });
}

async function openDetail(name) {
  openHandler = name;
  const box = $('handler-detail');
  box.hidden = false;
  const { data: h } = await api('GET', `/handlers/${encodeURIComponent(name)}`);
  const out = el('div', { class: 'result', 'aria-live': 'polite' });
  const history = el('div', { id: 'handler-runs' });
  const actions = [];
  if (h.kind === 'handler') {
    const input = el('textarea', { rows: 2, id: 'detail-input' });
    actions.push(el('form', {
      'aria-label': `Run ${name}`,
      onsubmit: (ev) => {
        ev.preventDefault();
        guarded(out, async () => {
          const { data, ms } = await api('POST', `/run/${encodeURIComponent(name)}`, input.value);
          fill(out, el('p', {}, el('span', { class: 'ok' }, 'Output: '), el('span', { class: 'value' }, data), ` (${ms} ms round trip)`));
          await refresh();
        });
      },
    }, field('Input', input), el('button', { type: 'submit' }, 'Run')));
  }
  const callable = h.exports.filter((e) => !(h.kind === 'handler' && e.name === 'handler'));
  if (callable.length) {
    const select = el('select', {}, callable.map((e) => el('option', { value: e.name }, e.signature)));
    const args = el('textarea', { rows: 2, class: 'code', placeholder: '["argument", 1]' }, '[]');
    actions.push(el('form', {
      'aria-label': `Call an export of ${name}`,
      onsubmit: (ev) => {
        ev.preventDefault();
        guarded(out, async () => {
          let parsed;
          try { parsed = JSON.parse(args.value); } catch (e) { throw new Error(`the arguments are not JSON: ${e.message}`); }
          const { data, ms } = await api('POST', `/call/${encodeURIComponent(name)}/${encodeURIComponent(select.value)}`, parsed);
          fill(out, el('p', {}, el('span', { class: 'ok' }, 'Result: '), el('span', { class: 'value' }, show(data.result)), ` (${ms} ms round trip)`));
          await refresh();
        });
      },
    }, field('Export', select), field('Arguments (a JSON array)', args), el('button', { type: 'submit' }, 'Call')));
  }
  const refresh = async () => {
    if (openHandler !== name) return;
    const { data } = await api('GET', `/handlers/${encodeURIComponent(name)}/runs?limit=20`);
    fill(history, runsView(data));
  };
  fill(box,
    el('h3', {}, name, el('button', { type: 'button', class: 'small secondary', onclick: () => { openHandler = null; box.hidden = true; stopPolling(); } }, 'Close')),
    el('p', { class: 'hint' }, `${h.kind}, ${size(h.size)}, sha256 ${h.digest.slice(0, 16)}…, registered ${when(h.loaded_at)}, reuse ${h.reuse}`,
      h.config_keys.length ? `, configuration: ${h.config_keys.join(', ')}` : '',
      h.allow_outbound ? `, may call: ${h.allow_outbound.join(', ') || 'nothing'}` : ''),
    el('details', {}, el('summary', {}, `Exports (${h.exports.length})`), el('ul', {}, h.exports.map((e) => el('li', { class: 'sig' }, e.signature)))),
    actions, out,
    el('h3', {}, 'Run history ', el('span', { class: 'legend' }, '(refreshes every 2 s while open)')), history);
  await guarded(history, refresh);
  startPolling(refresh);
  box.scrollIntoView({ block: 'nearest' });
}

async function registerSubmit(ev) {
  ev.preventDefault();
  const out = $('register-result');
  await guarded(out, async () => {
    const file = $('reg-file').files[0];
    if (!file) throw new Error('choose a component file');
    const name = $('reg-name').value.trim();
    const query = new URLSearchParams({ name });
    for (const line of $('reg-config').value.split('\n').map((l) => l.trim()).filter(Boolean)) query.append('env', line);
    if ($('reg-allow').value.trim()) query.set('allow', $('reg-allow').value.trim());
    if ($('reg-reuse').value) query.set('reuse', $('reg-reuse').value);
    const { data } = await api('POST', `/register?${query}`, new Uint8Array(await file.arrayBuffer()));
    fill(out, el('p', { class: 'ok' }, `Registered ${data.name} (${data.kind}, ${data.exports.length} exports).`));
    notice('');
    await loadHandlers();
    await openDetail(data.name);
  });
}

// ---- Schedules & triggers -----------------------------------------------

const MONTHS = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'];
const DAYS = ['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'];

/** The set of values a cron field allows, within [lo, hi]. */
function cronField(text, lo, hi, names) {
  const value = (v) => {
    const upper = v.toUpperCase();
    if (names && names.includes(upper)) return names.indexOf(upper) + (names === MONTHS ? 1 : 0);
    if (!/^\d+$/.test(v)) throw new Error(`\`${v}\` is not a number`);
    return Number(v);
  };
  const allowed = new Set();
  for (const part of text.split(',')) {
    const [range, stepText] = part.split('/');
    const step = stepText === undefined ? 1 : Number(stepText);
    if (!Number.isInteger(step) || step < 1) throw new Error(`bad step in \`${part}\``);
    let from; let to;
    if (range === '*' || range === '?') { from = lo; to = hi; } else if (range.includes('-')) {
      [from, to] = range.split('-').map(value);
    } else { from = value(range); to = stepText === undefined ? from : hi; }
    if (from < lo || to > hi || from > to) throw new Error(`\`${part}\` is out of range ${lo}-${hi}`);
    for (let v = from; v <= to; v += step) allowed.add(v);
  }
  return allowed;
}

/** The next `count` fire times (ms, UTC) of a 5- or 6-field cron line. */
function nextFires(line, count, from = Date.now()) {
  const fields = line.trim().split(/\s+/);
  if (fields.length !== 5 && fields.length !== 6) throw new Error(`${fields.length} fields; a cron line has 5, or 6 with seconds first`);
  if (fields.length === 5) fields.unshift('0');
  const [sec, min, hour, dom, mon, dow] = fields;
  const s = cronField(sec, 0, 59); const m = cronField(min, 0, 59); const h = cronField(hour, 0, 23);
  const d = cronField(dom, 1, 31); const mo = cronField(mon, 1, 12, MONTHS);
  const w = cronField(dow, 0, 7, DAYS); if (w.has(7)) w.add(0);
  const domAny = dom === '*' || dom === '?'; const dowAny = dow === '*' || dow === '?';
  const dayOk = (t) => {
    const byDom = d.has(t.getUTCDate()); const byDow = w.has(t.getUTCDay());
    if (domAny && dowAny) return true;
    if (domAny) return byDow;
    if (dowAny) return byDom;
    return byDom || byDow;
  };
  const found = [];
  const t = new Date(Math.floor(from / 1000) * 1000 + 1000);
  for (let guard = 0; found.length < count && guard < 200000; guard++) {
    if (!mo.has(t.getUTCMonth() + 1)) { t.setUTCMonth(t.getUTCMonth() + 1, 1); t.setUTCHours(0, 0, 0, 0); continue; }
    if (!dayOk(t)) { t.setUTCDate(t.getUTCDate() + 1); t.setUTCHours(0, 0, 0, 0); continue; }
    if (!h.has(t.getUTCHours())) { t.setUTCHours(t.getUTCHours() + 1, 0, 0, 0); continue; }
    if (!m.has(t.getUTCMinutes())) { t.setUTCMinutes(t.getUTCMinutes() + 1, 0, 0); continue; }
    if (!s.has(t.getUTCSeconds())) { t.setUTCSeconds(t.getUTCSeconds() + 1, 0); continue; }
    found.push(t.getTime());
    t.setUTCSeconds(t.getUTCSeconds() + 1, 0);
  }
  if (!found.length) throw new Error('it never fires');
  return found;
}

function previewCron() {
  const out = $('sched-next');
  const line = $('sched-cron').value;
  if (!line.trim()) { fill(out); return; }
  try {
    const fires = nextFires(line, 3);
    fill(out, 'Next: ', el('span', { id: 'sched-next-times' }, fires.map(when).join(', ')));
  } catch (e) {
    fill(out, el('span', { class: 'bad' }, `Not a cron line the node takes: ${e.message}`));
  }
}

let openRuns = null;

async function showRuns(title, path) {
  const box = $('sched-runs');
  box.hidden = false;
  openRuns = path;
  const history = el('div', { id: 'sched-history' });
  fill(box, el('h3', {}, title, el('button', { type: 'button', class: 'small secondary', onclick: () => { openRuns = null; box.hidden = true; stopPolling(); } }, 'Close')),
    el('p', { class: 'legend' }, 'Refreshes every 2 s while open.'), history);
  const refresh = async () => {
    if (openRuns !== path) return;
    const { data } = await api('GET', path);
    fill(history, runsView(data));
  };
  await guarded(history, refresh);
  startPolling(refresh);
}

async function loadSchedules() {
  const { data } = await api('GET', '/sched');
  fill($('sched-list'), data.length ? data.map((s) => el('tr', { 'data-id': s.id },
    el('td', {}, s.name), el('td', {}, el('code', {}, s.cron)), el('td', {}, when(s.next)),
    el('td', { class: 'actions' },
      el('button', { type: 'button', class: 'small secondary', 'aria-label': `Runs of schedule ${s.cron} of ${s.name}`, onclick: () => showRuns(`Runs of ${s.name} at ${s.cron}`, `/sched/${encodeURIComponent(s.id)}/runs?limit=20`) }, 'Runs'),
      el('button', { type: 'button', class: 'small danger', 'aria-label': `Delete schedule ${s.cron} of ${s.name}`, onclick: () => guarded($('sched-result'), async () => { await api('DELETE', `/sched/${encodeURIComponent(s.id)}`); await loadSchedules(); }) }, 'Delete'))))
    : el('tr', {}, el('td', { colspan: 4, class: 'hint' }, 'No schedules.')));
  const { data: triggers } = await api('GET', '/triggers');
  fill($('trigger-list'), triggers.length ? triggers.map((t) => el('tr', { 'data-id': t.id },
    el('td', {}, t.name), el('td', {}, String(t.chain_id)), el('td', {}, String(t.next_block)),
    el('td', { class: 'actions' },
      el('button', { type: 'button', class: 'small secondary', onclick: () => showRuns(`Runs of trigger ${t.id}`, `/triggers/${encodeURIComponent(t.id)}/runs?limit=20`) }, 'Runs'),
      el('button', { type: 'button', class: 'small danger', onclick: () => guarded($('trigger-result'), async () => { await api('DELETE', `/triggers/${encodeURIComponent(t.id)}`); await loadSchedules(); }) }, 'Delete'))))
    : el('tr', {}, el('td', { colspan: 4, class: 'hint' }, 'No chain triggers.')));
}

// ---- Workflows ----------------------------------------------------------

const EXAMPLE_WORKFLOW = {
  name: 'greet',
  steps: [
    { id: 'say', type: 'run', handler: 'echo', input: 'hello {{ trigger.who | default("world") }}' },
  ],
};

/** The step list beside the editor; `error` is shown beside its step. */
function renderSteps(error) {
  const list = $('wf-steps');
  let steps;
  try {
    steps = JSON.parse($('wf-json').value).steps;
  } catch (e) {
    fill(list, el('li', { class: 'bad' }, `Not JSON yet: ${e.message}`));
    return;
  }
  if (!Array.isArray(steps)) { fill(list, el('li', { class: 'hint' }, 'No `steps` array.')); return; }
  const named = error && /^step `([^`]*)`/.exec(error);
  let placed = false;
  fill(list, steps.map((step) => {
    const id = step && typeof step === 'object' ? step.id : undefined;
    const mine = named && named[1] === id;
    if (mine) placed = true;
    const what = step && typeof step === 'object'
      ? [step.type, step.handler || step.component || step.url || step.method || step.wasmHash || ''].filter(Boolean).join(' ')
      : JSON.stringify(step);
    const errorId = nextId('step-error');
    return el('li', { class: mine ? 'has-error' : '', 'data-step': id ?? '', 'aria-describedby': mine ? errorId : null },
      el('strong', {}, id ?? '(no id)'), ' ', el('span', { class: 'sig' }, what),
      mine ? el('span', { class: 'step-error', id: errorId, role: 'alert' }, error) : null);
  }));
  return placed;
}

async function loadWorkflows() {
  const { data } = await api('GET', '/workflows');
  fill($('wf-list'), data.length ? data.map((w) => el('tr', { 'data-name': w.name },
    el('td', {}, w.name), el('td', {}, String(w.steps.length)),
    el('td', { class: 'actions' },
      el('button', { type: 'button', class: 'small secondary', 'aria-label': `Edit ${w.name}`, onclick: () => { $('wf-json').value = JSON.stringify(w, null, 2); renderSteps(); } }, 'Edit'),
      el('button', { type: 'button', class: 'small secondary', 'aria-label': `Run or see the history of ${w.name}`, onclick: () => openWorkflow(w.name) }, 'Run & history'),
      el('button', { type: 'button', class: 'small danger', 'aria-label': `Delete ${w.name}`, onclick: () => guarded($('wf-result'), async () => { await api('DELETE', `/workflows/${encodeURIComponent(w.name)}`); $('wf-detail').hidden = true; await loadWorkflows(); }) }, 'Delete'))))
    : el('tr', {}, el('td', { colspan: 3, class: 'hint' }, 'No workflows yet.')));
}

function workflowRunView(run) {
  return el('div', { class: 'run', 'data-run': run.run_id ?? run.id },
    el('div', {}, `#${run.run_id ?? run.id} `, run.ok ? el('span', { class: 'ok' }, 'ok') : el('span', { class: 'bad' }, 'failed'),
      run.started_at ? ` ${when(run.started_at)}` : '', run.duration_ms !== undefined ? `, ${run.duration_ms} ms` : ''),
    el('ol', { class: 'steps' }, (run.steps || []).map((s) => el('li', { 'data-step': s.id },
      el('strong', {}, s.id), ' ', s.ok ? el('span', { class: 'ok' }, 'ok') : el('span', { class: 'bad' }, 'failed'),
      s.duration_ms !== undefined ? ` ${s.duration_ms} ms` : '',
      el('pre', { class: s.ok ? 'output' : 'bad' }, s.ok ? show(s.output ?? null) : show(s.error ?? ''))))),
    run.result !== undefined ? el('div', {}, el('strong', {}, 'result'), el('pre', {}, show(run.result))) : null,
    run.error ? el('pre', { class: 'bad' }, run.error) : null);
}

async function openWorkflow(name) {
  const box = $('wf-detail');
  box.hidden = false;
  const trigger = el('textarea', { rows: 2, class: 'code' }, '{}');
  const out = el('div', { class: 'result', 'aria-live': 'polite' });
  const history = el('div', { id: 'wf-history' });
  const refresh = async () => {
    const { data } = await api('GET', `/workflows/${encodeURIComponent(name)}/runs?limit=10`);
    fill(history, data.length ? data.map(workflowRunView) : el('p', { class: 'hint' }, 'No runs yet.'));
  };
  fill(box, el('h3', {}, name, el('button', { type: 'button', class: 'small secondary', onclick: () => { box.hidden = true; } }, 'Close')),
    el('form', {
      'aria-label': `Run ${name}`,
      onsubmit: (ev) => {
        ev.preventDefault();
        guarded(out, async () => {
          let parsed;
          try { parsed = JSON.parse(trigger.value || 'null'); } catch (e) { throw new Error(`the trigger is not JSON: ${e.message}`); }
          const { data } = await api('POST', `/workflows/${encodeURIComponent(name)}/run`, parsed);
          fill(out, workflowRunView(data));
          await refresh();
        });
      },
    }, field('Trigger (JSON, the run\'s {{ trigger }})', trigger), el('button', { type: 'submit' }, 'Run')),
    out, el('h3', {}, 'History'), history);
  await guarded(history, refresh);
}

async function saveWorkflow(ev) {
  ev.preventDefault();
  const out = $('wf-result');
  fill(out);
  renderSteps();
  let definition;
  try {
    definition = JSON.parse($('wf-json').value);
  } catch (e) {
    fill(out, el('p', { class: 'bad', role: 'alert' }, `Not JSON: ${e.message}`));
    return;
  }
  try {
    const { data } = await api('POST', '/workflows', definition);
    fill(out, el('p', { class: 'ok' }, `Saved ${data.name}.`));
    await loadWorkflows();
  } catch (e) {
    const placed = e.status === 400 && renderSteps(e.message);
    fill(out, el('p', { class: 'bad', role: 'alert' }, placed ? 'Not saved: see the step marked in the list.' : `Not saved: ${e.message}`));
  }
}

// ---- start --------------------------------------------------------------

function start() {
  $('token').value = token();
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = $('token').value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
    notice(value ? 'The token is kept for this tab and sent with every request.' : 'No token is sent.', 'info');
  });
  $('run-file').addEventListener('change', (ev) => { if (ev.target.files[0]) inspectFile(ev.target.files[0]); });
  $('register-form').addEventListener('submit', registerSubmit);
  $('handlers-refresh').addEventListener('click', () => guarded($('register-result'), loadHandlers));
  $('sched-cron').addEventListener('input', previewCron);
  $('sched-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    guarded($('sched-result'), async () => {
      const { data } = await api('POST', '/sched', { name: $('sched-name').value.trim(), cron: $('sched-cron').value.trim(), input: $('sched-input').value });
      fill($('sched-result'), el('p', { class: 'ok' }, `Scheduled ${data.name}; next at ${when(data.next)}.`));
      await loadSchedules();
      await showRuns(`Runs of ${data.name} at ${data.cron}`, `/sched/${encodeURIComponent(data.id)}/runs?limit=20`);
    });
  });
  $('sched-refresh').addEventListener('click', () => guarded($('sched-result'), loadSchedules));
  $('trigger-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    guarded($('trigger-result'), async () => {
      let parsed;
      try { parsed = JSON.parse($('trigger-json').value); } catch (e) { throw new Error(`not JSON: ${e.message}`); }
      const { data } = await api('POST', '/triggers', parsed);
      fill($('trigger-result'), el('p', { class: 'ok' }, `Trigger ${data.id} added.`));
      await loadSchedules();
    });
  });
  $('wf-json').value = JSON.stringify(EXAMPLE_WORKFLOW, null, 2);
  $('wf-json').addEventListener('input', () => renderSteps());
  $('wf-form').addEventListener('submit', saveWorkflow);
  $('wf-refresh').addEventListener('click', () => guarded($('wf-result'), loadWorkflows));
  renderSteps();
  onShow.handlers = () => guarded($('register-result'), async () => { await loadHandlers(); if (openHandler) await openDetail(openHandler); });
  onShow.schedules = () => guarded($('sched-result'), async () => { await loadSchedules(); await loadHandlers(); });
  onShow.workflows = () => guarded($('wf-result'), loadWorkflows);
  window.addEventListener('hashchange', showPage);
  showPage();
  document.body.dataset.ready = 'true';
}

start();
