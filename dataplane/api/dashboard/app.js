// Zori dashboard: renders the reports API (/api/v1), nothing else. Plain JavaScript, no build
// step, no dependencies. Every number on screen is a number the API returned; money is shown
// per currency with the API's own `formatted` decimal string, never summed across currencies.
'use strict';

(() => {
  const SVG = 'http://www.w3.org/2000/svg';
  const LOCALE = 'en-US';
  const FILTERS = ['channel', 'source', 'country', 'device'];
  const VIEWS = [
    ['overview', 'Overview'],
    ['attribution', 'Attribution'],
    ['models', 'Models'],
    ['spend', 'Spend'],
    ['mrr', 'MRR'],
    ['cohorts', 'Cohorts'],
    ['funnel', 'Funnel'],
    ['journey', 'Customers & journeys'],
    ['pages', 'Pages'],
    ['events', 'Events'],
    ['countries', 'Countries'],
    ['devices', 'Devices'],
  ];
  const DIMENSIONS = [
    ['channel', 'Channel'],
    ['source', 'Source'],
    ['medium', 'Medium'],
    ['campaign', 'Campaign'],
    ['referrer', 'Referrer'],
    ['landing_page', 'Landing page'],
  ];
  const PRESETS = { today: 1, '7d': 7, '30d': 30, '90d': 90, '365d': 365 };
  const LIVE_EVERY_MS = 30000;

  // ---------- DOM helpers (text only: API values never become HTML) ----------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.setAttribute('class', v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  const $ = (id) => document.getElementById(id);

  // ---------- Formatting ----------

  const intFmt = new Intl.NumberFormat(LOCALE);
  const pctFmt = new Intl.NumberFormat(LOCALE, { style: 'percent', maximumFractionDigits: 2 });
  const compactFmt = new Intl.NumberFormat(LOCALE, { notation: 'compact', maximumFractionDigits: 1 });

  const int = (n) => intFmt.format(n);
  const pct = (r) => (r === null || r === undefined ? '—' : pctFmt.format(r));

  function decimalsOf(formatted) {
    const i = String(formatted).indexOf('.');
    return i < 0 ? 0 : String(formatted).length - i - 1;
  }

  // `formatted` is the API's decimal string with the currency's own number of decimals
  // ("99.00" usd, "500" jpy, "1.234" kwd); Intl adds the symbol and grouping.
  function money(currency, formatted) {
    const d = decimalsOf(formatted);
    try {
      return new Intl.NumberFormat(LOCALE, {
        style: 'currency',
        currency: currency.toUpperCase(),
        minimumFractionDigits: d,
        maximumFractionDigits: d,
      }).format(Number(formatted));
    } catch (_) {
      return `${formatted} ${currency.toUpperCase()}`;
    }
  }

  // A minor-unit amount of `currency`, for chart axes only (decimals from a sample).
  function moneyMinor(currency, minor, decimals, compact) {
    const value = minor / 10 ** decimals;
    try {
      return new Intl.NumberFormat(LOCALE, {
        style: 'currency',
        currency: currency.toUpperCase(),
        notation: compact ? 'compact' : 'standard',
        maximumFractionDigits: compact ? 1 : decimals,
      }).format(value);
    } catch (_) {
      return `${value} ${currency.toUpperCase()}`;
    }
  }

  const moneyLines = (list) =>
    list && list.length
      ? list.map((m) => h('span', { class: 'money-line', 'data-currency': m.currency }, money(m.currency, m.formatted)))
      : [h('span', { class: 'muted' }, '—')];

  const label = (pairs, key) => (pairs.find(([k]) => k === key) || [key, key])[1];
  const channelLabel = (c) => String(c || '').replace(/_/g, ' ').replace(/^./, (x) => x.toUpperCase());

  const dateFmt = new Intl.DateTimeFormat(LOCALE, { month: 'short', day: 'numeric', timeZone: 'UTC' });
  const dateTimeFmt = new Intl.DateTimeFormat(LOCALE, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
    hour12: false, timeZone: 'UTC',
  });
  const shortTimeFmt = new Intl.DateTimeFormat(LOCALE, {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false, timeZone: 'UTC',
  });
  const shortWhen = (iso) => shortTimeFmt.format(new Date(iso));
  function duration(ms) {
    const sec = Math.round(ms / 1000);
    if (sec < 60) return `${sec} s`;
    const min = Math.floor(sec / 60);
    if (min < 60) return `${min} min ${sec % 60} s`;
    return `${Math.floor(min / 60)} h ${min % 60} min`;
  }
  const day = (iso) => dateFmt.format(new Date(`${iso}T00:00:00Z`));
  const when = (iso) => `${dateTimeFmt.format(new Date(iso))} UTC`;

  // A relative change against the previous period; `current` tells "new" from "nothing".
  function change(value, current) {
    if (value === null || value === undefined) {
      return current
        ? h('span', { class: 'change none', title: 'Nothing in the previous period to compare with' }, 'new')
        : h('span', { class: 'change none' }, '—');
    }
    if (Math.abs(value) < 0.0005) return h('span', { class: 'change flat' }, '± 0%');
    const cls = value > 0 ? 'up' : 'down';
    const arrow = value > 0 ? '▲' : '▼';
    return h('span', { class: `change ${cls}`, 'data-change': value }, `${arrow} ${pctFmt.format(Math.abs(value))}`);
  }

  // ---------- URL state ----------

  const todayUtc = () => new Date().toISOString().slice(0, 10);
  function shiftDays(iso, n) {
    const d = new Date(`${iso}T00:00:00Z`);
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }

  function state() {
    const q = new URLSearchParams(location.search);
    const view = VIEWS.some(([v]) => v === q.get('view')) ? q.get('view') : 'overview';
    let range = q.get('range');
    let from = q.get('from');
    let to = q.get('to');
    if (from || to) range = 'custom';
    else {
      if (!PRESETS[range]) range = '30d';
      to = todayUtc();
      from = shiftDays(to, -(PRESETS[range] - 1));
    }
    if (!from) from = shiftDays(to, -29);
    if (!to) to = todayUtc();
    const filters = {};
    for (const f of FILTERS) if (q.get(f)) filters[f] = q.get(f);
    return {
      q, view, range, from, to, filters,
      dimension: DIMENSIONS.some(([d]) => d === q.get('dimension')) ? q.get('dimension') : 'channel',
      sort: q.get('sort'),
      dir: q.get('dir') === 'asc' ? 'asc' : 'desc',
      currency: q.get('currency'),
      visitor: q.get('visitor'),
      // Payments counted: '' the API's default (live; test mode while nothing is live),
      // 'true' live, 'false' test mode, 'all' both.
      livemode: ['true', 'false', 'all'].includes(q.get('livemode')) ? q.get('livemode') : '',
    };
  }

  // The URL with `patch` applied (null removes a key); keeps everything else.
  function href(patch) {
    const q = new URLSearchParams(location.search);
    for (const [k, v] of Object.entries(patch)) {
      if (v === null || v === undefined || v === '') q.delete(k);
      else q.set(k, v);
    }
    const text = q.toString();
    return text ? `/?${text}` : '/';
  }

  function go(patch, replace) {
    const url = href(patch);
    if (url === location.pathname + location.search) return;
    if (replace) history.replaceState(null, '', url);
    else history.pushState(null, '', url);
    render();
  }

  // Query string for the API: the period and the filters.
  function apiParams(st, extra) {
    const p = new URLSearchParams({ from: st.from, to: st.to });
    for (const [k, v] of Object.entries(st.filters)) p.set(k, v);
    for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
    return p;
  }

  // Query string for a revenue report: apiParams plus the live / test-mode toggle.
  function moneyParams(st, extra) {
    const p = apiParams(st, extra);
    if (st.livemode) p.set('livemode', st.livemode);
    return p;
  }

  // ---------- API ----------

  class Unauthorized extends Error {}

  async function api(path, params) {
    const url = `/api/v1/${path}${params ? `?${params}` : ''}`;
    const response = await fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (response.status === 401) throw new Unauthorized('signed out');
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
      throw new Error(message);
    }
    return body;
  }

  // ---------- Sign-in ----------

  function showSignin(message) {
    stopLive();
    $('app').hidden = true;
    $('signin').hidden = false;
    const err = $('signin-error');
    err.hidden = !message;
    err.textContent = message || '';
    $('token').focus();
  }

  function showApp() {
    $('signin').hidden = true;
    $('app').hidden = false;
    render();
    startLive();
  }

  async function signIn(event) {
    event.preventDefault();
    const token = $('token').value;
    const button = $('signin-submit');
    button.disabled = true;
    try {
      const response = await fetch('/session', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ token }),
      });
      if (response.ok) {
        $('token').value = '';
        showApp();
        return;
      }
      let message = `Sign-in failed (HTTP ${response.status}).`;
      try {
        const body = await response.json();
        if (body && body.error && body.error.message) message = body.error.message;
      } catch (_) { /* keep the generic message */ }
      showSignin(message);
    } catch (_) {
      showSignin('Could not reach Zori. Check the connection and try again.');
    } finally {
      button.disabled = false;
    }
  }

  async function signOut() {
    try { await fetch('/session/logout', { method: 'POST', credentials: 'same-origin' }); } catch (_) { /* ignore */ }
    showSignin('');
  }

  // ---------- Live count ----------

  let liveTimer = null;
  function liveParams(st) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(st.filters)) p.set(k, v);
    return p;
  }
  async function refreshLive() {
    const p = liveParams(state());
    try {
      const live = await api('live', p);
      if (liveParams(state()).toString() !== p.toString()) return; // the filters moved on
      $('live-count').textContent = int(live.visitors);
      $('live').dataset.live = String(live.visitors);
      $('live').dataset.query = p.toString();
    } catch (e) {
      if (e instanceof Unauthorized) showSignin('Your session has ended. Sign in again.');
    }
  }
  function startLive() {
    stopLive();
    refreshLive();
    liveTimer = setInterval(refreshLive, LIVE_EVERY_MS);
  }
  function stopLive() {
    if (liveTimer) clearInterval(liveTimer);
    liveTimer = null;
  }

  // ---------- Chrome: nav and filter bar ----------

  function renderChrome(st) {
    const nav = $('nav');
    nav.replaceChildren(
      ...VIEWS.map(([v, text]) =>
        h('a', {
          href: href({ view: v === 'overview' ? null : v, sort: null, dir: null, visitor: null }),
          'data-view': v,
          'aria-current': st.view === v ? 'page' : null,
          onclick: navClick,
        }, text)),
    );
    $('range').value = st.range;
    $('from').value = st.from;
    $('to').value = st.to;
    $('from-field').hidden = st.range !== 'custom';
    $('to-field').hidden = st.range !== 'custom';
    $('f-channel').value = st.filters.channel || '';
    $('f-source').value = st.filters.source || '';
    $('f-country').value = st.filters.country || '';
    $('f-device').value = st.filters.device || '';
    $('f-livemode').value = st.livemode === 'true' ? '' : st.livemode;
    $('clear-filters').hidden = Object.keys(st.filters).length === 0;
    $('period').textContent = st.from === st.to ? day(st.from) : `${day(st.from)} – ${day(st.to)}, ${st.to.slice(0, 4)} (UTC)`;
  }

  function navClick(event) {
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    history.pushState(null, '', event.currentTarget.getAttribute('href'));
    render();
  }

  function wireFilters() {
    $('range').addEventListener('change', () => {
      const v = $('range').value;
      if (v === 'custom') {
        const st = state();
        go({ range: null, from: st.from, to: st.to });
      } else {
        go({ range: v === '30d' ? null : v, from: null, to: null });
      }
    });
    const dates = () => {
      const from = $('from').value;
      const to = $('to').value;
      if (from && to) go({ range: null, from, to });
    };
    $('from').addEventListener('change', dates);
    $('to').addEventListener('change', dates);
    $('f-channel').addEventListener('change', () => go({ channel: $('f-channel').value }));
    $('f-device').addEventListener('change', () => go({ device: $('f-device').value }));
    $('f-livemode').addEventListener('change', () => go({ livemode: $('f-livemode').value }));
    $('f-source').addEventListener('change', () => go({ source: $('f-source').value.trim() }));
    $('f-country').addEventListener('change', () => {
      const v = $('f-country').value.trim();
      go({ country: /^[a-z]{2}$/i.test(v) ? v.toUpperCase() : v });
    });
    $('clear-filters').addEventListener('click', () => go({ channel: null, source: null, country: null, device: null }));
    $('signout').addEventListener('click', signOut);
    $('signin-form').addEventListener('submit', signIn);
    $('home').addEventListener('click', navClick);
    window.addEventListener('popstate', render);
    let resizeTimer = null;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (lastChart) lastChart(); }, 150);
    });
  }

  // ---------- Rendering ----------

  let generation = 0;
  let lastChart = null;

  async function render() {
    const st = state();
    const mine = ++generation;
    renderChrome(st);
    // The live badge follows the filters at once, not at its next tick.
    if (liveTimer && $('live').dataset.query !== liveParams(st).toString()) refreshLive();
    const view = $('view');
    view.dataset.view = st.view;
    delete view.dataset.ready;
    lastChart = null;
    if (!view.firstChild || view.dataset.rendered !== st.view) {
      view.replaceChildren(h('div', { class: 'card loading' }, 'Loading…'));
    }
    view.setAttribute('aria-busy', 'true');
    try {
      const content = await VIEW_RENDERERS[st.view](st);
      if (mine !== generation) return;
      view.replaceChildren(...[content].flat().filter(Boolean));
      addCsvButtons([...view.children], st.view);
      view.dataset.rendered = st.view;
      if (lastChart) lastChart();
    } catch (e) {
      if (mine !== generation) return;
      if (e instanceof Unauthorized) {
        showSignin('Your session has ended. Sign in again.');
        return;
      }
      view.replaceChildren(h('div', { class: 'card panel error', role: 'alert' }, `Could not load this view: ${e.message}`));
    }
    view.removeAttribute('aria-busy');
    // Tests and people can tell when the view shows the URL it is at.
    view.dataset.ready = location.search;
  }

  function panel(title, right, ...body) {
    return h('section', { class: 'card panel' },
      h('div', { class: 'section-head' }, h('h2', {}, title), right || null),
      ...body);
  }

  function filterNote(st) {
    const active = Object.entries(st.filters);
    if (!active.length) return null;
    return h('div', { class: 'notice', id: 'filter-note' },
      'Filtered by ',
      active.map(([k, v], i) => [i ? ', ' : '', `${k} = `, h('strong', {}, v)]),
      '. Channel and source match the first touch; country and device the visitor’s latest. Unattributed payments are left out while a filter is set.');
  }

  // ---------- Overview ----------

  async function overviewView(st) {
    const [ov, ts] = await Promise.all([
      api('overview', moneyParams(st, { compare: 'previous' })),
      api('timeseries', moneyParams(st)),
    ]);
    const ch = ov.change || {};
    const changeOf = (list, currency) => {
      const c = (list || []).find((x) => x.currency === currency);
      return c ? c.change : null;
    };
    const moneyKpi = (list, changes) =>
      list.length
        ? list.map((m) => h('div', { class: 'change-line', 'data-currency': m.currency },
          h('span', { class: 'money-line' }, money(m.currency, m.formatted)),
          change(changeOf(changes, m.currency), m.net !== undefined ? m.net : m.amount)))
        : [h('span', { class: 'muted' }, '—')];
    const kpi = (key, title, valueEl, changeEl, sub) =>
      h('div', { class: 'card kpi', 'data-kpi': key },
        h('div', { class: 'kpi-label' }, title),
        valueEl,
        changeEl || null,
        sub ? h('div', { class: 'kpi-sub' }, sub) : null);
    const unattributed = ov.unattributed && ov.unattributed.payments
      ? ['incl. ', ov.unattributed.revenue.map((m, i) => [i ? ', ' : '', money(m.currency, m.formatted)]), ' unattributed']
      : null;
    const prevText = ov.previous ? `vs ${day(ov.previous.from)} – ${day(ov.previous.to)}` : '';
    const kpis = h('div', { class: 'kpis' },
      kpi('visitors', 'Visitors', h('div', { class: 'kpi-value', 'data-value': ov.visitors }, int(ov.visitors)), change(ch.visitors, ov.visitors), prevText),
      kpi('customers', 'Customers', h('div', { class: 'kpi-value', 'data-value': ov.customers }, int(ov.customers)), change(ch.customers, ov.customers),
        `${int(ov.payments)} payment${ov.payments === 1 ? '' : 's'}`),
      kpi('revenue', 'Revenue', h('div', { class: 'kpi-value small' }, moneyKpi(ov.revenue, ch.revenue)), null, unattributed),
      kpi('conversion_rate', 'Conversion rate',
        h('div', { class: 'kpi-value', 'data-value': ov.conversion_rate === null ? '' : ov.conversion_rate }, pct(ov.conversion_rate)),
        change(ch.conversion_rate, ov.conversion_rate), 'customers ÷ visitors'),
      kpi('revenue_per_visitor', 'Revenue per visitor', h('div', { class: 'kpi-value small' }, moneyKpi(ov.revenue_per_visitor, ch.revenue_per_visitor))),
    );
    const modeNote = ov.livemode === false
      ? h('div', { class: 'notice', id: 'mode-note' },
        'Test-mode payments', st.livemode ? '.' : ': there is no live payment yet. Live payments replace them here as soon as the first one arrives.')
      : null;
    return [modeNote, filterNote(st), kpis, chartPanel(st, ts)];
  }

  function chartPanel(st, ts) {
    const currencies = ts.currencies || [];
    const totals = {};
    for (const d of ts.days) for (const m of d.revenue) totals[m.currency] = (totals[m.currency] || 0) + m.payments;
    let currency = st.currency && currencies.includes(st.currency) ? st.currency : null;
    if (!currency && currencies.length) currency = currencies.slice().sort((a, b) => (totals[b] || 0) - (totals[a] || 0))[0];
    const picker = currencies.length > 1
      ? h('div', { class: 'seg', role: 'group', 'aria-label': 'Revenue currency' },
        currencies.map((c) => h('button', {
          type: 'button', 'aria-pressed': c === currency ? 'true' : 'false',
          onclick: () => go({ currency: c }, true),
        }, c.toUpperCase())))
      : null;
    const legend = h('div', { class: 'legend' },
      h('span', {}, h('span', { class: 'swatch visitors' }), 'Visitors'),
      currency ? h('span', {}, h('span', { class: 'swatch revenue' }), `Revenue (${currency.toUpperCase()}, net)`) : null,
      picker);
    const holder = h('div', { class: 'chart-wrap', id: 'chart' });
    lastChart = () => drawChart(holder, ts, currency);
    return panel('Visitors and revenue per day', legend, holder);
  }

  // A round step for `ticks` grid lines covering `max` (integers only when `whole`).
  function niceStep(max, ticks, whole) {
    const raw = Math.max(max, whole ? ticks : 0) / ticks;
    if (raw <= 0) return 1;
    const p = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((x) => x >= raw) || 10 * p;
    return whole ? Math.max(1, Math.ceil(step)) : step;
  }

  function drawChart(holder, ts, currency) {
    const width = Math.max(holder.clientWidth || 900, 320);
    const height = 280;
    const m = { top: 14, right: 64, bottom: 28, left: 44 };
    const w = width - m.left - m.right;
    const ih = height - m.top - m.bottom;
    const days = ts.days;
    const n = days.length;
    const visitors = days.map((d) => d.visitors);
    const net = days.map((d) => {
      const r = d.revenue.find((x) => x.currency === currency);
      return r ? r.net : 0;
    });
    const sample = days.flatMap((d) => d.revenue).find((x) => x.currency === currency);
    const decimals = sample ? decimalsOf(sample.formatted) : 2;
    const TICKS = 4;
    const vMax = niceStep(Math.max(...visitors, 0), TICKS, true) * TICKS;
    // Revenue ticks are round in the currency's major unit.
    const unit = 10 ** decimals;
    const rMax = niceStep(Math.max(...net, 0) / unit || 1, TICKS, false) * TICKS * unit;
    const step = w / Math.max(n, 1);
    const x = (i) => m.left + step * i + step / 2;
    const yV = (v) => m.top + ih - (v / vMax) * ih;
    const yR = (v) => m.top + ih - (v / rMax) * ih;

    const svg = s('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
      'aria-label': 'Visitors (bars) and revenue (line) per day' });
    const grid = s('g', { class: 'grid' });
    const axis = s('g', { class: 'axis' });
    for (let i = 0; i <= TICKS; i += 1) {
      const y = m.top + ih - (ih * i) / TICKS;
      grid.append(s('line', { x1: m.left, x2: m.left + w, y1: y, y2: y }));
      axis.append(s('text', { x: m.left - 8, y: y + 4, 'text-anchor': 'end' }, compactFmt.format((vMax * i) / TICKS)));
      if (currency) {
        axis.append(s('text', { x: m.left + w + 8, y: y + 4, 'text-anchor': 'start' },
          moneyMinor(currency, (rMax * i) / TICKS, decimals, true)));
      }
    }
    const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(w / 70))));
    days.forEach((d, i) => {
      if (i % every === 0 || i === n - 1) {
        if (i === n - 1 && i % every !== 0 && i % every < every / 2) return;
        axis.append(s('text', { x: x(i), y: height - 8, 'text-anchor': 'middle' }, day(d.date)));
      }
    });
    svg.append(grid, axis);

    const bars = s('g', {});
    const barW = Math.max(1, Math.min(28, step * 0.62));
    days.forEach((d, i) => {
      const r = d.revenue.find((z) => z.currency === currency);
      const tip = `${d.date}: ${int(d.visitors)} visitor${d.visitors === 1 ? '' : 's'}` +
        (r ? `, ${money(r.currency, r.formatted)} from ${int(r.payments)} payment${r.payments === 1 ? '' : 's'}` : '');
      const g = s('g', { class: 'day', 'data-date': d.date },
        s('title', {}, tip),
        s('rect', { class: 'hit', x: m.left + step * i, y: m.top, width: step, height: ih }),
        s('rect', { class: 'bar', x: x(i) - barW / 2, y: yV(d.visitors), width: barW, height: Math.max(0, m.top + ih - yV(d.visitors)), rx: Math.min(3, barW / 3) }));
      bars.append(g);
    });
    svg.append(bars);

    if (currency && n) {
      const pts = net.map((v, i) => `${x(i).toFixed(1)},${yR(v).toFixed(1)}`);
      svg.append(s('path', { class: 'area', d: `M${x(0).toFixed(1)},${m.top + ih} L${pts.join(' L')} L${x(n - 1).toFixed(1)},${m.top + ih} Z` }));
      svg.append(s('polyline', { class: 'line', points: pts.join(' ') }));
      net.forEach((v, i) => {
        if (v !== 0) svg.append(s('circle', { class: 'point', cx: x(i), cy: yR(v), r: n > 60 ? 2.5 : 3.5 }));
      });
    }
    holder.replaceChildren(svg);
  }

  // ---------- Sortable tables ----------

  // columns: [{key, title, value(row) → sortable, cell(row) → node/text, numeric}]
  function table(st, id, columns, rows, opts) {
    const o = opts || {};
    const defaultSort = o.defaultSort || null;
    const sortKey = columns.some((c) => c.key === st.sort) ? st.sort : defaultSort;
    const col = columns.find((c) => c.key === sortKey);
    let sorted = rows.slice();
    if (col && (st.sort || o.sortDefault)) {
      const dir = st.sort ? st.dir : (o.defaultDir || 'desc');
      const f = dir === 'asc' ? 1 : -1;
      sorted.sort((a, b) => {
        const va = col.value(a);
        const vb = col.value(b);
        if (va === vb) return 0;
        if (va === null || va === undefined) return 1;
        if (vb === null || vb === undefined) return -1;
        return (typeof va === 'string' ? va.localeCompare(vb) : va - vb) * f;
      });
    }
    const activeDir = st.sort ? st.dir : (o.defaultDir || 'desc');
    const head = h('tr', {}, columns.map((c) => {
      const active = st.sort === c.key || (!st.sort && o.sortDefault && c.key === defaultSort);
      const nextDir = active && activeDir === 'desc' ? 'asc' : 'desc';
      return h('th', { scope: 'col', 'data-col': c.key, class: c.left ? 'left' : null, 'aria-sort': active ? (activeDir === 'asc' ? 'ascending' : 'descending') : null },
        c.value ? h('button', { type: 'button', class: 'sort', title: `Sort by ${c.title}`, onclick: () => go({ sort: c.key, dir: nextDir }, true) }, c.title) : c.title);
    }));
    const body = h('tbody', {}, sorted.map((r) =>
      h('tr', { 'data-row': o.rowKey ? o.rowKey(r) : null }, columns.map((c) => h('td', { 'data-col': c.key, class: c.left ? 'left' : null }, c.cell(r))))));
    if (o.extraRows) body.append(...o.extraRows);
    const foot = o.footer ? h('tfoot', {}, o.footer) : null;
    if (!rows.length && !(o.extraRows && o.extraRows.length)) {
      return h('div', { class: 'empty' }, o.empty || 'Nothing in this period.');
    }
    return h('div', { class: 'table-wrap' }, h('table', { id }, h('thead', {}, head), body, foot));
  }

  const netOf = (list, currency) => {
    const m = (list || []).find((x) => x.currency === currency);
    return m ? m.net : 0;
  };
  const shareOf = (list, currency) => {
    const m = (list || []).find((x) => x.currency === currency);
    return m ? m.share : null;
  };

  function shareCell(list) {
    if (!list || !list.length) return h('span', { class: 'muted' }, '—');
    return list.map((sh) => h('span', { class: 'money-line share', 'data-currency': sh.currency },
      sh.share === null ? '—' : pct(sh.share),
      h('span', { class: 'share-bar' }, h('span', { style: null, 'data-w': sh.share || 0 }))));
  }

  // Bar widths are set through the CSSOM (allowed by the CSP, unlike inline style attributes).
  function sizeBars(root) {
    for (const el of root.querySelectorAll('[data-w]')) el.style.width = `${Math.round(Number(el.dataset.w) * 100)}%`;
  }

  // A breakdown (attribution by dimension, countries, devices): same shape from the API.
  function breakdownTable(st, report, valueTitle, filterKey) {
    const primary = (report.totals.revenue[0] || {}).currency || 'usd';
    const valueCell = (r) => {
      const text = valueTitle === 'Channel' ? channelLabel(r.value) : r.value;
      if (!filterKey || st.filters[filterKey] === r.value) return text;
      return h('button', { type: 'button', class: 'link', title: `Only ${r.value}`, onclick: () => go({ [filterKey]: r.value }) }, text);
    };
    const columns = [
      { key: 'value', title: valueTitle, value: (r) => r.value, cell: valueCell },
      { key: 'visitors', title: 'Visitors', value: (r) => r.visitors, cell: (r) => int(r.visitors) },
      { key: 'customers', title: 'Customers', value: (r) => r.customers, cell: (r) => int(r.customers) },
      { key: 'conversion_rate', title: 'Conversion', value: (r) => r.conversion_rate, cell: (r) => pct(r.conversion_rate) },
      { key: 'revenue', title: 'Revenue', value: (r) => netOf(r.revenue, primary), cell: (r) => moneyLines(r.revenue) },
      { key: 'revenue_per_visitor', title: 'Revenue / visitor', value: (r) => {
        const m = (r.revenue_per_visitor || []).find((x) => x.currency === primary);
        return m ? m.amount : 0;
      }, cell: (r) => (r.revenue_per_visitor && r.revenue_per_visitor.length
        ? r.revenue_per_visitor.map((m) => h('span', { class: 'money-line', 'data-currency': m.currency }, money(m.currency, m.formatted)))
        : h('span', { class: 'muted' }, '—')) },
      { key: 'revenue_share', title: 'Share of revenue', value: (r) => shareOf(r.revenue_share, primary), cell: (r) => shareCell(r.revenue_share) },
    ];
    const u = report.unattributed;
    const unattributedRow = h('tr', { class: 'unattributed', 'data-row': '(unattributed)', title: 'Payments linked to no visitor or identified user: never counted as direct.' },
      h('td', { 'data-col': 'value' }, 'Unattributed'),
      h('td', { 'data-col': 'visitors' }, '—'),
      h('td', { 'data-col': 'customers' }, int(u.customers)),
      h('td', { 'data-col': 'conversion_rate' }, '—'),
      h('td', { 'data-col': 'revenue' }, moneyLines(u.revenue)),
      h('td', { 'data-col': 'revenue_per_visitor' }, '—'),
      h('td', { 'data-col': 'revenue_share' }, shareCell(u.revenue_share)));
    const t = report.totals;
    const footer = h('tr', { 'data-row': '(total)' },
      h('td', { 'data-col': 'value' }, 'Total'),
      h('td', { 'data-col': 'visitors' }, int(t.visitors)),
      h('td', { 'data-col': 'customers' }, int(t.customers)),
      h('td', { 'data-col': 'conversion_rate' }, pct(t.conversion_rate)),
      h('td', { 'data-col': 'revenue' }, moneyLines(t.revenue)),
      h('td', { 'data-col': 'revenue_per_visitor' }, t.revenue_per_visitor.length
        ? t.revenue_per_visitor.map((m) => h('span', { class: 'money-line' }, money(m.currency, m.formatted))) : '—'),
      h('td', { 'data-col': 'revenue_share' }, t.revenue.length ? '100%' : '—'));
    const el = table(st, 'breakdown', columns, report.rows, {
      rowKey: (r) => r.value,
      extraRows: [unattributedRow],
      footer,
      empty: 'No visitors or payments in this period.',
    });
    sizeBars(el);
    return el;
  }

  async function attributionView(st) {
    const report = await api('attribution', moneyParams(st, { dimension: st.dimension }));
    const tabs = h('div', { class: 'seg', role: 'group', 'aria-label': 'Dimension' },
      DIMENSIONS.map(([d, text]) => h('button', {
        type: 'button', 'data-dimension': d, 'aria-pressed': d === st.dimension ? 'true' : 'false',
        onclick: () => go({ dimension: d === 'channel' ? null : d, sort: null, dir: null }),
      }, text)));
    const filterKey = st.dimension === 'channel' ? 'channel' : st.dimension === 'source' ? 'source' : null;
    return [
      filterNote(st),
      panel(`Revenue by first-touch ${label(DIMENSIONS, st.dimension).toLowerCase()}`, tabs,
        h('p', { class: 'muted' }, 'Each payment is credited to the first touch of the visitor (or identified user) who paid. Visitors are counted by their own first touch.'),
        breakdownTable(st, report, label(DIMENSIONS, st.dimension), filterKey)),
    ];
  }

  async function countriesView(st) {
    const report = await api('countries', moneyParams(st));
    return [filterNote(st), panel('Countries', h('span', { class: 'muted' }, 'by the visitor’s latest country'), breakdownTable(st, report, 'Country', 'country'))];
  }

  async function devicesView(st) {
    const report = await api('devices', moneyParams(st));
    return [filterNote(st), panel('Devices', h('span', { class: 'muted' }, 'by the visitor’s latest device'), breakdownTable(st, report, 'Device', 'device'))];
  }

  async function pagesView(st) {
    const report = await api('pages', apiParams(st, { limit: 200 }));
    const columns = [
      { key: 'path', title: 'Page', value: (r) => r.path, cell: (r) => h('span', { class: 'mono' }, r.path) },
      { key: 'views', title: 'Views', value: (r) => r.views, cell: (r) => int(r.views) },
      { key: 'visitors', title: 'Visitors', value: (r) => r.visitors, cell: (r) => int(r.visitors) },
    ];
    return [filterNote(st), panel('Top pages', h('span', { class: 'muted' }, 'page views'),
      table(st, 'pages', columns, report.rows, { rowKey: (r) => r.path, empty: 'No page views in this period.' }))];
  }

  async function eventsView(st) {
    const report = await api('events', apiParams(st));
    const custom = report.rows.filter((r) => !r.automatic);
    const auto = report.rows.filter((r) => r.automatic);
    const columns = [
      { key: 'name', title: 'Event', value: (r) => r.name, cell: (r) => h('span', { class: 'mono' }, r.name) },
      { key: 'count', title: 'Count', value: (r) => r.count, cell: (r) => int(r.count) },
      { key: 'visitors', title: 'Visitors', value: (r) => r.visitors, cell: (r) => int(r.visitors) },
    ];
    return [filterNote(st),
      panel('Custom events', h('span', { class: 'muted' }, 'sent with ZoriHQ.track(name, properties)'),
        table(st, 'custom-events', columns, custom, { rowKey: (r) => r.name, empty: 'No custom events in this period.' })),
      panel('Automatic events', h('span', { class: 'muted' }, 'sent by the tracker by itself'),
        table(st, 'auto-events', columns, auto, { rowKey: (r) => r.name, empty: 'No events in this period.' }))];
  }

  // ---------- Customers & journeys ----------

  async function journeyView(st) {
    const search = h('form', { class: 'search-row', id: 'journey-search', onsubmit: (e) => {
      e.preventDefault();
      const v = e.currentTarget.elements.visitor.value.trim();
      if (v) go({ view: 'journey', visitor: v });
    } },
    h('input', { type: 'text', name: 'visitor', placeholder: 'Visitor id (vis_…)', value: st.visitor || '', spellcheck: 'false', autocomplete: 'off', 'aria-label': 'Visitor id' }),
    h('button', { type: 'submit' }, 'Show journey'),
    st.visitor ? h('a', { href: href({ visitor: null }), onclick: navClick }, 'All customers') : null);
    if (!st.visitor) {
      const report = await api('customers', moneyParams(st, { limit: 100 }));
      const who = (c) => c.fullname || c.app_id || c.visitor_id || 'Payer known by email only';
      const columns = [
        { key: 'customer', title: 'Customer', value: (c) => who(c), cell: (c) => (c.visitor_id
          ? h('a', { href: href({ view: 'journey', visitor: c.visitor_id, sort: null, dir: null }), onclick: navClick, 'data-visitor': c.visitor_id }, who(c))
          : h('span', { class: 'muted' }, who(c))) },
        { key: 'first_touch', title: 'First touch', left: true, value: (c) => c.source || '', cell: (c) => (c.channel
          ? h('span', { class: 'dims' }, h('span', { class: 'badge channel' }, channelLabel(c.channel)), c.source)
          : h('span', { class: 'muted' }, 'unattributed')) },
        { key: 'payments', title: 'Payments', value: (c) => c.payments, cell: (c) => int(c.payments) },
        { key: 'revenue', title: 'Revenue', value: (c) => (c.revenue[0] || {}).net || 0, cell: (c) => moneyLines(c.revenue) },
        { key: 'last_paid_at', title: 'Last payment', value: (c) => c.last_paid_at, cell: (c) => when(c.last_paid_at) },
      ];
      return [filterNote(st), panel('Customers', search,
        h('p', { class: 'muted' }, 'Payers in this period, latest payment first. Open one to see every touch, session and event before the payment.'),
        table(st, 'customers', columns, report.rows, { empty: 'No payments in this period.' }))];
    }
    const j = await api(`visitors/${encodeURIComponent(st.visitor)}/journey`);
    if (!j.known) {
      return panel('Journey', search, h('div', { class: 'empty' }, `Nothing is known about ${st.visitor} yet.`));
    }
    return [panel('Journey', search), journeyHead(j), journeyTimeline(j)];
  }

  function touchSummary(t) {
    return [
      h('span', { class: 'badge channel' }, channelLabel(t.channel)),
      h('span', {}, t.source),
      t.medium ? h('span', { class: 'muted' }, `/ ${t.medium}`) : null,
      t.campaign ? h('span', { class: 'muted' }, `· ${t.campaign}`) : null,
    ];
  }

  function journeyHead(j) {
    const v = j.visitor;
    const facts = (pairs) => h('dl', { class: 'facts' }, pairs.filter(([, val]) => val !== null && val !== undefined && val !== '')
      .map(([k, val]) => [h('dt', {}, k), h('dd', {}, val)]));
    const ft = j.first_touch;
    const paid = {};
    for (const p of j.payments) paid[p.currency] = (paid[p.currency] || 0) + 1;
    return h('div', { class: 'journey-head' },
      h('section', { class: 'card panel' }, h('h2', {}, 'Visitor'),
        facts([
          ['Visitor id', h('span', { class: 'mono' }, j.visitor_id)],
          ['First seen', v ? when(v.first_seen_at) : null],
          ['Last seen', v ? when(v.last_seen_at) : null],
          ['Country', v ? v.country : null],
          ['Device', v ? [v.device, v.browser, v.os].filter(Boolean).join(' · ') : null],
        ])),
      h('section', { class: 'card panel' }, h('h2', {}, 'Credited first touch'),
        ft ? facts([
          ['Channel', channelLabel(ft.channel)],
          ['Source', ft.source],
          ['Medium', ft.medium],
          ['Campaign', ft.campaign],
          ['Referrer', ft.referrer_host],
          ['Landing page', h('span', { class: 'mono' }, ft.landing_page)],
          ['When', when(ft.occurred_at)],
        ]) : h('p', { class: 'muted' }, 'No touch recorded yet.')),
      h('section', { class: 'card panel' }, h('h2', {}, 'Identity'),
        j.identity ? facts([
          ['Name', j.identity.fullname],
          ['User id', j.identity.app_id],
          ['Visitors', j.identity.visitor_ids.join(', ')],
          ['Identified', when(j.identity.first_identified_at)],
        ]) : h('p', { class: 'muted' }, 'Not identified.')));
  }

  function journeyTimeline(j) {
    const sessions = new Map(j.sessions.map((x) => [x.session_id, x]));
    const bySession = new Map();
    for (const e of j.events) {
      if (!bySession.has(e.session_id)) bySession.set(e.session_id, []);
      bySession.get(e.session_id).push(e);
    }
    const eventItem = (e) => h('li', { 'data-event': e.name },
      h('span', { class: 'when', title: when(e.occurred_at) }, shortWhen(e.occurred_at)),
      h('span', { class: 'mono' }, e.name),
      h('span', { class: 'mono muted' }, e.click && e.click.text ? `“${e.click.text}” on ${e.page.path}` : e.page.path));
    const items = j.touches.map((t, i) => {
      const sess = sessions.get(t.session_id);
      const events = bySession.get(t.session_id) || [];
      bySession.delete(t.session_id);
      const isFirst = j.first_touch && j.first_touch.session_id === t.session_id && j.first_touch.visitor_id === t.visitor_id;
      return h('li', { class: `touch${isFirst ? ' first' : ''}`, 'data-touch': i, 'data-source': t.source },
        h('div', { class: 'touch-title' }, `Touch ${i + 1}`, touchSummary(t), isFirst ? h('span', { class: 'badge' }, 'credited') : null),
        h('div', { class: 'touch-meta' }, when(t.occurred_at), ' · landed on ', h('span', { class: 'mono' }, t.landing_page),
          t.referrer_host ? ` · from ${t.referrer_host}` : '',
          sess ? ` · ${sess.duration_ms >= 1000 ? `${duration(sess.duration_ms)}, ` : ''}${int(sess.page_views)} page view${sess.page_views === 1 ? '' : 's'}, ${int(sess.events)} event${sess.events === 1 ? '' : 's'}` : ''),
        events.length ? h('ul', { class: 'events' }, events.map(eventItem)) : null);
    });
    const rest = [...bySession.values()].flat();
    if (rest.length) {
      items.push(h('li', { class: 'touch' }, h('div', { class: 'touch-title' }, 'Other events'), h('ul', { class: 'events' }, rest.map(eventItem))));
    }
    const payments = j.payments.map((p) => h('li', { class: 'payment', 'data-payment': p.payment_id },
      h('div', { class: 'touch-title' }, 'Payment ', h('span', { class: 'payment-amount' }, money(p.currency, p.formatted)),
        p.amount_refunded ? h('span', { class: 'muted' }, `(gross ${money(p.currency, (p.amount / 10 ** decimalsOf(p.formatted)).toFixed(decimalsOf(p.formatted)))}, partly refunded)`) : null,
        p.description ? h('span', { class: 'muted' }, `· ${p.description}`) : null),
      h('div', { class: 'touch-meta' }, when(p.paid_at), ` · matched by ${p.matched_by}`, p.livemode === false ? ' · test mode' : '')));
    return h('div', { class: 'journey-body' },
      panel('Touches, sessions and events', h('span', { class: 'muted' }, `${j.touches.length} touch${j.touches.length === 1 ? '' : 'es'}, ${j.events.length}${j.events_truncated ? '+' : ''} events`),
        h('ol', { class: 'timeline', id: 'touches' }, items)),
      panel('Payments', h('span', { class: 'muted' }, `${j.payments.length} payment${j.payments.length === 1 ? '' : 's'}`),
        j.payments.length ? h('ol', { class: 'timeline', id: 'payments' }, payments) : h('div', { class: 'empty' }, 'No payments yet.')));
  }

  // ---------- CSV export ----------

  const csvField = (text) => (/[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text);

  // The table as shown (header, body and footer rows; one line per row, cells as their text).
  function tableCsv(tableEl) {
    const lines = [];
    for (const tr of tableEl.querySelectorAll('tr')) {
      const cells = [...tr.querySelectorAll('th, td')].map((c) =>
        csvField([...c.querySelectorAll('.money-line')].length
          ? [...c.querySelectorAll('.money-line')].map((m) => m.textContent.trim()).join('; ')
          : c.textContent.trim()));
      lines.push(cells.join(','));
    }
    return `${lines.join('\r\n')}\r\n`;
  }

  // A "CSV" button for every table in `nodes` (by table id), placed in the table's panel head.
  function addCsvButtons(nodes, name) {
    for (const node of [nodes].flat().filter(Boolean)) {
      if (!(node instanceof Element)) continue;
      for (const tableEl of node.querySelectorAll('table[id]')) {
        const panelEl = tableEl.closest('.panel');
        const head = panelEl && panelEl.querySelector('.section-head');
        if (!head || head.querySelector(`[data-csv-for="${tableEl.id}"]`)) continue;
        const button = h('button', {
          type: 'button', class: 'ghost csv', 'data-csv-for': tableEl.id, title: 'Download this table as CSV',
          onclick: () => {
            const csv = tableCsv(tableEl);
            button.dataset.csv = csv;
            const url = URL.createObjectURL(new Blob([csv], { type: 'text/csv;charset=utf-8' }));
            const a = h('a', { href: url, download: `zori-${name}-${tableEl.id}.csv` });
            document.body.append(a);
            a.click();
            a.remove();
            setTimeout(() => URL.revokeObjectURL(url), 1000);
          },
        }, 'CSV');
        head.append(button);
      }
    }
  }

  // ---------- Attribution models side by side ----------

  const MODELS = [
    ['first_touch', 'First touch'],
    ['last_non_direct', 'Last non-direct'],
    ['linear', 'Linear'],
    ['position_based', 'Position-based'],
    ['time_decay', 'Time decay'],
    ['data_driven', 'Data-driven'],
  ];

  function pickedModels(st) {
    const raw = (st.q.get('models') || '').split(',').filter((m) => MODELS.some(([k]) => k === m));
    return raw.length ? raw : MODELS.map(([k]) => k);
  }

  async function modelsView(st) {
    const picked = pickedModels(st);
    const report = await api('attribution/compare', moneyParams(st, { dimension: st.dimension, models: picked.join(',') }));
    const currencies = [...new Set(report.models.flatMap((m) => m.totals.revenue.map((c) => c.currency)))].sort();
    const currency = st.currency && currencies.includes(st.currency) ? st.currency : currencies[0] || null;
    const toggle = (m) => {
      const next = picked.includes(m) ? picked.filter((x) => x !== m) : picked.concat([m]);
      const ordered = MODELS.map(([k]) => k).filter((k) => next.includes(k));
      return ordered.length === MODELS.length || !ordered.length ? null : ordered.join(',');
    };
    const picker = h('div', { class: 'seg', role: 'group', 'aria-label': 'Models', id: 'model-picker' },
      MODELS.map(([m, text]) => h('button', {
        type: 'button', 'data-model': m, 'aria-pressed': picked.includes(m) ? 'true' : 'false',
        onclick: () => go({ models: toggle(m) }, true),
      }, text)));
    const dims = h('div', { class: 'seg', role: 'group', 'aria-label': 'Dimension' },
      DIMENSIONS.map(([d, text]) => h('button', {
        type: 'button', 'data-dimension': d, 'aria-pressed': d === st.dimension ? 'true' : 'false',
        onclick: () => go({ dimension: d === 'channel' ? null : d, sort: null, dir: null }),
      }, text)));
    const curPicker = currencies.length > 1
      ? h('div', { class: 'seg', role: 'group', 'aria-label': 'Currency' }, currencies.map((c) => h('button', {
        type: 'button', 'aria-pressed': c === currency ? 'true' : 'false', onclick: () => go({ currency: c }, true),
      }, c.toUpperCase())))
      : null;
    const values = [...new Set(report.models.flatMap((m) => m.rows.map((r) => r.value)))];
    const byModel = Object.fromEntries(report.models.map((m) => [m.model, m]));
    const cellOf = (m, value) => (byModel[m].rows.find((r) => r.value === value) || null);
    const creditOf = (row) => (row ? (row.revenue.find((c) => c.currency === currency) || null) : null);
    const columns = [
      { key: 'value', title: label(DIMENSIONS, st.dimension), value: (v) => v, cell: (v) => (st.dimension === 'channel' ? channelLabel(v) : v) },
      ...report.models.map((m) => ({
        key: m.model, title: label(MODELS, m.model),
        value: (v) => { const c = creditOf(cellOf(m.model, v)); return c ? c.net : 0; },
        cell: (v) => {
          if (m.not_enough_data) return h('span', { class: 'muted' }, '—');
          const row = cellOf(m.model, v);
          const c = creditOf(row);
          return c ? [h('span', { class: 'money-line', 'data-currency': c.currency }, money(c.currency, c.formatted)),
            h('span', { class: 'muted conv' }, ` ${row.conversions.toFixed(2)} conv.`)] : h('span', { class: 'muted' }, '—');
        },
      })),
    ];
    const total = (m) => {
      const c = m.totals.revenue.find((x) => x.currency === currency);
      return c ? money(c.currency, c.formatted) : '—';
    };
    const footer = h('tr', { 'data-row': '(total)' }, h('td', { 'data-col': 'value' }, 'Total'),
      report.models.map((m) => h('td', { 'data-col': m.model }, total(m))));
    const unattributed = h('tr', { class: 'unattributed', 'data-row': '(unattributed)' }, h('td', { 'data-col': 'value' }, 'Unattributed'),
      report.models.map((m) => {
        const c = m.unattributed.revenue.find((x) => x.currency === currency);
        return h('td', { 'data-col': m.model }, c ? money(c.currency, c.formatted) : '—');
      }));
    const notes = report.models.filter((m) => m.not_enough_data).map((m) =>
      h('div', { class: 'notice', 'data-not-enough': m.model }, `${label(MODELS, m.model)}: ${m.not_enough_data.message}.`));
    return [
      filterNote(st),
      panel('Attribution models side by side', picker,
        h('div', { class: 'toolbar' }, dims, curPicker),
        h('p', { class: 'muted' }, `Revenue of the range credited by each model to the touches inside the ${report.lookback_days}-day lookback window before each payment. Each payment's credits sum to the payment.`),
        notes,
        currency ? table(st, 'models', columns, values, { rowKey: (v) => v, extraRows: [unattributed], footer, empty: 'No payments in this period.' })
          : h('div', { class: 'empty' }, 'No payments in this period.')),
    ];
  }

  // ---------- Ad spend: CAC, ROAS, payback ----------

  // A CSV of spend rows (docs/api.md: day,source,medium,campaign,currency,amount), sent as is to
  // PUT /api/v1/spend; the API checks every row and names the first bad one.
  function spendUpload() {
    const status = h('span', { id: 'spend-upload-status', role: 'status', class: 'muted' });
    const file = h('input', { id: 'spend-file', type: 'file', accept: '.csv,text/csv', 'aria-label': 'Spend CSV file' });
    const send = async (event) => {
      event.preventDefault();
      const chosen = file.files && file.files[0];
      if (!chosen) { status.textContent = 'Choose a CSV file first.'; return; }
      status.className = 'muted';
      status.textContent = 'Importing…';
      try {
        const response = await fetch('/api/v1/spend', {
          method: 'PUT', credentials: 'same-origin', body: await chosen.text(),
          headers: { 'Content-Type': 'text/csv', Accept: 'application/json', 'X-Zori-Dashboard': '1' },
        });
        let body = null;
        try { body = await response.json(); } catch (_) { /* not JSON */ }
        if (response.status === 401) throw new Unauthorized('signed out');
        if (!response.ok) throw new Error(body && body.error ? body.error.message : `HTTP ${response.status}`);
        status.className = 'ok';
        status.textContent = `Imported ${int(body.rows)} rows: ${int(body.inserted)} new, ${int(body.updated)} updated, ${int(body.unchanged)} unchanged.`;
        setTimeout(() => render(), 1200);
      } catch (err) {
        if (err instanceof Unauthorized) { showSignin('Your session ended. Sign in again.'); return; }
        status.className = 'error';
        status.textContent = `Import refused: ${err.message}`;
      }
    };
    return panel('Import spend', h('span', { class: 'muted' }, 'CSV: day,source,medium,campaign,currency,amount (minor units)'),
      h('form', { class: 'toolbar', id: 'spend-upload', onsubmit: send }, file, h('button', { type: 'submit', class: 'ghost' }, 'Import'), status));
  }

  async function spendView(st) {
    const report = await api('spend', moneyParams(st));
    const amounts = (list) => (list.length ? list.map((a) => h('span', { class: 'money-line', 'data-currency': a.currency }, money(a.currency, a.formatted))) : h('span', { class: 'muted' }, '—'));
    const ratio = (list, key, fmt) => (list.length ? list.map((r) => h('span', { class: 'money-line', 'data-currency': r.currency },
      r[key] === null ? '—' : fmt(r[key]), ` (${r.currency.toUpperCase()})`)) : h('span', { class: 'muted' }, '—'));
    const first = (list) => (list[0] ? list[0].net !== undefined ? list[0].net : list[0].amount : null);
    const columns = [
      { key: 'campaign', title: 'Source / medium / campaign', left: true, value: (r) => `${r.source}/${r.medium}/${r.campaign}`,
        cell: (r) => [h('strong', {}, r.source), ' / ', r.medium || '(not set)', ' / ', r.campaign || '(not set)'] },
      { key: 'spend', title: 'Spend', value: (r) => first(r.spend), cell: (r) => amounts(r.spend) },
      { key: 'customers', title: 'Customers', value: (r) => r.customers, cell: (r) => int(r.customers) },
      { key: 'new_customers', title: 'New customers', value: (r) => r.new_customers, cell: (r) => int(r.new_customers) },
      { key: 'revenue', title: 'Revenue', value: (r) => first(r.revenue), cell: (r) => amounts(r.revenue) },
      { key: 'cac', title: 'CAC', value: (r) => first(r.cac), cell: (r) => amounts(r.cac) },
      { key: 'roas', title: 'ROAS', value: (r) => (r.roas[0] ? r.roas[0].roas : null), cell: (r) => ratio(r.roas, 'roas', (x) => `${x.toFixed(2)}×`) },
      { key: 'payback', title: 'Payback', value: (r) => (r.payback[0] ? r.payback[0].months : null), cell: (r) => ratio(r.payback, 'months', (x) => `${x.toFixed(1)} mo`) },
    ];
    return [
      filterNote(st),
      spendUpload(),
      panel('Ad spend, CAC and ROAS by campaign', h('span', { class: 'muted' }, 'spend imported with PUT /api/v1/spend or a CSV file'),
        table(st, 'spend', columns, report.rows, { rowKey: (r) => `${r.source}/${r.medium}/${r.campaign}`, empty: 'No spend or customers in this period. Import spend with PUT /api/v1/spend (docs/api.md).' })),
    ];
  }

  // ---------- Cohorts heat map ----------

  // The currency's number of minor-unit decimals (ISO 4217, as Intl knows it; 2 if unknown).
  function currencyDecimals(currency) {
    try {
      return new Intl.NumberFormat(LOCALE, { style: 'currency', currency: currency.toUpperCase() }).resolvedOptions().maximumFractionDigits;
    } catch (_) {
      return 2;
    }
  }

  async function cohortsView(st) {
    const report = await api('cohorts', moneyParams(st, { dimension: st.dimension }));
    const horizons = report.horizons;
    const max = {};
    for (const c of report.cohorts) for (const hz of c.horizons) max[c.currency] = Math.max(max[c.currency] || 0, hz.per_customer);
    const rows = report.cohorts.map((c) => h('tr', { 'data-row': `${c.month}/${c.channel}/${c.currency}` },
      h('td', { 'data-col': 'month', class: 'left' }, c.month),
      h('td', { 'data-col': 'value', class: 'left' }, st.dimension === 'channel' ? channelLabel(c.channel) : c.channel),
      h('td', { 'data-col': 'currency' }, c.currency.toUpperCase()),
      h('td', { 'data-col': 'customers' }, int(c.customers)),
      horizons.map((m) => {
        const hz = c.horizons.find((x) => x.months === m);
        if (!hz) return h('td', { 'data-col': `m${m}` }, '—');
        const minor = Math.round(hz.per_customer);
        const text = moneyMinor(c.currency, minor, currencyDecimals(c.currency), false);
        return h('td', {
          'data-col': `m${m}`, class: `heat${hz.complete ? '' : ' partial'}`,
          'data-heat': max[c.currency] ? (hz.per_customer / max[c.currency]).toFixed(3) : '0',
          title: `${int(c.customers)} customers, ${hz.complete ? '' : 'so far (incomplete), '}cumulative net per customer after ${m} month${m === 1 ? '' : 's'}`,
        }, text);
      })));
    const el = report.cohorts.length
      ? h('div', { class: 'table-wrap' }, h('table', { id: 'cohorts' },
        h('thead', {}, h('tr', {}, h('th', { class: 'left' }, 'Month'), h('th', { class: 'left' }, label(DIMENSIONS, st.dimension)),
          h('th', {}, 'Currency'), h('th', {}, 'Customers'), horizons.map((m) => h('th', { 'data-col': `m${m}` }, `${m} mo`)))),
        h('tbody', {}, rows)))
      : h('div', { class: 'empty' }, 'No new customers in these months.');
    for (const td of el.querySelectorAll('[data-heat]')) td.style.backgroundColor = `rgba(79, 70, 229, ${(0.08 + 0.6 * Number(td.dataset.heat)).toFixed(3)})`;
    const dims = h('div', { class: 'seg', role: 'group', 'aria-label': 'Dimension' },
      DIMENSIONS.map(([d, text]) => h('button', {
        type: 'button', 'data-dimension': d, 'aria-pressed': d === st.dimension ? 'true' : 'false',
        onclick: () => go({ dimension: d === 'channel' ? null : d }),
      }, text)));
    return [filterNote(st), panel('Cohorts: net revenue per customer', dims,
      h('p', { class: 'muted' }, 'New customers by the month of their first payment; cumulative net revenue per customer after 1, 3, 6 and 12 months (lighter italics: not complete yet).'), el)];
  }

  // ---------- MRR and its movements ----------

  const MOVEMENTS = [
    ['new', 'New', 1], ['expansion', 'Expansion', 1], ['reactivation', 'Reactivation', 1],
    ['contraction', 'Contraction', -1], ['churn', 'Churn', -1],
  ];

  // Bars of each month's movements (up: gained, down: lost) and the closing MRR as a line.
  function drawMrr(holder, months, currency) {
    const width = Math.max(holder.clientWidth || 900, 320);
    const height = 260;
    const m = { top: 14, right: 16, bottom: 28, left: 72 };
    const w = width - m.left - m.right;
    const ih = height - m.top - m.bottom;
    const decimals = currencyDecimals(currency);
    const unit = 10 ** decimals;
    const up = months.map((r) => r.new + r.expansion + r.reactivation);
    const down = months.map((r) => r.contraction + r.churn);
    const TICKS = 4;
    const top = niceStep(Math.max(...months.map((r) => r.closing), ...up, 0) / unit || 1, TICKS, false) * TICKS * unit;
    const bottom = Math.max(...down, 0) ? niceStep(Math.max(...down) / unit, 2, false) * 2 * unit : 0;
    const y = (v) => m.top + ((top - v) / (top + bottom)) * ih;
    const step = w / Math.max(months.length, 1);
    const x = (i) => m.left + step * i + step / 2;
    const svg = s('svg', { class: 'chart mrr-chart', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
      'aria-label': `MRR (${currency.toUpperCase()}): movements per month (bars) and closing MRR (line)` });
    const grid = s('g', { class: 'grid' });
    const axis = s('g', { class: 'axis' });
    for (let v = bottom ? -bottom : 0; v <= top + 1e-9; v += (top + bottom) / (TICKS + (bottom ? 2 : 0))) {
      grid.append(s('line', { x1: m.left, x2: m.left + w, y1: y(v), y2: y(v) }));
      axis.append(s('text', { x: m.left - 8, y: y(v) + 4, 'text-anchor': 'end' }, moneyMinor(currency, v, decimals, true)));
    }
    months.forEach((r, i) => axis.append(s('text', { x: x(i), y: height - 8, 'text-anchor': 'middle' }, r.month)));
    svg.append(grid, axis);
    const barW = Math.max(4, Math.min(36, step * 0.5));
    months.forEach((r, i) => {
      const g = s('g', { class: 'month', 'data-month': r.month },
        s('title', {}, `${r.month}: closing ${moneyMinor(currency, r.closing, decimals, false)}; ` +
          MOVEMENTS.map(([k, t]) => `${t.toLowerCase()} ${moneyMinor(currency, r[k], decimals, false)}`).join(', ')));
      let above = 0;
      let below = 0;
      for (const [k, , sign] of MOVEMENTS) {
        const v = r[k];
        if (!v) continue;
        const from = sign > 0 ? above : -below;
        const to = sign > 0 ? above + v : -(below + v);
        if (sign > 0) above += v; else below += v;
        g.append(s('rect', { class: `mv mv-${k}`, 'data-movement': k, x: x(i) - barW / 2, y: Math.min(y(from), y(to)), width: barW, height: Math.abs(y(from) - y(to)) }));
      }
      svg.append(g);
    });
    svg.append(s('line', { class: 'zero', x1: m.left, x2: m.left + w, y1: y(0), y2: y(0) }));
    const pts = months.map((r, i) => `${x(i).toFixed(1)},${y(r.closing).toFixed(1)}`);
    if (pts.length) svg.append(s('polyline', { class: 'line', points: pts.join(' ') }));
    months.forEach((r, i) => svg.append(s('circle', { class: 'point', cx: x(i), cy: y(r.closing), r: 3.5 })));
    holder.replaceChildren(svg);
  }

  async function mrrView(st) {
    const report = await api('mrr', moneyParams(st, { dimension: st.dimension }));
    const currencies = [...new Set(report.months.map((r) => r.currency))];
    const currency = st.currency && currencies.includes(st.currency) ? st.currency : currencies[0];
    const months = report.months.filter((r) => r.currency === currency);
    const amount = (v) => moneyMinor(currency, v, currencyDecimals(currency), false);
    const picker = currencies.length > 1
      ? h('div', { class: 'seg', role: 'group', 'aria-label': 'Currency' }, currencies.map((c) => h('button', {
        type: 'button', 'aria-pressed': c === currency ? 'true' : 'false', onclick: () => go({ currency: c }, true),
      }, c.toUpperCase())))
      : null;
    if (!currency) {
      return [filterNote(st), panel('MRR', null, h('div', { class: 'empty' },
        'No subscriptions yet. MRR comes from the customer.subscription.* webhooks Stripe sends (docs/site-owner-guide.md).'))];
    }
    const legend = h('div', { class: 'legend' },
      MOVEMENTS.map(([k, t]) => h('span', {}, h('span', { class: `swatch mv-${k}` }), t)),
      h('span', {}, h('span', { class: 'swatch revenue' }), 'Closing MRR'), picker);
    const holder = h('div', { class: 'chart-wrap', id: 'mrr-chart' });
    lastChart = () => drawMrr(holder, months, currency);
    const columns = [
      { key: 'month', title: 'Month', left: true, value: (r) => r.month, cell: (r) => r.month },
      { key: 'opening', title: 'Opening', value: (r) => r.opening, cell: (r) => amount(r.opening) },
      ...MOVEMENTS.map(([k, t, sign]) => ({ key: k, title: t, value: (r) => r[k],
        cell: (r) => (r[k] ? h('span', { class: sign > 0 ? 'gain' : 'loss' }, `${sign > 0 ? '+' : '−'}${amount(r[k])}`) : h('span', { class: 'muted' }, '—')) })),
      { key: 'closing', title: 'Closing', value: (r) => r.closing, cell: (r) => h('strong', {}, amount(r.closing)) },
      { key: 'subscribers', title: 'Subscribers', value: (r) => r.subscribers, cell: (r) => int(r.subscribers) },
    ];
    const last = report.to;
    const closingOf = (seg) => { const r = seg.months.find((x) => x.month === last && x.currency === currency); return r ? r.closing : 0; };
    const newOf = (seg) => seg.months.filter((x) => x.currency === currency).reduce((a, x) => a + x.new + x.reactivation, 0);
    const churnOf = (seg) => seg.months.filter((x) => x.currency === currency).reduce((a, x) => a + x.churn + x.contraction, 0);
    const segments = report.segments.filter((seg) => seg.months.some((x) => x.currency === currency));
    const segColumns = [
      { key: 'value', title: label(DIMENSIONS, st.dimension), left: true, value: (g) => g.value, cell: (g) => (st.dimension === 'channel' ? channelLabel(g.value) : g.value) },
      { key: 'mrr', title: `MRR ${last}`, value: closingOf, cell: (g) => amount(closingOf(g)) },
      { key: 'gained', title: 'New + reactivated', value: newOf, cell: (g) => amount(newOf(g)) },
      { key: 'lost', title: 'Contraction + churn', value: churnOf, cell: (g) => amount(churnOf(g)) },
    ];
    const dims = h('div', { class: 'seg', role: 'group', 'aria-label': 'Dimension' },
      DIMENSIONS.map(([d, text]) => h('button', {
        type: 'button', 'data-dimension': d, 'aria-pressed': d === st.dimension ? 'true' : 'false',
        onclick: () => go({ dimension: d === 'channel' ? null : d }),
      }, text)));
    const trialColumns = [
      { key: 'month', title: 'Trials started', left: true, value: (t) => t.month, cell: (t) => t.month },
      { key: 'trials', title: 'Trials', value: (t) => t.trials, cell: (t) => int(t.trials) },
      { key: 'converted', title: 'Billed since', value: (t) => t.converted, cell: (t) => int(t.converted) },
      { key: 'rate', title: 'Trial → paid', value: (t) => t.rate, cell: (t) => (t.rate === null ? '—' : pct(t.rate)) },
    ];
    const note = report.unpriced_subscriptions
      ? h('div', { class: 'notice', id: 'mrr-unpriced' }, `${int(report.unpriced_subscriptions)} subscription${report.unpriced_subscriptions === 1 ? ' has' : 's have'} tiered or metered prices MRR cannot price: the MRR shown is a lower bound.`)
      : null;
    return [
      filterNote(st),
      panel(`MRR and its movements, ${report.from} to ${report.to}`, legend, note, holder,
        h('p', { class: 'muted' }, 'List-price monthly recurring revenue of active and past-due subscriptions (yearly prices divided by 12; coupons not subtracted). Opening + new + expansion + reactivation − contraction − churn = closing.'),
        table(st, 'mrr', columns, months, { rowKey: (r) => r.month, empty: 'No subscriptions in these months.' })),
      panel('MRR by acquisition', dims,
        table(st, 'mrr-segments', segColumns, segments, { rowKey: (g) => g.value, defaultSort: 'mrr', sortDefault: true, empty: 'No subscriptions in these months.' })),
      panel('Trial to paid', null,
        table(st, 'mrr-trials', trialColumns, report.trials.filter((t) => t.trials > 0), { rowKey: (t) => t.month, empty: 'No trials started in these months.' })),
    ];
  }

  // ---------- Funnel ----------

  const DEFAULT_STEPS = 'page:/,paid';

  async function funnelView(st) {
    const steps = st.q.get('steps') || DEFAULT_STEPS;
    const input = h('input', { id: 'funnel-steps', type: 'text', value: steps, spellcheck: 'false', size: 48,
      'aria-label': 'Funnel steps', title: 'page:<path>, event:<name>, paid (last); comma-separated' });
    const form = h('form', { class: 'toolbar', id: 'funnel-form', onsubmit: (e) => { e.preventDefault(); go({ steps: input.value.trim() === DEFAULT_STEPS ? null : input.value.trim() }); } },
      input, h('button', { type: 'submit', class: 'ghost' }, 'Show'));
    const report = await api('funnel', moneyParams(st, { steps, dimension: st.dimension }));
    const stepCols = report.steps.map((sv, k) => ({
      key: `s${k}`, title: sv.step, value: (r) => r.steps[k].visitors,
      cell: (r) => [int(r.steps[k].visitors), k ? h('span', { class: 'muted conv' }, ` ${pct(r.steps[k].conversion)}`) : null],
    }));
    const columns = [
      { key: 'value', title: label(DIMENSIONS, st.dimension), left: true, value: (r) => r.value, cell: (r) => (st.dimension === 'channel' ? channelLabel(r.value) : r.value) },
      ...stepCols,
      { key: 'overall', title: 'Overall', value: (r) => r.steps[r.steps.length - 1].overall, cell: (r) => pct(r.steps[r.steps.length - 1].overall) },
      { key: 'revenue', title: 'Revenue of finishers', value: (r) => (r.revenue[0] ? r.revenue[0].net : 0), cell: (r) => moneyLines(r.revenue) },
    ];
    const t = report.totals;
    const footer = h('tr', { 'data-row': '(total)' }, columns.map((c) => h('td', { 'data-col': c.key, class: c.left ? 'left' : null }, c.key === 'value' ? 'Total' : c.cell(t))));
    return [filterNote(st), panel('Funnel', form,
      h('p', { class: 'muted' }, 'People (identified users with all their devices, else visitors) who did each step in order within the period, by first touch; the percentage is the conversion from the step before.'),
      table(st, 'funnel', columns, report.rows, { rowKey: (r) => r.value, footer, empty: 'Nobody reached the first step in this period.' }))];
  }

  const VIEW_RENDERERS = {
    overview: overviewView,
    attribution: attributionView,
    journey: journeyView,
    pages: pagesView,
    events: eventsView,
    countries: countriesView,
    devices: devicesView,
    models: modelsView,
    spend: spendView,
    mrr: mrrView,
    cohorts: cohortsView,
    funnel: funnelView,
  };

  // ---------- Start ----------

  async function start() {
    wireFilters();
    try {
      const response = await fetch('/session', { credentials: 'same-origin', headers: { Accept: 'application/json' } });
      if (response.ok) showApp();
      else showSignin('');
    } catch (_) {
      showSignin('Could not reach Zori. Check the connection and reload.');
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
