// The Shoal dashboard: Preact components written with htm (tagged templates, no JSX
// step), hash routes, one live event stream. Everything it shows comes from the
// provider's /api/v1/ with the session cookie; see ../index.ts for the server side.
import { h, render } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import htm from 'htm';
import { api, ago, clock, formatBytes, setCsrf } from './api.js';
import { FarmGraph } from './graph.js';
import './style.css';

const html = htm.bind(h);

const PAGES = [
  ['hosts', 'Hosts'],
  ['services', 'Services'],
  ['farms', 'Farms'],
  ['deployments', 'Deployments'],
  ['events', 'Events'],
];

function useHash() {
  const read = () => (location.hash.replace(/^#\/?/, '') || 'hosts').split('/')[0];
  const [page, setPage] = useState(read());
  useEffect(() => {
    const on = () => setPage(read());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return page;
}

/** Fetches `load()` now, every `everyMs`, and whenever `tick` changes (a live event). */
function usePoll(load, tick, everyMs = 4000) {
  const [state, setState] = useState({ data: undefined, error: undefined });
  const alive = useRef(true);
  const run = useCallback(() => {
    load().then(
      (data) => alive.current && setState({ data, error: undefined }),
      (error) => alive.current && setState((s) => ({ data: s.data, error: error.message })),
    );
  }, [load]);
  useEffect(() => {
    alive.current = true;
    run();
    const t = setInterval(run, everyMs);
    return () => {
      alive.current = false;
      clearInterval(t);
    };
  }, [run, everyMs]);
  useEffect(() => {
    if (tick > 0) run();
  }, [tick]);
  return [state, run];
}

function Problem({ error }) {
  return error ? html`<p class="problem" role="alert">${error}</p>` : null;
}

function Badge({ value }) {
  return html`<span class=${`badge badge-${value}`}>${value}</span>`;
}

function Meter({ label, used, total, unit, format = (n) => n }) {
  const pct = total > 0 ? Math.min(100, Math.max(used > 0 ? 1 : 0, Math.round((used / total) * 100))) : 0;
  return html`<div class="meter">
    <span class="meter-label">${label}</span>
    <span class="meter-bar" role="meter" aria-label=${label} aria-valuemin="0" aria-valuemax=${total} aria-valuenow=${used}><span style=${`width:${pct}%`}></span></span>
    <span class="meter-value">${format(used)} / ${format(total)}${unit ? ` ${unit}` : ''}</span>
  </div>`;
}

// ---- login ----

function Login({ onLogin, message }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState(message);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      onLogin(await api('POST', '/ui/session', { token }));
    } catch (err) {
      setError(`Login refused: ${err.message}`);
    } finally {
      setBusy(false);
    }
  };
  return html`<main id="main" class="login">
    <h1>Shoal</h1>
    <form onSubmit=${submit} aria-describedby="login-help">
      <label for="token">API token</label>
      <input id="token" name="token" type="password" autocomplete="off" spellcheck="false" required value=${token} onInput=${(e) => setToken(e.currentTarget.value)} />
      <p id="login-help" class="help">A token from <code>shoal token create</code>, or the admin token <code>shoal up</code> wrote to <code>.shoal/admin-token</code>.</p>
      <button type="submit" disabled=${busy}>Log in</button>
      <${Problem} error=${error} />
    </form>
  </main>`;
}

// ---- hosts ----

const loadHosts = () => api('GET', '/api/v1/hosts');

function Hosts({ tick }) {
  const [{ data, error }] = usePoll(loadHosts, tick);
  return html`<section aria-labelledby="h-hosts">
    <h1 id="h-hosts">Hosts</h1>
    <${Problem} error=${error} />
    ${data?.hosts.length === 0 ? html`<p>No host has registered yet.</p>` : null}
    <div class="cards">${(data?.hosts ?? []).map((host) => html`<${Host} host=${host} key=${host.id} />`)}</div>
  </section>`;
}

function Host({ host }) {
  const r = host.report;
  return html`<article class="card host" data-host=${host.id} aria-label=${`host ${host.id}`}>
    <h2>${host.id} <${Badge} value=${host.state} /></h2>
    <p class="muted">${host.controlUrl} · seen ${ago(host.lastSeen)}${host.following ? ' · events followed' : ''}</p>
    ${r === undefined
      ? html`<p>No report yet.</p>`
      : html`
          <h3>Capacity and reservations</h3>
          <${Meter} label="memory" used=${r.reserved.memoryMb} total=${r.capacity.memoryMb} unit="MB" />
          <${Meter} label="cpu" used=${r.reserved.cpuMillis} total=${r.capacity.cpuMillis} unit="m" />
          <${Meter} label="instances" used=${r.reserved.instances} total=${r.capacity.instances} />
          <h3>Load</h3>
          <p class="stats"><span><b>${r.load.instances}</b> instances</span> <span><b>${r.load.inFlight}</b> in flight</span> <span><b>${r.load.requestsTotal}</b> requests</span></p>
          <h3>Layer cache</h3>
          <${Meter} label="bytes" used=${r.layerCache.bytes} total=${r.layerCache.budgetBytes} format=${formatBytes} />
          <details><summary>${r.layers.length} cached layers</summary>
            <ul class="layers">${r.layers.map((l) => html`<li><code>${l.digest.slice(7, 19)}</code> ${formatBytes(l.size)}${l.inUse ? ' · in use' : ''}</li>`)}</ul>
          </details>
          <h3>Drivers</h3>
          <div class="scroll"><table>
            <thead><tr><th scope="col">driver</th><th scope="col">isolation</th><th scope="col">capabilities</th><th scope="col">now</th></tr></thead>
            <tbody>${r.drivers.map(
              (d) => html`<tr>
                <td>${d.name}${d.default ? ' (default)' : ''}</td>
                <td>${d.capabilities.isolation}</td>
                <td>${['canPause', 'canSnapshot', 'canMigrate', 'canClone', 'enforcesLimits'].filter((k) => d.capabilities[k]).map((k) => k.replace(/^can/, '').toLowerCase()).join(', ') || '–'}</td>
                <td><${Badge} value=${d.fingerprint.healthy ? 'healthy' : 'unhealthy'} /> <span class="muted">${d.fingerprint.detail}</span></td>
              </tr>`,
            )}</tbody>
          </table></div>`}
  </article>`;
}

// ---- services and instances ----

const CRASHES = new Set(['crashed', 'oom', 'unresponsive', 'exited']);
const loadServices = async (withStates) => {
  const [services, instances, failed, events, states] = await Promise.all([
    api('GET', '/api/v1/services'),
    api('GET', '/api/v1/instances'),
    api('GET', '/api/v1/deployments?state=failed'),
    api('GET', '/api/v1/events?limit=300'),
    // Saved states hold an instance's memory (its env secrets too): the API gives them to deploy sessions only.
    withStates ? api('GET', '/api/v1/states') : undefined,
  ]);
  // Recent errors: failed deployments and instances that left on their own (crashed, oom, …).
  const errors = [
    ...failed.deployments.map((d) => ({ at: d.updatedAt, service: d.service, what: `deployment of ${d.version} failed: ${d.error ?? 'failed'}` })),
    ...events.events
      .filter((e) => e.kind === 'undeployed' && CRASHES.has(e.detail?.reason))
      .map((e) => ({ at: e.at, service: e.service, what: `instance ${e.instanceId} ${e.detail.reason}` })),
  ]
    .sort((a, b) => b.at - a.at)
    .slice(0, 12);
  return { services: services.services, instances: instances.instances, unreachable: instances.unreachable, errors, states: states?.states };
};
const loadServicesWithStates = () => loadServices(true);
const loadServicesOnly = () => loadServices(false);

function Services({ tick, role }) {
  const canChange = role === 'admin' || role === 'deploy';
  const [{ data, error }, reload] = usePoll(canChange ? loadServicesWithStates : loadServicesOnly, tick);
  const [note, setNote] = useState(undefined);
  const act = async (label, fn) => {
    setNote({ text: `${label}…` });
    try {
      await fn();
      setNote({ text: `${label}: done` });
    } catch (e) {
      setNote({ text: `${label}: ${e.message}`, error: true });
    }
    reload();
  };
  return html`<section aria-labelledby="h-services">
    <h1 id="h-services">Services and instances</h1>
    <${Problem} error=${error} />
    ${note ? html`<p class=${note.error ? 'problem' : 'note'} role="status">${note.text}</p>` : null}
    <h2>Services</h2>
    <div class="scroll"><table class="services">
      <thead><tr><th scope="col">service</th><th scope="col">version</th><th scope="col">ready</th><th scope="col">queued</th><th scope="col">operations</th>${canChange ? html`<th scope="col">actions</th>` : null}</tr></thead>
      <tbody>${(data?.services ?? []).map((s) => html`<${ServiceRow} s=${s} key=${s.name} canChange=${canChange} act=${act} />`)}</tbody>
    </table></div>
    <h2>Instances</h2>
    ${data?.unreachable?.length ? html`<p class="problem">Unreachable hosts: ${data.unreachable.join(', ')}</p>` : null}
    <div class="scroll"><table class="instances">
      <thead><tr><th scope="col">instance</th><th scope="col">service</th><th scope="col">version</th><th scope="col">driver</th><th scope="col">host</th><th scope="col">state</th><th scope="col">resources</th><th scope="col">in flight</th><th scope="col">started</th>${canChange ? html`<th scope="col"><span class="sr-only">actions</span></th>` : null}</tr></thead>
      <tbody>${(data?.instances ?? []).map(
        (i) => html`<tr key=${i.id} data-instance=${i.id}>
          <td><code>${i.id}</code></td><td>${i.service}</td><td>${i.version}</td><td>${i.driver}</td><td>${i.hostId}</td>
          <td><${Badge} value=${i.state} />${i.routable ? '' : html` <span class="muted">not routed</span>`}</td>
          <td>${i.memoryMb} MB · ${i.cpuMillis}m</td><td>${i.inFlight}</td><td>${ago(i.createdAt)}</td>
          ${canChange ? html`<td class="actions"><${InstanceActions} i=${i} act=${act} /></td>` : null}
        </tr>`,
      )}</tbody>
    </table></div>
    ${data?.instances.length === 0 ? html`<p>No instance runs now: services start on their first message, or deploy one.</p>` : null}
    ${canChange ? html`<${SavedStates} states=${data?.states} act=${act} />` : null}
    <h2>Recent errors</h2>
    ${data?.errors.length ? html`<ul class="errors">${data.errors.map((e) => html`<li><b>${e.service}</b> <span class="muted">${ago(e.at)}</span>: ${e.what}</li>`)}</ul>` : html`<p>No failed deployment or crash.</p>`}
  </section>`;
}

const LIVE_LABELS = { snapshot: 'Snapshot', suspend: 'Suspend', fork: 'Fork', migrate: 'Migrate' };

/**
 * The buttons of one instance: the live operations its driver declares (liveOps, from its
 * host's report; pause becomes resume while it is paused), then remove. The provider
 * refuses what the driver cannot do anyway; the page just does not offer it.
 */
function InstanceActions({ i, act }) {
  const ops = i.liveOps ?? [];
  const path = (op) => `/api/v1/instances/${encodeURIComponent(i.id)}/${op}`;
  const button = (op, label, cls) =>
    html`<button class=${cls} data-op=${op} onClick=${() => act(`${op} ${i.id}`, () => (op === 'remove' ? api('DELETE', `/api/v1/instances/${encodeURIComponent(i.id)}`) : api('POST', path(op), {})))} aria-label=${`${op} instance ${i.id}`}>${label}</button>`;
  return html`${ops.includes('pause') ? (i.state === 'paused' ? button('resume', 'Resume') : button('pause', 'Pause')) : null}
    ${ops.filter((op) => op in LIVE_LABELS).map((op) => button(op, LIVE_LABELS[op]))}
    ${button('remove', 'Remove', 'danger')}`;
}

/** Saved states (snapshots and suspended instances): restore one as a new instance, or delete it. */
function SavedStates({ states, act }) {
  if (states === undefined) return null;
  return html`<h2>Saved states</h2>
    ${states.length === 0
      ? html`<p>No saved state: snapshot or suspend an instance whose driver can (wasm, vm).</p>`
      : html`<div class="scroll"><table class="states">
          <thead><tr><th scope="col">state</th><th scope="col">service</th><th scope="col">why</th><th scope="col">label</th><th scope="col">driver</th><th scope="col">size</th><th scope="col">from</th><th scope="col">saved</th><th scope="col">expires</th><th scope="col"><span class="sr-only">actions</span></th></tr></thead>
          <tbody>${states.map(
            (st) => html`<tr key=${st.id} data-state=${st.id}>
              <td><code>${st.id.slice(0, 8)}</code></td><td>${st.service} <span class="muted">${st.version}</span></td><td>${st.reason}</td><td>${st.label ?? '–'}</td><td>${st.driver}</td>
              <td>${formatBytes(st.size)}</td><td>${st.sourceInstance ? html`<code>${st.sourceInstance}</code>` : '–'}</td><td>${ago(st.createdAt)}</td><td>${st.expiresAt ? clock(st.expiresAt) : 'kept'}</td>
              <td class="actions">
                <button data-op="restore" onClick=${() => act(`restore ${st.id}`, () => api('POST', `/api/v1/states/${encodeURIComponent(st.id)}/restore`, {}))} aria-label=${`restore state ${st.id}`}>Restore</button>
                <button class="danger" data-op="delete" onClick=${() => act(`delete state ${st.id}`, () => api('DELETE', `/api/v1/states/${encodeURIComponent(st.id)}`))} aria-label=${`delete state ${st.id}`}>Delete</button>
              </td>
            </tr>`,
          )}</tbody>
        </table></div>`}`;
}

function ServiceRow({ s, canChange, act }) {
  const [count, setCount] = useState(String(s.ready || 1));
  const id = `scale-${s.name}`;
  return html`<tr data-service=${s.name}>
    <td><b>${s.name}</b></td><td>${s.version}</td><td>${s.ready}</td><td>${s.queued}</td><td>${s.operations.join(', ')}</td>
    ${canChange
      ? html`<td class="actions">
          <button onClick=${() => act(`deploy ${s.name}`, () => api('POST', `/api/v1/services/${encodeURIComponent(s.name)}/deployments`, { count: 1 }))}>Deploy now</button>
          <label for=${id} class="sr-only">instances of ${s.name}</label>
          <input id=${id} type="number" min="0" max="100" value=${count} onInput=${(e) => setCount(e.currentTarget.value)} />
          <button onClick=${() => act(`scale ${s.name} to ${count}`, () => api('PUT', `/api/v1/services/${encodeURIComponent(s.name)}/scale`, { instances: Number(count) }))}>Scale</button>
        </td>`
      : null}
  </tr>`;
}

// ---- farms ----

const loadFarms = async () => {
  const list = await api('GET', '/api/v1/farms');
  return Promise.all(list.farms.map((f) => api('GET', `/api/v1/farms/${encodeURIComponent(f.name)}`)));
};

function Farms({ tick }) {
  const [{ data, error }] = usePoll(loadFarms, tick);
  return html`<section aria-labelledby="h-farms">
    <h1 id="h-farms">Farms</h1>
    <${Problem} error=${error} />
    ${data?.length === 0 ? html`<p>No farm applied (<code>shoal apply examples/adventure-works/farm.ts</code>).</p>` : null}
    ${(data ?? []).map(
      (f) => html`<article class="card farm" key=${f.name} data-farm=${f.name}>
        <h2>${f.name}</h2>
        <div class="scroll"><${FarmGraph} status=${f} /></div>
        <h3>Refs</h3>
        <ul>${Object.entries(f.refs).map(([ref, to]) => html`<li><code>${ref}</code> → <code>${to}</code></li>`)}</ul>
        <h3>Crash rules</h3>
        <ul>${f.graph.crashRules.map((r) => html`<li>if <code>${r.instance}</code> crashes: ${r.actions.map((a) => (a.kind === 'update' ? `rebind ${a.ref} to ${a.target}` : a.kind === 'restore' ? `restore ${a.snapshot}` : 'restart')).join(', ')}</li>`)}</ul>
        ${f.crashes.length ? html`<h3>Crashes seen</h3><ul>${f.crashes.map((c) => html`<li>${clock(c.at)} <code>${c.instance}</code></li>`)}</ul>` : null}
        <h3>Imports and exports</h3>
        <ul>
          ${f.graph.nodes.filter((n) => n.kind === 'import').map((n) => html`<li>import <code>${n.id}</code> (${n.service}) at ${n.url}</li>`)}
          ${f.graph.exports.map((e) => html`<li>export <code>/x/${f.name}/${e.path}</code> → ${e.node}</li>`)}
        </ul>
      </article>`,
    )}
  </section>`;
}

// ---- deployments ----

const PHASES = ['queue', 'place', 'admit', 'pull', 'unpack', 'mount', 'create', 'start', 'ready', 'first-reply'];
const loadDeployments = async () => (await api('GET', '/api/v1/deployments')).deployments.slice(-30).reverse();

function Deployments({ tick }) {
  const [{ data, error }] = usePoll(loadDeployments, tick);
  return html`<section aria-labelledby="h-deployments">
    <h1 id="h-deployments">Deployments</h1>
    <${Problem} error=${error} />
    ${data?.length === 0 ? html`<p>No deployment yet.</p>` : null}
    ${(data ?? []).map((d) => html`<${Waterfall} d=${d} key=${d.id} />`)}
  </section>`;
}

function Waterfall({ d }) {
  const t = d.timeline;
  const total = t ? Math.max(t.totalMs, ...t.phases.map((p) => p.endMs), 1) : 1;
  const phases = t ? [...t.phases].sort((a, b) => a.startMs - b.startMs || PHASES.indexOf(a.name) - PHASES.indexOf(b.name)) : [];
  return html`<article class="card deployment" data-deployment=${d.id}>
    <h2>${d.service} <span class="muted">${d.version}</span> <${Badge} value=${d.state} /></h2>
    <p class="muted"><code>${d.id}</code>${d.hostId ? ` on ${d.hostId}` : ''} · ${ago(d.createdAt)}${t ? ` · ${Math.round(t.totalMs)} ms · ${formatBytes(t.pull.bytes)} pulled (${t.pull.layersFetched} layers fetched, ${t.pull.layersCached} cached)` : ''}</p>
    ${d.error ? html`<p class="problem">${d.error}</p>` : null}
    ${t
      ? html`<div class="waterfall" role="table" aria-label=${`timeline of ${d.id}`}>
          ${phases.map((p) => {
            const ms = Math.max(0, p.endMs - p.startMs);
            return html`<div class="wf-row" role="row" data-phase=${p.name}>
              <span class="wf-name" role="rowheader">${p.name}</span>
              <span class="wf-track" role="cell"><span class=${`wf-bar wf-${p.name}`} style=${`left:${(p.startMs / total) * 100}%;width:${Math.max(0.5, (ms / total) * 100)}%`}></span></span>
              <span class="wf-ms" role="cell">${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms · ${Math.round((ms / total) * 100)}%</span>
              <span class="wf-bytes" role="cell">${p.name === 'pull' ? formatBytes(t.pull.bytes) : ''}</span>
            </div>`;
          })}
        </div>`
      : html`<p>No timeline (yet).</p>`}
  </article>`;
}

// ---- events and audit ----

function Events({ events, role, tick }) {
  const loadAudit = useCallback(() => (role === 'admin' ? api('GET', '/api/v1/audit?limit=50') : Promise.resolve(undefined)), [role]);
  const [{ data, error }] = usePoll(loadAudit, tick, 8000);
  return html`<section aria-labelledby="h-events">
    <h1 id="h-events">Events</h1>
    <h2>Live</h2>
    <ol class="events" aria-live="polite">
      ${events.length === 0 ? html`<li class="muted">Waiting for events…</li>` : null}
      ${events.map(
        (e) => html`<li key=${e.id} data-kind=${e.kind}>
          <span class="muted">${clock(e.at)}</span> <b>${e.kind}</b> ${e.service ?? ''} ${e.instanceId ? html`<code>${e.instanceId}</code>` : ''}
          ${e.detail !== undefined && e.kind !== 'farm' ? html`<span class="muted detail">${JSON.stringify(e.detail).slice(0, 160)}</span>` : ''}
        </li>`,
      )}
    </ol>
    <h2>Audit trail</h2>
    <${Problem} error=${error} />
    ${role !== 'admin'
      ? html`<p>The audit trail needs an admin token.</p>`
      : html`<div class="scroll"><table class="audit">
          <thead><tr><th scope="col">when</th><th scope="col">token</th><th scope="col">role</th><th scope="col">call</th><th scope="col">status</th></tr></thead>
          <tbody>${(data?.entries ?? []).slice().reverse().map((a) => html`<tr key=${a.id}><td>${clock(a.at)}</td><td>${a.tokenId ?? '–'}</td><td>${a.role ?? '–'}</td><td><code>${a.method} ${a.path}</code></td><td>${a.status}</td></tr>`)}</tbody>
        </table></div>`}
  </section>`;
}

// ---- the shell ----

function App() {
  const [session, setSession] = useState(undefined);
  const [checked, setChecked] = useState(false);
  const [events, setEvents] = useState([]);
  const [tick, setTick] = useState(0);
  const [live, setLive] = useState(false);
  const page = useHash();

  useEffect(() => {
    api('GET', '/ui/session').then(
      (s) => {
        setCsrf(s.csrf);
        setSession(s);
        setChecked(true);
      },
      () => setChecked(true),
    );
  }, []);

  const [ended, setEnded] = useState(undefined);
  useEffect(() => {
    const on = (e) => {
      setEnded(e.detail);
      setSession(undefined);
    };
    addEventListener('shoal-logged-out', on);
    return () => removeEventListener('shoal-logged-out', on);
  }, []);

  useEffect(() => {
    if (session === undefined) return undefined;
    const source = new EventSource('/ui/events');
    source.onopen = () => setLive(true);
    source.onerror = () => setLive(false);
    source.addEventListener('shoal', (m) => {
      const e = JSON.parse(m.data);
      setEvents((list) => [e, ...list.filter((x) => x.id !== e.id)].slice(0, 200));
      setTick((t) => t + 1);
    });
    return () => source.close();
  }, [session]);

  // A page change moves focus to the new content (not on first load: Tab starts at the top).
  const firstPage = useRef(true);
  useEffect(() => {
    if (firstPage.current) firstPage.current = false;
    else document.getElementById('main')?.focus();
  }, [page]);

  if (!checked) return html`<p class="loading">Loading…</p>`;
  if (session === undefined) {
    return html`<${Login} message=${ended} onLogin=${(s) => {
      setEnded(undefined);
      setCsrf(s.csrf);
      setSession(s);
    }} />`;
  }
  const logout = async () => {
    await api('DELETE', '/ui/session').catch(() => undefined);
    setCsrf('');
    setSession(undefined);
    setEvents([]);
  };
  const View = { hosts: Hosts, services: Services, farms: Farms, deployments: Deployments, events: Events }[page] ?? Hosts;
  return html`<a class="skip" href="#main">Skip to content</a>
    <header>
      <span class="brand">Shoal</span>
      <nav aria-label="pages"><ul>${PAGES.map(([id, label]) => html`<li><a href=${`#/${id}`} aria-current=${page === id ? 'page' : undefined}>${label}</a></li>`)}</ul></nav>
      <span class="who"><span class=${live ? 'live on' : 'live'} title=${live ? 'live events connected' : 'live events disconnected'}>${live ? '● live' : '○ offline'}</span> ${session.tokenId} (${session.role}) <button onClick=${logout}>Log out</button></span>
    </header>
    <main id="main" tabindex="-1"><${View} tick=${tick} role=${session.role} events=${events} /></main>`;
}

render(html`<${App} />`, document.getElementById('app'));
