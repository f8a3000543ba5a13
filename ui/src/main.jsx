// The Flare console: one page, hash routes, every figure from the /v1 API.
import { render } from 'preact';
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { ApiError, follow, json, scoped, session } from './api.js';
import { Chart, Sparkline } from './charts.jsx';
import './app.css';

const PAGES = [
  ['functions', 'Functions'],
  ['invocations', 'Invocations'],
  ['triggers', 'Triggers'],
  ['environments', 'Environments'],
  ['nodes', 'Nodes'],
];

// ---- small pieces -------------------------------------------------------

function useRoute() {
  const parse = () => (location.hash.replace(/^#\/?/, '') || 'functions').split('/').map(decodeURIComponent);
  const [route, setRoute] = useState(parse);
  useEffect(() => {
    const changed = () => setRoute(parse());
    addEventListener('hashchange', changed);
    return () => removeEventListener('hashchange', changed);
  }, []);
  return route;
}

// Loads `load()` now, again when `deps` change, and every `everyMs` if set.
function useLoad(load, deps, everyMs) {
  const [state, setState] = useState({ data: null, error: null });
  const reload = useCallback(() => {
    load().then(
      (data) => setState({ data, error: null }),
      (error) => setState((old) => ({ data: old.data, error })),
    );
  }, deps);
  useEffect(() => {
    reload();
    if (!everyMs) return undefined;
    const timer = setInterval(reload, everyMs);
    return () => clearInterval(timer);
  }, [reload]);
  return { ...state, reload };
}

// A page's heading: takes the keyboard focus when the page opens, so a
// screen reader announces where the user is.
function Heading({ children }) {
  const ref = useRef(null);
  useLayoutEffect(() => {
    ref.current?.focus();
  }, []);
  return (
    <h1 tabIndex={-1} ref={ref}>
      {children}
    </h1>
  );
}

function Problem({ error }) {
  if (!error) return null;
  return (
    <p class="problem" role="alert">
      {error instanceof ApiError ? error.message : `The API cannot be reached: ${error.message}`}
    </p>
  );
}

function Empty({ children }) {
  return <p class="empty">{children}</p>;
}

// A table of `rows` (arrays of cells, in the order of `columns`); the
// `empty` note when there are none.
function Table({ caption, columns, rows, empty = 'None.' }) {
  if (rows.length === 0) return <Empty>{empty}</Empty>;
  return (
    <table>
      {caption && <caption>{caption}</caption>}
      <thead>
        <tr>
          {columns.map((c) => (
            <th scope="col">{c}</th>
          ))}
        </tr>
      </thead>
      <tbody>
        {rows.map((cells) => (
          <tr>
            {cells.map((cell) => (
              <td>{cell}</td>
            ))}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

const time = (iso) => (iso ? new Date(iso).toLocaleString() : '—');
const qualified = (name) => (session.namespace() === 'default' ? name : `${name}.${session.namespace()}`);
const fnPath = (name) => `/v1/functions/${encodeURIComponent(name)}`;

// ---- sign-in -----------------------------------------------------------

function SignIn({ onSignedIn, reason }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState(reason);
  const [busy, setBusy] = useState(false);
  const input = useRef(null);
  useEffect(() => input.current?.focus(), []);
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    session.signIn(token.trim());
    try {
      onSignedIn(await json('/v1/whoami'));
    } catch (e) {
      session.signOut();
      setError(e.status === 401 ? 'That token is not valid (unknown, revoked or expired).' : e.message);
      input.current?.focus();
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="sign-in">
      <Heading>Sign in to Flare</Heading>
      <form onSubmit={submit}>
        <label for="token">API token</label>
        <input
          id="token"
          ref={input}
          type="password"
          autocomplete="off"
          spellcheck={false}
          required
          value={token}
          aria-describedby="token-help"
          onInput={(e) => setToken(e.currentTarget.value)}
        />
        <p id="token-help" class="help">
          A token from <code>flare token create</code> (or the admin token the server printed at its first start). It
          is kept in this tab only and forgotten when the tab closes.
        </p>
        {error && (
          <p class="problem" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          Sign in
        </button>
      </form>
    </main>
  );
}

// ---- functions ----------------------------------------------------------

function FunctionsPage() {
  const functions = useLoad(() => json(scoped('/v1/functions')), [session.namespace()], 10_000);
  const [history, setHistory] = useState({});
  useEffect(() => {
    for (const f of functions.data || []) {
      json(scoped(`${fnPath(f.metadata.name)}/metrics`)).then(
        (m) => setHistory((old) => ({ ...old, [f.metadata.name]: m.points })),
        () => {},
      );
    }
  }, [functions.data]);
  const list = functions.data || [];
  return (
    <main id="content">
      <Heading>Functions</Heading>
      <Problem error={functions.error} />
      {functions.data && list.length === 0 && <Empty>No functions in this namespace yet.</Empty>}
      {list.length > 0 && (
        <table>
          <caption>Functions in namespace {session.namespace()}; invocations and errors over the last hour</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Runtime</th>
              <th scope="col">Version</th>
              <th scope="col">Status</th>
              <th scope="col">Instances warm / busy</th>
              <th scope="col">Invocations</th>
              <th scope="col">Errors</th>
            </tr>
          </thead>
          <tbody>
            {list.map((f) => {
              const points = history[f.metadata.name] || [];
              const instances = f.status?.instances;
              return (
                <tr key={f.metadata.name}>
                  <th scope="row">
                    <a href={`#/functions/${encodeURIComponent(f.metadata.name)}`}>{f.metadata.name}</a>
                  </th>
                  <td>{f.spec.environment || f.spec.runtime}</td>
                  <td>{f.metadata.version || f.metadata.generation}</td>
                  <td>
                    <Status status={f.status} />
                  </td>
                  <td class="instances">{instances ? `${instances.warm} / ${instances.busy}` : '—'}</td>
                  <td>
                    <Sparkline label="Invocations" values={points.map((p) => p.requests)} />
                  </td>
                  <td>
                    <Sparkline label="Errors" values={points.map((p) => p.errors)} />
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </main>
  );
}

function Status({ status }) {
  if (!status) return <span class="badge">not deployed here</span>;
  if (status.error) return <span class="badge bad" title={status.error}>failed: {status.error}</span>;
  return <span class={`badge ${status.ready ? 'good' : ''}`}>{status.ready ? 'ready' : 'deploying'}</span>;
}

function FunctionPage({ name, who }) {
  const fn = useLoad(() => json(scoped(fnPath(name))), [name], 10_000);
  const metrics = useLoad(() => json(scoped(`${fnPath(name)}/metrics`)), [name], 5_000);
  const f = fn.data;
  return (
    <main id="content">
      <Heading>Function {name}</Heading>
      <Problem error={fn.error} />
      {f && (
        <p class="summary">
          {f.spec.environment || f.spec.runtime} · version {f.metadata.version || f.metadata.generation} · <Status status={f.status} />
          {f.status && ` · ${f.status.inFlight} in flight, ${f.status.queued ?? 0} queued`}
        </p>
      )}
      <section aria-labelledby="charts-title">
        <h2 id="charts-title">Last hour{metrics.data?.nodes > 1 ? `, ${metrics.data.nodes} nodes` : ''}</h2>
        <Problem error={metrics.error} />
        <Charts points={metrics.data?.points || []} step={metrics.data?.stepSeconds || 10} />
      </section>
      <TestForm name={name} who={who} onDone={metrics.reload} />
      <Logs name={name} />
      {f && <Details name={name} f={f} who={who} onChanged={fn.reload} />}
    </main>
  );
}

function Charts({ points, step }) {
  return (
    <div class="charts">
      <Chart id="chart-rate" title="Requests per second" unit="/s" points={points} series={[{ label: 'requests', value: (p) => p.requests / step }]} />
      <Chart id="chart-errors" title="Errors (5xx and timeouts)" unit="" points={points} series={[{ label: 'errors', value: (p) => p.errors }]} />
      <Chart
        id="chart-duration"
        title="Duration"
        unit=" ms"
        points={points}
        series={[
          { label: 'p50', value: (p) => p.p50Ms },
          { label: 'p99', value: (p) => p.p99Ms },
        ]}
      />
      <Chart id="chart-cold" title="Cold starts" unit="" points={points} series={[{ label: 'cold starts', value: (p) => p.coldStarts }]} />
      <Chart
        id="chart-instances"
        title="Instances"
        unit=""
        points={points}
        series={[
          { label: 'instances', value: (p) => p.instances },
          { label: 'busy', value: (p) => p.busy },
        ]}
      />
    </div>
  );
}

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];
const SHOWN_BODY = 64 * 1024;

function TestForm({ name, who, onDone }) {
  const [method, setMethod] = useState('POST');
  const [path, setPath] = useState('/');
  const [headers, setHeaders] = useState('content-type: text/plain');
  const [body, setBody] = useState('');
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const allowed = who.role !== 'viewer';
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    const sent = new Headers();
    for (const line of headers.split('\n')) {
      const colon = line.indexOf(':');
      if (colon > 0) sent.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
    const suffix = path.startsWith('/') ? path : `/${path}`;
    const started = performance.now();
    try {
      const response = await fetch(`/v1/functions/${encodeURIComponent(qualified(name))}/invoke${suffix === '/' ? '' : suffix}`, {
        method,
        headers: (() => {
          sent.set('authorization', `Bearer ${session.token()}`);
          return sent;
        })(),
        body: method === 'GET' || method === 'DELETE' ? undefined : body,
        credentials: 'omit',
        cache: 'no-store',
      });
      const text = await response.text();
      setResult({
        status: response.status,
        statusText: response.statusText,
        ms: performance.now() - started,
        headers: [...response.headers.entries()],
        body: text.length > SHOWN_BODY ? `${text.slice(0, SHOWN_BODY)}\n… (${text.length} characters in all)` : text,
      });
      onDone();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="test-title">
      <h2 id="test-title">Test</h2>
      {!allowed && <p class="help">A viewer token cannot invoke functions.</p>}
      <form class="test-form" onSubmit={submit}>
        <div class="row">
          <label for="test-method">Method</label>
          <select id="test-method" value={method} onChange={(e) => setMethod(e.currentTarget.value)}>
            {METHODS.map((m) => (
              <option>{m}</option>
            ))}
          </select>
          <label for="test-path">Path</label>
          <input id="test-path" value={path} onInput={(e) => setPath(e.currentTarget.value)} />
        </div>
        <label for="test-headers">Headers (one "name: value" per line)</label>
        <textarea id="test-headers" rows={2} value={headers} onInput={(e) => setHeaders(e.currentTarget.value)} />
        <label for="test-body">Body</label>
        <textarea id="test-body" rows={4} value={body} onInput={(e) => setBody(e.currentTarget.value)} />
        <button type="submit" disabled={busy || !allowed}>
          Invoke
        </button>
      </form>
      <Problem error={error} />
      {result && (
        <div class="result" role="status" aria-label="Test result">
          <p>
            <strong id="test-status" class={result.status >= 400 ? 'bad' : 'good'}>
              {result.status} {result.statusText}
            </strong>{' '}
            in <span id="test-duration">{result.ms.toFixed(1)} ms</span>
          </p>
          <details>
            <summary>Response headers ({result.headers.length})</summary>
            <dl>
              {result.headers.map(([k, v]) => (
                <>
                  <dt>{k}</dt>
                  <dd>{v}</dd>
                </>
              ))}
            </dl>
          </details>
          <pre id="test-body-out" tabIndex={0} aria-label="Response body">
            {result.body}
          </pre>
        </div>
      )}
    </section>
  );
}

const MAX_LINES = 2000;

function Logs({ name }) {
  const [filters, setFilters] = useState({ contains: '', since: '1h', until: '', invocation: '', stream: '' });
  const [lines, setLines] = useState([]);
  const [following, setFollowing] = useState(false);
  const [error, setError] = useState(null);
  const query = (extra) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v.trim()) q.set(k, v.trim());
    for (const [k, v] of Object.entries(extra)) q.set(k, v);
    return scoped(`${fnPath(name)}/logs?${q}`);
  };
  const search = async () => {
    setError(null);
    try {
      const found = await json(query({ limit: '500' }));
      setLines(found.sort((a, b) => a.id - b.id));
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => {
    search();
  }, [name]);
  useEffect(() => {
    if (!following) return undefined;
    const stop = new AbortController();
    setLines([]);
    follow(query({ follow: 'true', limit: '200' }), stop.signal, (entry) =>
      setLines((old) => [...old, entry].slice(-MAX_LINES)),
    ).then(
      () => setFollowing(false),
      (e) => {
        if (e.name !== 'AbortError') {
          setError(e);
          setFollowing(false);
        }
      },
    );
    return () => stop.abort();
  }, [following]);
  const field = (key, label, placeholder) => (
    <div class="field">
      <label for={`logs-${key}`}>{label}</label>
      <input
        id={`logs-${key}`}
        placeholder={placeholder}
        value={filters[key]}
        disabled={following}
        onInput={(e) => setFilters({ ...filters, [key]: e.currentTarget.value })}
      />
    </div>
  );
  return (
    <section aria-labelledby="logs-title">
      <h2 id="logs-title">Logs</h2>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          search();
        }}
      >
        {field('contains', 'Text', 'contains…')}
        {field('since', 'Since', '1h or 2026-12-04T10:00:00Z')}
        {field('until', 'Until', 'now')}
        {field('invocation', 'Invocation', 'id')}
        <div class="field">
          <label for="logs-stream">Stream</label>
          <select id="logs-stream" value={filters.stream} disabled={following} onChange={(e) => setFilters({ ...filters, stream: e.currentTarget.value })}>
            <option value="">all</option>
            <option>stdout</option>
            <option>stderr</option>
            <option>system</option>
          </select>
        </div>
        <button type="submit" disabled={following}>
          Search
        </button>
        <button type="button" aria-pressed={following} onClick={() => setFollowing(!following)}>
          {following ? 'Stop following' : 'Follow'}
        </button>
      </form>
      <Problem error={error} />
      {lines.length === 0 ? (
        <Empty>{following ? 'Following: new lines appear here as they are written.' : 'No lines match.'}</Empty>
      ) : (
        <div class="log" role="log" aria-label={`Log lines of ${name}`} tabIndex={0}>
          <ol>
          {lines.map((l) => (
            <li key={l.id} class={`stream-${l.stream}`}>
              <time dateTime={new Date(l.ts_us / 1000).toISOString()}>{new Date(l.ts_us / 1000).toLocaleTimeString()}</time>
              <span class="stream">{l.stream}</span>
              <span class="invocation">{l.invocation}</span>
              <span class="line">{l.line}</span>
            </li>
          ))}
          </ol>
        </div>
      )}
    </section>
  );
}

function Details({ name, f, who, onChanged }) {
  const versions = useLoad(() => json(scoped(`${fnPath(name)}/versions`)), [name, f.metadata.version]);
  const [said, setSaid] = useState(null);
  const [error, setError] = useState(null);
  const changes = who.role === 'admin' || who.role === 'developer';
  const serve = async (version) => {
    setError(null);
    try {
      await json(scoped(`${fnPath(name)}/rollback`), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ version }),
      });
      setSaid(`Version ${version} is serving now.`);
      onChanged();
    } catch (e) {
      setError(e);
    }
  };
  const related = useLoad(async () => {
    const [aliases, http, mq, timers, canaries] = await Promise.all(
      ['/v1/aliases', '/v1/httptriggers', '/v1/mqtriggers', '/v1/timertriggers', '/v1/canaries'].map((p) => json(scoped(p)).catch(() => [])),
    );
    const mine = (list) => list.filter((r) => (r.spec?.function ?? r.function) === name);
    return { aliases: mine(aliases), http: mine(http), mq: mine(mq), timers: mine(timers), canaries: mine(canaries) };
  }, [name]);
  const r = related.data;
  return (
    <>
      <section aria-labelledby="triggers-title">
        <h2 id="triggers-title">Triggers</h2>
        {r && <TriggerTables http={r.http} mq={r.mq} timers={r.timers} />}
      </section>
      <section aria-labelledby="versions-title">
        <h2 id="versions-title">Versions and aliases</h2>
        <Problem error={versions.error} />
        <p role="status">{said}</p>
        <Problem error={error} />
        {versions.data && (
          <Table
            caption="Versions (newest last)"
            columns={['Version', 'Created', 'Package', 'Serving']}
            rows={versions.data.map((v) => [
              v.version,
              time(v.createdAt),
              <code>{v.spec.package.digest.slice(0, 19)}</code>,
              v.serving ? (
                'serving'
              ) : changes ? (
                <button type="button" onClick={() => serve(v.version)}>
                  Serve version {v.version}
                </button>
              ) : (
                '—'
              ),
            ])}
          />
        )}
        {r && r.aliases.length === 0 && <Empty>No aliases.</Empty>}
        {r && r.aliases.length > 0 && (
          <ul>
            {r.aliases.map((a) => (
              <li>
                {a.metadata.name} → version {a.spec.version}
              </li>
            ))}
          </ul>
        )}
      </section>
      <section aria-labelledby="canary-title">
        <h2 id="canary-title">Canary</h2>
        {r && r.canaries.length === 0 && <Empty>No canary.</Empty>}
        {r &&
          r.canaries.map((c) => (
            <p>
              {c.metadata.name}: version {c.spec.from} → {c.spec.to} by {c.spec.step}% every {c.spec.interval}: <strong>{c.spec.status?.state}</strong>,{' '}
              {c.spec.status?.weight}% of traffic on version {c.spec.to}
              {c.spec.status?.failureRate != null && `, failure rate ${(c.spec.status.failureRate * 100).toFixed(1)}% (threshold ${c.spec.failureThreshold}%)`}
              {c.spec.status?.message && ` — ${c.spec.status.message}`}
            </p>
          ))}
      </section>
      <section aria-labelledby="spec-title">
        <h2 id="spec-title">Spec</h2>
        <Pre value={f.spec} />
      </section>
    </>
  );
}

// A text shown by its first line; the rest on request.
function Long({ text }) {
  if (!text) return null;
  const first = text.split(/[:\n]/, 1)[0];
  if (first.length >= text.length) return text;
  return (
    <details>
      <summary>{first}</summary>
      {text}
    </details>
  );
}

function Pre({ value, inline }) {
  if (inline) return <code>{JSON.stringify(value)}</code>;
  return (
    <pre tabIndex={0} class="spec">
      {JSON.stringify(value, null, 2)}
    </pre>
  );
}

// ---- invocations, triggers, environments, nodes ------------------------

function InvocationsPage({ who }) {
  const [status, setStatus] = useState('');
  const list = useLoad(() => json(scoped(`/v1/invocations?limit=200${status ? `&status=${status}` : ''}`)), [status, session.namespace()], 5_000);
  const [said, setSaid] = useState(null);
  const [error, setError] = useState(null);
  const retry = async (id) => {
    setError(null);
    try {
      const accepted = await json(`/v1/invocations/${encodeURIComponent(id)}/retry?namespace=${encodeURIComponent(session.namespace())}`, { method: 'POST' });
      setSaid(`Invocation ${id} submitted again as ${accepted.invocation}.`);
      list.reload();
    } catch (e) {
      setError(e);
    }
  };
  return (
    <main id="content">
      <Heading>Invocations</Heading>
      <p class="help">Asynchronous invocations, newest first; failed ones have used up their retries.</p>
      <label for="inv-status">Status</label>{' '}
      <select id="inv-status" value={status} onChange={(e) => setStatus(e.currentTarget.value)}>
        <option value="">all</option>
        <option>queued</option>
        <option>running</option>
        <option>succeeded</option>
        <option>failed</option>
      </select>
      <p role="status">{said}</p>
      <Problem error={error || list.error} />
      {list.data && list.data.length === 0 && <Empty>No invocations.</Empty>}
      {list.data && list.data.length > 0 && (
        <table>
          <caption>Invocations</caption>
          <thead>
            <tr>
              <th scope="col">Id</th>
              <th scope="col">Function</th>
              <th scope="col">Submitted</th>
              <th scope="col">Status</th>
              <th scope="col">Attempts</th>
              <th scope="col">Result</th>
              <th scope="col">Error</th>
              <th scope="col">
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.data.map((i) => (
              <tr key={i.id}>
                <td>
                  <code>{i.id}</code>
                </td>
                <td>{i.function}</td>
                <td>{new Date(i.created_us / 1000).toLocaleString()}</td>
                <td>{i.status}</td>
                <td>{i.attempts}</td>
                <td>{i.result_status ?? '—'}</td>
                <td class="error-text">
                  <Long text={i.error} />
                </td>
                <td>
                  {i.status === 'failed' && who.role !== 'viewer' && (
                    <button type="button" onClick={() => retry(i.id)} aria-label={`Retry invocation ${i.id}`}>
                      Retry
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </main>
  );
}

function TriggerTables({ http, mq, timers }) {
  const fnLink = (name) => <a href={`#/functions/${encodeURIComponent(name)}`}>{name}</a>;
  const target = (s) => (s.weights ? Object.entries(s.weights).map(([v, w]) => `v${v} ${w}%`).join(', ') : s.alias ? `alias ${s.alias}` : 'latest');
  return (
    <>
      <h3>HTTP</h3>
      <Table
        columns={['Name', 'Methods', 'Path', 'Function', 'Version']}
        rows={http.map((t) => [
          t.metadata.name,
          t.spec.methods?.length ? t.spec.methods.join(', ') : 'any',
          <code>{`${t.spec.host ?? ''}${t.spec.path}`}</code>,
          fnLink(t.spec.function),
          target(t.spec),
        ])}
      />
      <h3>Message queues</h3>
      <Table
        columns={['Name', 'Broker', 'Topic', 'Function', 'State']}
        rows={mq.map((t) => [
          t.metadata.name,
          t.spec.mqtype,
          <code>{t.spec.topic}</code>,
          fnLink(t.spec.function),
          t.status ? <Pre value={t.status} inline /> : '—',
        ])}
      />
      <h3>Timers</h3>
      <Table
        columns={['Name', 'Schedule', 'Function']}
        rows={timers.map((t) => [
          t.metadata.name,
          <code>{`${t.spec.cron}${t.spec.timezone ? ` (${t.spec.timezone})` : ''}`}</code>,
          fnLink(t.spec.function),
        ])}
      />
    </>
  );
}

function TriggersPage() {
  const all = useLoad(
    () => Promise.all(['/v1/httptriggers', '/v1/mqtriggers', '/v1/timertriggers'].map((p) => json(scoped(p)))),
    [session.namespace()],
    10_000,
  );
  return (
    <main id="content">
      <Heading>Triggers</Heading>
      <Problem error={all.error} />
      {all.data && <TriggerTables http={all.data[0]} mq={all.data[1]} timers={all.data[2]} />}
    </main>
  );
}

function EnvironmentsPage() {
  const list = useLoad(() => json('/v1/environments'), [], 5_000);
  return (
    <main id="content">
      <Heading>Environments</Heading>
      <Problem error={list.error} />
      {list.data && (
        <Table
          caption="Environments and their pools of generic workers"
          empty="No environments: wasm functions need none; Python, Node.js and Java ones do."
          columns={['Name', 'Runtime', 'Pool size', 'Idle workers', 'Isolation']}
          rows={list.data.map((e) => [e.metadata.name, e.spec.runtime, e.spec.poolsize, e.idle_workers ?? '—', e.spec.isolation ?? 'default'])}
        />
      )}
    </main>
  );
}

function NodesPage() {
  const list = useLoad(() => json('/v1/nodes'), [], 5_000);
  return (
    <main id="content">
      <Heading>Nodes</Heading>
      <Problem error={list.error} />
      {list.data && (
        <Table
          caption={list.data.length === 1 ? 'One node (start more with flare server --cluster)' : `${list.data.length} nodes`}
          columns={['Name', 'Address', 'Version', 'Functions warm', 'Busy', 'Last heartbeat']}
          rows={list.data.map((n) => [n.name, <code>{n.address}</code>, n.version, n.functionsWarm, n.busy, time(n.heartbeat)])}
        />
      )}
    </main>
  );
}

// ---- the frame ----------------------------------------------------------

function Namespaces({ who, onChange }) {
  const list = useLoad(() => (who.namespace === '*' ? json('/v1/namespaces') : Promise.resolve([])), [who.namespace]);
  if (who.namespace !== '*') return <span class="namespace">namespace {who.namespace}</span>;
  const names = (list.data || []).map((n) => n.metadata.name);
  return (
    <span class="namespace">
      <label for="namespace">Namespace</label>{' '}
      <select id="namespace" value={session.namespace()} onChange={(e) => onChange(e.currentTarget.value)}>
        {(names.length ? names : ['default']).map((n) => (
          <option>{n}</option>
        ))}
      </select>
    </span>
  );
}

function Console({ who, onSignOut }) {
  const route = useRoute();
  const [, setNamespace] = useState(session.namespace());
  const [page, name] = route;
  let body;
  if (page === 'functions' && name) body = <FunctionPage key={name} name={name} who={who} />;
  else if (page === 'functions') body = <FunctionsPage />;
  else if (page === 'invocations') body = <InvocationsPage who={who} />;
  else if (page === 'triggers') body = <TriggersPage />;
  else if (page === 'environments') body = <EnvironmentsPage />;
  else if (page === 'nodes') body = <NodesPage />;
  else
    body = (
      <main id="content">
        <Heading>Not found</Heading>
        <p>
          There is no page “{route.join('/')}”. <a href="#/functions">Back to the functions.</a>
        </p>
      </main>
    );
  useEffect(() => {
    document.title = `${name || PAGES.find(([p]) => p === page)?.[1] || 'Flare'} · Flare console`;
  }, [page, name]);
  return (
    <>
      <a class="skip" href="#content" onClick={(e) => { e.preventDefault(); document.getElementById('content')?.querySelector('h1')?.focus(); }}>
        Skip to content
      </a>
      <header>
        <span class="brand">Flare</span>
        <nav aria-label="Console">
          <ul>
            {PAGES.map(([p, label]) => (
              <li>
                <a href={`#/${p}`} aria-current={p === page ? 'page' : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <Namespaces
          who={who}
          onChange={(n) => {
            session.setNamespace(n);
            setNamespace(n);
          }}
        />
        <span class="who">
          {who.name} ({who.role})
        </span>
        <button type="button" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      <div key={session.namespace()}>{body}</div>
    </>
  );
}

function App() {
  const [who, setWho] = useState(null);
  const [checking, setChecking] = useState(Boolean(session.token()));
  const [reason, setReason] = useState(null);
  useEffect(() => {
    if (!session.token()) return;
    json('/v1/whoami').then(
      (w) => signedIn(w),
      (e) => {
        session.signOut();
        setReason(e.status === 401 ? 'Your session ended: sign in again.' : e.message);
        setChecking(false);
      },
    );
  }, []);
  const signedIn = (w) => {
    if (w.namespace !== '*' || !sessionStorage.getItem('flare.namespace')) session.setNamespace(w.namespace === '*' ? 'default' : w.namespace);
    setWho(w);
    setChecking(false);
  };
  if (checking) return <p class="loading">Checking your token…</p>;
  if (!who) return <SignIn onSignedIn={signedIn} reason={reason} />;
  return (
    <Console
      who={who}
      onSignOut={() => {
        session.signOut();
        setWho(null);
        setReason(null);
        location.hash = '';
      }}
    />
  );
}

const root = document.getElementById('app');
root.textContent = '';
render(<App />, root);
