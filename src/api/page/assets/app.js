// lngpt-collector's log viewer. Plain JavaScript, no build step, no third-party code: the daemon
// embeds this file and serves it at /assets/app.<hash>.js. Everything shown comes from the API.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const LEVELS = ['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'];
  const RANK = { DEBUG: 10, INFO: 20, WARNING: 30, WARN: 30, ERROR: 40, CRITICAL: 50, FATAL: 50 };
  const PANELS = ['live', 'search', 'cost', 'health', 'alerts', 'status'];
  const TOKEN_KEY = 'lngpt.token';
  const POLL_MS = 5000;
  const FLUSH_MS = 400;

  // ---------------------------------------------------------------- language
  const TEXT = {
    skip: ['跳到内容', 'Skip to content'],
    panels: ['面板', 'Panels'],
    'nav.live': ['实时日志', 'Live tail'],
    'nav.search': ['搜索', 'Search'],
    'nav.cost': ['费用', 'Cost'],
    'nav.health': ['健康', 'Health'],
    'nav.alerts': ['告警', 'Alerts'],
    'nav.status': ['采集器', 'Collector'],
    theme: ['配色', 'Colour scheme'],
    'theme.auto': ['自动配色', 'Auto theme'],
    'theme.light': ['浅色', 'Light'],
    'theme.dark': ['深色', 'Dark'],
    'token.button': ['令牌', 'Token'],
    'token.title': ['API 令牌', 'API token'],
    'token.help': ['此采集器需要令牌（api.token）。令牌只保存在本标签页的会话存储中。', 'This collector needs its token (api.token). It is kept in this tab\'s session storage only.'],
    'token.label': ['令牌', 'Token'],
    'token.save': ['保存', 'Save'],
    'token.clear': ['清除', 'Forget'],
    'token.cancel': ['取消', 'Cancel'],
    'f.level': ['级别', 'Level'],
    'f.module': ['模块', 'Module'],
    'f.text': ['文本', 'Text'],
    'f.range': ['时间', 'Time'],
    'f.from': ['从', 'From'],
    'f.to': ['到', 'To'],
    'f.per_page': ['每页', 'Per page'],
    'f.hours': ['时段', 'Period'],
    'f.model': ['模型', 'Model'],
    'lvl.any': ['全部级别', 'All levels'],
    'lvl.min': ['{0} 及以上', '{0} and above'],
    'live.pause': ['暂停', 'Pause'],
    'live.resume': ['继续', 'Resume'],
    'live.clear': ['清空', 'Clear'],
    'live.empty': ['等待新日志……', 'Waiting for new entries…'],
    'live.connecting': ['连接中', 'Connecting'],
    'live.live': ['实时', 'Live'],
    'live.retrying': ['连接断开，{0} 秒后重连', 'Disconnected; reconnecting in {0} s'],
    'live.catching-up': ['流量过大，{0} 秒后补取', 'Too fast; catching up in {0} s'],
    'live.counts': ['显示 {0} 条 · 已收 {1} 条', '{0} shown · {1} received'],
    'live.paused': ['已暂停，新到 {0} 条', 'Paused; {0} new'],
    'live.lagged': ['流量过大，跳过 {0} 条，已用 Last-Event-ID 补取', 'Too fast: {0} skipped, fetched again with Last-Event-ID'],
    'live.unfetched': ['{0} 条超出补取上限（api.max_replay），未显示', '{0} beyond the replay limit (api.max_replay), not shown'],
    'live.replay-error': ['补取不全：{0}', 'Replay incomplete: {0}'],
    'r.15m': ['最近 15 分钟', 'Last 15 minutes'],
    'r.1h': ['最近 1 小时', 'Last hour'],
    'r.24h': ['最近 24 小时', 'Last 24 hours'],
    'r.7d': ['最近 7 天', 'Last 7 days'],
    'r.custom': ['自定义', 'Custom'],
    's.go': ['搜索', 'Search'],
    's.prev': ['上一页', 'Previous'],
    's.next': ['下一页', 'Next'],
    's.summary': ['共 {0} 条', '{0} entries'],
    's.page': ['第 {0} 页，共 {1} 页', 'Page {0} of {1}'],
    's.none': ['没有符合条件的日志。', 'No matching entries.'],
    's.loading': ['查询中……', 'Searching…'],
    'c.hour': ['本小时', 'This hour'],
    'c.day': ['今日', 'Today'],
    'c.hourSliding': ['最近 1 小时', 'Last hour'],
    'c.daySliding': ['最近 24 小时', 'Last 24 hours'],
    'c.of': ['限额 {0}（{1}）', 'limit {0} ({1})'],
    'c.nolimit': ['未设限额', 'no limit'],
    'c.state.ok': ['正常', 'fine'],
    'c.state.warn': ['接近限额', 'nearing the limit'],
    'c.state.over': ['已达限额', 'limit reached'],
    'c.projRate': ['最近速度：每小时 {0}。', 'Recent rate: {0} an hour.'],
    'c.proj': ['预计 {1} 达到{0}。', '{0} is reached at {1}.'],
    'c.projNever': ['按此速度不会达到{0}（稳定在 {1}）。', 'At this rate {0} is never reached (it settles at {1}).'],
    'c.projSafe': ['按此速度，本时段结束前不会达到{0}。', 'At this rate {0} is not reached before the period ends.'],
    'c.projReached': ['{0}已达到。', '{0} has been reached.'],
    'c.hourLimit': ['每小时上限', 'the hourly limit'],
    'c.dayLimit': ['每日上限', 'the daily limit'],
    'c.projIdle': ['最近没有费用。', 'No spend recently.'],
    'c.models': ['按模型', 'By model'],
    'c.model': ['模型', 'Model'],
    'c.calls': ['调用次数', 'Calls'],
    'c.in': ['输入 tokens', 'Input tokens'],
    'c.out': ['输出 tokens', 'Output tokens'],
    'c.tokens': ['总 tokens', 'Total tokens'],
    'c.orig': ['费用（原币种）', 'Cost (original)'],
    'c.rmb': ['费用（人民币）', 'Cost (RMB)'],
    'c.total': ['合计', 'Total'],
    'c.hourly': ['每小时费用（最近 48 小时）', 'Cost per hour (last 48 h)'],
    'c.limitHour': ['每小时上限', 'hourly limit'],
    'c.noCost': ['这段时间没有费用记录。', 'No cost records in this period.'],
    'h.all': ['全部模型', 'All models'],
    'h.rpm': ['每分钟请求数', 'Requests per minute'],
    'h.err': ['错误率（%）', 'Error rate (%)'],
    'h.p95': ['p95 响应时间（秒）', 'p95 response time (s)'],
    'h.summary': ['{0} 次调用 · 错误率 {1}% · p95 {2} 秒', '{0} calls · {1}% errors · p95 {2} s'],
    'h.threshold': ['阈值 {0}', 'threshold {0}'],
    'h.offchart': ['阈值 {0}（远高于图中数值）', 'threshold {0} (far above)'],
    'h.nodata': ['这段时间没有数据', 'No data in this period'],
    'a.active': ['正在告警', 'Firing now'],
    'a.resolved': ['最近已恢复', 'Recently resolved'],
    'a.severity': ['级别', 'Severity'],
    'a.title': ['告警', 'Alert'],
    'a.value': ['当前值', 'Value'],
    'a.threshold': ['阈值', 'Threshold'],
    'a.since': ['开始于', 'Since'],
    'a.ended': ['结束于', 'Ended'],
    'a.silence': ['静音', 'Silence'],
    'a.none': ['没有正在进行的告警。', 'Nothing is firing.'],
    'a.silence2h': ['静音 2 小时', 'Silence 2 h'],
    'a.silencedUntil': ['已静音至 {0}', 'Silenced until {0}'],
    'a.unsilence': ['取消静音', 'Unsilence'],
    'a.noResolved': ['最近没有已恢复的告警。', 'Nothing resolved recently.'],
    'a.comment': ['从日志页面静音', 'silenced from the log viewer'],
    'sev.critical': ['紧急', 'critical'],
    'sev.high': ['严重', 'high'],
    'sev.warning': ['警告', 'warning'],
    'sev.info': ['提示', 'info'],
    'u.s': ['秒', 's'],
    'a.atFiring': ['触发时 {0}', 'at firing {0}'],
    'st.store': ['存储', 'Store'],
    'st.reachable': ['可访问', 'Reachable'],
    'st.ready': ['就绪', 'Ready'],
    'st.outbox': ['发件箱', 'Outbox'],
    'st.dropped': ['发件箱丢弃', 'Dropped by the outbox'],
    'st.rate': ['事件/秒', 'Events per second'],
    'st.stored': ['已存储事件', 'Events stored'],
    'st.rejected': ['拒收行数', 'Rejected lines'],
    'st.stream': ['实时流', 'Live stream'],
    'st.rejects': ['最近拒收', 'Recent rejects'],
    'st.all': ['全部（/api/rejects）', 'all (/api/rejects)'],
    'st.time': ['时间', 'Time'],
    'st.source': ['来源', 'Source'],
    'st.reason': ['原因', 'Reason'],
    'st.noRejects': ['没有拒收的行。', 'No rejected lines.'],
    'st.events': ['{0} 条（{1}）', '{0} events ({1})'],
    'st.failing': ['写入失败：{0}', 'writes fail: {0}'],
    yes: ['是', 'yes'],
    no: ['否', 'no'],
    'err.network': ['无法连接采集器', 'Cannot reach the collector'],
    'err.token': ['需要 API 令牌', 'The API token is needed'],
    loading: ['加载中……', 'Loading…'],
  };
  let lang = pickLanguage();
  const L = () => (lang === 'en' ? 1 : 0);
  function t(key, ...args) {
    const e = TEXT[key];
    let s = e ? e[L()] : key;
    args.forEach((a, i) => { s = s.replace('{' + i + '}', a); });
    return s;
  }
  function pickLanguage() {
    const saved = localStorage.getItem('lngpt.lang');
    if (saved === 'zh' || saved === 'en') return saved;
    for (const l of navigator.languages || [navigator.language || '']) {
      if (/^zh/i.test(l)) return 'zh';
      if (/^en/i.test(l)) return 'en';
    }
    return 'zh';
  }

  // ---------------------------------------------------------------- theme
  const themeQuery = matchMedia('(prefers-color-scheme: dark)');
  let themeChoice = localStorage.getItem('lngpt.theme') || 'auto';
  function applyTheme() {
    const dark = themeChoice === 'dark' || (themeChoice === 'auto' && themeQuery.matches);
    document.documentElement.dataset.theme = dark ? 'dark' : 'light';
    const b = $('theme');
    b.textContent = t('theme.' + themeChoice);
    b.setAttribute('aria-label', t('theme') + ': ' + t('theme.' + themeChoice));
  }
  themeQuery.addEventListener('change', applyTheme);

  // ---------------------------------------------------------------- time in the configured zone
  let tz = 'Asia/Shanghai';
  let dtf = null;
  let secCache = new Map();
  function setZone(zone) {
    try {
      dtf = new Intl.DateTimeFormat('en-CA', {
        timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit',
        hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
      });
      tz = zone;
    } catch (e) {
      dtf = new Intl.DateTimeFormat('en-CA', {
        year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
      });
      tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
    }
    secCache = new Map();
    $('tz').textContent = tz;
  }
  function parts(ms) {
    const o = {};
    for (const p of dtf.formatToParts(ms)) o[p.type] = p.value;
    return o;
  }
  // "2026-11-26 16:00:01", cached per second (the tail formats hundreds a second).
  function fmtSecond(ms) {
    const s = Math.floor(ms / 1000);
    let v = secCache.get(s);
    if (v === undefined) {
      const p = parts(s * 1000);
      v = `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
      if (secCache.size > 5000) secCache = new Map();
      secCache.set(s, v);
    }
    return v;
  }
  function fmtTime(ms, withMs) {
    if (!Number.isFinite(ms)) return '—';
    const base = fmtSecond(ms);
    return withMs ? base + '.' + String(((ms % 1000) + 1000) % 1000).padStart(3, '0') : base;
  }
  const fmtIso = (iso, withMs) => fmtTime(Date.parse(iso), withMs);
  function offsetMs(ms) {
    const p = parts(ms);
    const asUtc = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
    return asUtc - Math.floor(ms / 1000) * 1000;
  }
  // A wall-clock time of the configured zone ("2026-11-26T16:00") to epoch milliseconds.
  function wallToMs(text) {
    const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?/.exec(text || '');
    if (!m) return NaN;
    const naive = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0));
    let guess = naive - offsetMs(naive);
    guess = naive - offsetMs(guess);
    return guess;
  }
  function msToWall(ms) {
    const p = parts(ms);
    return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}:${p.second}`;
  }
  const iso = (ms) => new Date(ms).toISOString();

  // ---------------------------------------------------------------- numbers
  const nf = (d) => new Intl.NumberFormat(lang === 'en' ? 'en-US' : 'zh-CN', { minimumFractionDigits: d, maximumFractionDigits: d });
  const money = (v) => '¥' + nf(2).format(v || 0);
  const int = (v) => nf(0).format(v || 0);
  function num(v) {
    if (v === null || v === undefined || !Number.isFinite(+v)) return '—';
    const a = Math.abs(v);
    return nf(a >= 100 || Number.isInteger(+v) ? 0 : a >= 10 ? 1 : 2).format(v);
  }
  // A value with its unit, as the daemon names it ('percent', 'seconds', 'rmb', 'count').
  function withUnit(v, unit) {
    if (v === null || v === undefined || !Number.isFinite(+v)) return '—';
    switch (unit) {
      case 'percent': return nf(1).format(v) + '%';
      case 'seconds': return nf(Math.abs(v) >= 100 ? 0 : 2).format(v) + ' ' + t('u.s');
      case 'rmb': return money(v);
      default: return num(v);
    }
  }
  function bytes(n) {
    const u = ['B', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  }
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

  // ---------------------------------------------------------------- API
  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h.Authorization = 'Bearer ' + token;
    return h;
  }
  async function api(path, opts) {
    opts = opts || {};
    let r;
    try {
      r = await fetch(path, { method: opts.method || 'GET', body: opts.body, headers: headers(opts.headers), cache: 'no-store' });
    } catch (e) {
      showGlobal(t('err.network'));
      throw new HttpError(0, t('err.network'));
    }
    showGlobal('');
    if (r.status === 401) {
      askToken();
      throw new HttpError(401, t('err.token'));
    }
    const body = opts.text ? await r.text() : await r.json().catch(() => null);
    if (!r.ok && !(opts.allow || []).includes(r.status)) {
      throw new HttpError(r.status, (body && body.error) || r.status + ' ' + r.statusText);
    }
    return body;
  }
  function showGlobal(msg) {
    const g = $('global-error');
    g.textContent = msg;
    g.hidden = !msg;
  }
  function panelError(panel, e) {
    if (e && e.status === 401) return;
    let p = document.querySelector('#p-' + panel + ' > .error');
    if (!p) {
      p = document.createElement('p');
      p.className = 'error';
      p.setAttribute('role', 'alert');
      $('p-' + panel).querySelector('h2').after(p);
    }
    p.textContent = e ? e.message : '';
    p.hidden = !e;
  }

  // ---------------------------------------------------------------- token
  function askToken() {
    const d = $('token-dialog');
    if (d.open) return;
    $('token-input').value = sessionStorage.getItem(TOKEN_KEY) || '';
    d.showModal();
  }
  $('token-btn').addEventListener('click', askToken);
  $('token-dialog').addEventListener('close', () => {
    const v = $('token-dialog').returnValue;
    if (v === 'save' && $('token-input').value.trim()) sessionStorage.setItem(TOKEN_KEY, $('token-input').value.trim());
    else if (v === 'clear') sessionStorage.removeItem(TOKEN_KEY);
    else return;
    $('token-input').value = '';
    start();
  });

  // ---------------------------------------------------------------- config (thresholds, zone)
  let cfg = null;
  async function loadConfig() {
    cfg = await api('/api/config/monitor');
    setZone(cfg.timezone || 'Asia/Shanghai');
  }

  // ---------------------------------------------------------------- log rows (tail and search)
  function span(cls, text) {
    const s = document.createElement('span');
    s.className = cls;
    s.textContent = text;
    return s;
  }
  function logRow(e) {
    const li = document.createElement('li');
    li.className = 'l-' + e.level;
    li.dataset.id = e.id;
    li.dataset.level = e.level;
    const d = document.createElement('details');
    const s = document.createElement('summary');
    s.append(span('t', fmtTime(e.ts, true)), span('lvl', e.level), span('mod', e.module || ''), span('msg', e.message || ''));
    d.append(s);
    li.append(d);
    li.entry = e;
    return li;
  }
  // Details are built when a row is opened, not for every row.
  function onToggle(ev) {
    const d = ev.target;
    if (!(d instanceof HTMLDetailsElement) || !d.open || d.dataset.filled) return;
    d.dataset.filled = '1';
    const e = d.closest('li').entry || {};
    const extra = Object.assign({}, e.extra || {});
    let trace = null;
    for (const k of ['exception', 'traceback', 'exc_text', 'stack_info']) {
      if (typeof extra[k] === 'string') { trace = (trace ? trace + '\n' : '') + extra[k]; delete extra[k]; }
    }
    const info = Object.assign({ timestamp: e.timestamp }, e.more || {}, Object.keys(extra).length ? { extra } : {});
    const pre = document.createElement('pre');
    pre.textContent = JSON.stringify(info, null, 2);
    d.append(pre);
    if (trace) {
      const tb = document.createElement('pre');
      tb.className = 'tb';
      tb.textContent = trace;
      d.append(tb);
    }
  }
  for (const id of ['live-list', 's-list']) $(id).addEventListener('toggle', onToggle, true);

  function fillLevels(sel) {
    const cur = sel.value;
    sel.textContent = '';
    sel.append(new Option(t('lvl.any'), ''));
    for (const l of LEVELS) sel.append(new Option(l === 'DEBUG' ? l : t('lvl.min', l), l));
    sel.value = cur;
  }

  // ---------------------------------------------------------------- live tail
  // Stored entries the tail opens with, before the live ones.
  const LIVE_TAIL = 200;
  const live = {
    buf: [], BUF_MAX: 10000, DOM_MAX: 2000, pending: [], paused: false, newWhilePaused: 0,
    lastId: null, ctrl: null, state: 'connecting', retry: 0, retryAt: 0, timer: 0, statusTimer: 0, flushAt: 0, rows: 0,
    lagRetry: -1, lagAt: 0, startId: null,
    modules: new Set(), received: 0, lagged: 0, unfetched: 0, replayError: '', frame: 0, statusAt: 0, countdown: 0,
    filter: { min: 0, module: '', q: '' },
  };
  function liveMatches(e) {
    const f = live.filter;
    if ((RANK[e.level] || 20) < f.min) return false;
    if (f.module && !(e.module || '').toLowerCase().includes(f.module)) return false;
    if (f.q) {
      if (e.lc === undefined) e.lc = (e.message || '').toLowerCase();
      if (!e.lc.includes(f.q)) return false;
    }
    return true;
  }
  function liveSetState(state) {
    live.state = state;
    $('live-state').dataset.state = state;
    liveStatus(true);
    // While it waits to reconnect, the countdown goes down every second.
    clearInterval(live.countdown);
    if (state === 'retrying' || state === 'catching-up') live.countdown = setInterval(() => liveStatus(true), 1000);
  }
  function liveStateText() {
    const waiting = live.state === 'retrying' || live.state === 'catching-up';
    return waiting
      ? t('live.' + live.state, Math.max(1, Math.round((live.retryAt - Date.now()) / 1000)))
      : t('live.' + live.state);
  }
  function liveStatus(force) {
    const now = performance.now();
    if (!force && now - live.statusAt < 1000) {
      // Throttled, but the last change is always shown.
      if (!live.statusTimer) live.statusTimer = setTimeout(() => { live.statusTimer = 0; liveStatus(true); }, 1000);
      return;
    }
    live.statusAt = now;
    let s = liveStateText();
    s += ' · ' + t('live.counts', int(live.rows), int(live.received));
    if (live.paused) s += ' · ' + t('live.paused', int(live.newWhilePaused));
    if (live.lagged) s += ' · ' + t('live.lagged', int(live.lagged));
    if (live.unfetched) s += ' · ' + t('live.unfetched', int(live.unfetched));
    if (live.replayError) s += ' · ' + t('live.replay-error', live.replayError);
    $('live-state').textContent = s;
  }
  function liveConnect() {
    if (live.ctrl) live.ctrl.abort();
    clearTimeout(live.timer);
    const ctrl = new AbortController();
    live.ctrl = ctrl;
    const h = { Accept: 'text/event-stream' };
    if (live.lastId) {
      h['Last-Event-ID'] = live.lastId;
      live.replayError = '';
    }
    liveSetState('connecting');
    // The first connection opens with the newest entries, as `tail -f` does; a reconnect resumes
    // from the last one seen instead.
    const url = '/api/logs/stream' + (live.lastId ? '' : '?tail=' + LIVE_TAIL);
    // fetch, not EventSource: EventSource cannot send the token.
    fetch(url, { headers: headers(h), signal: ctrl.signal, cache: 'no-store' })
      .then(async (r) => {
        if (r.status === 401) { askToken(); throw new HttpError(401, t('err.token')); }
        if (!r.ok) throw new HttpError(r.status, r.statusText);
        live.retry = 0;
        // Told `lagged` before any event, the page still needs a place to resume from: a second
        // before the stream opened, by the daemon's clock.
        const opened = Date.parse(r.headers.get('Date') || '');
        if (!live.lastId && opened) live.startId = (opened - 1000) + '_000000000000000000000000';
        liveSetState('live');
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let rest = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          rest += value;
          let i;
          while ((i = rest.indexOf('\n\n')) >= 0) {
            const block = rest.slice(0, i);
            rest = rest.slice(i + 2);
            if (sseBlock(block, ctrl)) return;
          }
        }
        throw new HttpError(0, 'ended');
      })
      .catch((e) => {
        if (live.ctrl !== ctrl) return; // replaced by a newer connection
        if (e && e.status === 401) { liveSetState('connecting'); return; }
        const delay = Math.min(15000, 1000 * 2 ** live.retry++);
        live.retryAt = Date.now() + delay;
        liveSetState('retrying');
        live.timer = setTimeout(liveConnect, delay);
      });
  }
  // One SSE event; true when the stream is to be reopened (after `lagged`).
  function sseBlock(block, ctrl) {
    let id = null; let event = 'message'; let data = '';
    for (const line of block.split('\n')) {
      if (!line || line[0] === ':') continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let value = c < 0 ? '' : line.slice(c + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'id') id = value;
      else if (field === 'event') event = value;
      else if (field === 'data') data = data ? data + '\n' + value : value;
    }
    if (event === 'lagged') {
      // Missed events: reconnect with Last-Event-ID, which replays them from the store, after a
      // pause (1 s, doubling while lags keep coming, at most 15 s; back to 1 s after 30 s without
      // one). The daemon lets streams lag on purpose while ingest runs at full speed: replaying at
      // once would take the store's time exactly then.
      let lag = {};
      try { lag = JSON.parse(data) || {}; } catch (e) { /* keep going */ }
      // The replay's own `lagged` (with a reason: more were missed than api.max_replay) comes
      // before the newest events, which it sends; the older ones cannot be fetched, and
      // reconnecting from the same id would only bring the same replay again: read on.
      if (lag.reason) {
        live.unfetched += lag.skipped || 0;
        liveStatus();
        return false;
      }
      live.lagged += lag.skipped || 0;
      if (!live.lastId) live.lastId = live.startId;
      if (live.ctrl === ctrl) {
        ctrl.abort(); live.ctrl = null;
        const now = Date.now();
        live.lagRetry = now - live.lagAt > 30000 ? 0 : Math.min(4, live.lagRetry + 1);
        live.lagAt = now;
        live.retryAt = now + Math.min(15000, 1000 * 2 ** live.lagRetry);
        liveSetState('catching-up');
        live.timer = setTimeout(liveConnect, live.retryAt - now);
      }
      return true;
    }
    if (event === 'error') {
      // The replay could not fetch everything (the store did not answer, or events still wait
      // in MongoDB's outbox): said until the next replay.
      let e = {};
      try { e = JSON.parse(data) || {}; } catch (x) { /* keep going */ }
      live.replayError = e.error || data;
      liveStatus(true);
      return false;
    }
    if (event !== 'message' || !data) return false;
    let d;
    try { d = JSON.parse(data); } catch (e) { return false; }
    if (id) live.lastId = id;
    liveAdd({
      id: id || '', timestamp: d.timestamp, ts: Date.parse(d.timestamp), level: String(d.level || 'INFO').toUpperCase(),
      module: d.module, message: d.message, extra: d.extra,
    });
    return false;
  }
  function liveAdd(e) {
    live.received++;
    live.buf.push(e);
    if (live.buf.length > live.BUF_MAX * 1.2) live.buf.splice(0, live.buf.length - live.BUF_MAX);
    if (e.module && live.modules.size < 300 && !live.modules.has(e.module)) {
      live.modules.add(e.module);
      $('live-modules').append(new Option(e.module));
    }
    if (live.paused) {
      live.newWhilePaused++;
    } else {
      live.pending.push(e);
      if (live.pending.length > live.DOM_MAX * 2) live.pending.splice(0, live.pending.length - live.DOM_MAX);
    }
    if (!live.frame) {
      // At most 2.5 DOM updates a second: each one lays out the list, whatever it adds.
      const wait = Math.max(0, live.flushAt + FLUSH_MS - performance.now());
      live.frame = setTimeout(() => requestAnimationFrame(liveFlush), wait);
    }
  }
  // The tail's rows sit in chunks of about CHUNK rows, newest first; off-screen chunks are skipped
  // by layout and paint (content-visibility), so a full DOM costs about what its visible part does.
  const CHUNK = 100;
  function chunk() {
    const c = document.createElement('ol');
    c.className = 'chunk';
    return c;
  }
  function liveTrim(list) {
    let extra = live.rows - live.DOM_MAX;
    while (extra > 0 && list.lastElementChild) {
      const last = list.lastElementChild;
      const n = last.childElementCount;
      if (n <= extra) {
        last.remove();
        extra -= n; live.rows -= n;
      } else {
        for (let i = 0; i < extra; i++) last.lastElementChild.remove();
        live.rows -= extra; extra = 0;
      }
    }
  }
  function liveFlush() {
    live.frame = 0;
    live.flushAt = performance.now();
    const list = $('live-list');
    const p = live.pending;
    live.pending = [];
    if (p.length) {
      const rows = [];
      for (let i = p.length - 1; i >= 0 && rows.length < live.DOM_MAX; i--) {
        if (liveMatches(p[i])) rows.push(logRow(p[i]));
      }
      if (rows.length) {
        let first = list.firstElementChild;
        if (!first || first.childElementCount + rows.length > CHUNK) {
          first = chunk();
          list.prepend(first);
        }
        first.prepend(...rows);
        live.rows += rows.length;
        liveTrim(list);
      }
    }
    liveStatus(false);
  }
  function liveRerender() {
    const list = $('live-list');
    live.pending = [];
    const frag = document.createDocumentFragment();
    let n = 0;
    let c = null;
    for (let i = live.buf.length - 1; i >= 0 && n < live.DOM_MAX; i--) {
      if (liveMatches(live.buf[i])) {
        if (!c || c.childElementCount >= CHUNK) { c = chunk(); frag.append(c); }
        c.append(logRow(live.buf[i]));
        n++;
      }
    }
    list.textContent = '';
    list.append(frag);
    live.rows = n;
    liveStatus(true);
  }
  function liveFilterChanged() {
    live.filter = {
      min: RANK[$('live-level').value] || 0,
      module: $('live-module').value.trim().toLowerCase(),
      q: $('live-q').value.trim().toLowerCase(),
    };
    if (!live.paused) liveRerender();
  }
  $('live-form').addEventListener('submit', (ev) => ev.preventDefault());
  $('live-level').addEventListener('change', liveFilterChanged);
  $('live-module').addEventListener('input', liveFilterChanged);
  $('live-q').addEventListener('input', liveFilterChanged);
  $('live-pause').addEventListener('click', () => {
    live.paused = !live.paused;
    const b = $('live-pause');
    b.setAttribute('aria-pressed', String(live.paused));
    b.textContent = t(live.paused ? 'live.resume' : 'live.pause');
    if (!live.paused) { live.newWhilePaused = 0; liveRerender(); } else liveStatus(true);
  });
  $('live-clear').addEventListener('click', () => {
    live.buf = []; live.pending = []; live.newWhilePaused = 0; live.rows = 0;
    $('live-list').textContent = '';
    liveStatus(true);
  });

  // ---------------------------------------------------------------- search
  const search = { cursors: [null], page: 0, window: null, params: null };
  const RANGES = { '15m': 15 * 60e3, '1h': 3600e3, '24h': 24 * 3600e3, '7d': 7 * 24 * 3600e3 };
  function searchFormParams() {
    const p = new URLSearchParams();
    const range = $('s-range').value;
    p.set('range', range);
    if (range === 'custom') {
      if ($('s-start').value) p.set('start', $('s-start').value);
      if ($('s-end').value) p.set('end', $('s-end').value);
    }
    const add = (k, id) => { const v = $(id).value.trim(); if (v) p.set(k, v); };
    add('min_level', 's-level'); add('module', 's-module'); add('q', 's-q'); add('request_id', 's-rid');
    if ($('s-per').value !== '50') p.set('per_page', $('s-per').value);
    return p;
  }
  function searchFill(p) {
    const range = p.get('range') || '1h';
    $('s-range').value = RANGES[range] || range === 'custom' ? range : '1h';
    $('s-custom').hidden = $('s-range').value !== 'custom';
    $('s-start').value = p.get('start') || '';
    $('s-end').value = p.get('end') || '';
    $('s-level').value = LEVELS.includes(p.get('min_level')) ? p.get('min_level') : '';
    $('s-module').value = p.get('module') || '';
    $('s-q').value = p.get('q') || '';
    $('s-rid').value = p.get('request_id') || '';
    const per = p.get('per_page') || '50';
    if (![...$('s-per').options].some((o) => o.value === per)) $('s-per').append(new Option(per));
    $('s-per').value = per;
  }
  $('s-range').addEventListener('change', () => {
    const custom = $('s-range').value === 'custom';
    $('s-custom').hidden = !custom;
    if (custom && !$('s-start').value) {
      const now = Date.now();
      $('s-start').value = msToWall(now - 3600e3);
      $('s-end').value = msToWall(now);
    }
  });
  $('search-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const hash = '#search?' + searchFormParams().toString();
    if (location.hash === hash) searchStart(searchFormParams());
    else location.hash = hash; // the URL holds the query; route() runs it
  });
  function searchStart(p) {
    const range = p.get('range') || '1h';
    const now = Date.now();
    let from = now - (RANGES[range] || 3600e3); let to = now;
    if (range === 'custom') {
      from = p.get('start') ? wallToMs(p.get('start')) : NaN;
      to = p.get('end') ? wallToMs(p.get('end')) : now;
    }
    search.window = [from, to];
    search.params = p;
    search.cursors = [null];
    search.page = 0;
    searchRun();
  }
  async function searchRun() {
    const p = search.params;
    const q = new URLSearchParams();
    const [from, to] = search.window;
    if (Number.isFinite(from)) q.set('start_time', iso(from));
    if (Number.isFinite(to)) q.set('end_time', iso(to));
    for (const k of ['min_level', 'module', 'q', 'request_id', 'per_page']) if (p.get(k)) q.set(k, p.get(k));
    const cursor = search.cursors[search.page];
    if (cursor) q.set('cursor', cursor);
    $('s-summary').textContent = t('s.loading');
    $('s-next').disabled = true; $('s-prev').disabled = true;
    try {
      const r = await api('/api/logs?' + q.toString());
      panelError('search', null);
      const list = $('s-list');
      const frag = document.createDocumentFragment();
      for (const d of r.logs) {
        frag.append(logRow({
          id: d._id, timestamp: d.timestamp, ts: Date.parse(d.timestamp), level: String(d.level || '').toUpperCase(),
          module: d.module, message: d.message, extra: d.extra,
          more: Object.fromEntries(Object.entries(d).filter(([k]) => !['timestamp', 'level', 'module', 'message', 'extra'].includes(k))),
        }));
      }
      list.textContent = '';
      list.append(frag);
      list.dataset.empty = t('s.none');
      const pg = r.pagination;
      search.cursors[search.page + 1] = pg.next_cursor;
      search.cursors.length = search.page + 2;
      $('s-next').disabled = !pg.next_cursor;
      $('s-prev').disabled = search.page === 0;
      $('s-summary').textContent = t('s.summary', int(pg.total) + (pg.total_is_lower_bound ? '+' : ''));
      $('s-page').textContent = t('s.page', int(search.page + 1), int(Math.max(1, pg.pages)));
      $('s-list').dataset.page = String(search.page + 1);
    } catch (e) {
      $('s-summary').textContent = '';
      panelError('search', e);
    }
  }
  $('s-next').addEventListener('click', () => { if (search.cursors[search.page + 1]) { search.page++; searchRun(); } });
  $('s-prev').addEventListener('click', () => { if (search.page > 0) { search.page--; searchRun(); } });

  // ---------------------------------------------------------------- charts (plain SVG)
  // series: [{points: [[ms, value|null]], kind: 'line'|'bar', cls}]; threshold: {value, label}.
  function chart(el, opts) {
    const W = 900; const H = 190; const left = 52; const right = 12; const top = 14; const bottom = 24;
    const [x0, x1] = opts.x;
    let max = 0;
    for (const s of opts.series) for (const [, v] of s.points) if (v !== null && v > max) max = v;
    let note = '';
    const thr = opts.threshold;
    let drawThr = false;
    if (thr && Number.isFinite(thr.value)) {
      if (max === 0 || thr.value <= max * 4) { drawThr = true; max = Math.max(max, thr.value); } else note = t('h.offchart', thr.label);
    }
    max = max > 0 ? max * 1.1 : 1;
    const X = (ms) => left + ((ms - x0) / Math.max(1, x1 - x0)) * (W - left - right);
    const Y = (v) => top + (1 - v / max) * (H - top - bottom);
    let svg = '';
    for (let i = 0; i <= 4; i++) {
      const v = (max / 4) * i; const y = Y(v).toFixed(1);
      svg += `<line class="grid" x1="${left}" x2="${W - right}" y1="${y}" y2="${y}"/><text x="${left - 6}" y="${+y + 4}" text-anchor="end">${esc(num(v))}</text>`;
    }
    const width = x1 - x0;
    const step = width <= 2 * 3600e3 ? 15 * 60e3 : width <= 6 * 3600e3 ? 3600e3 : width <= 24 * 3600e3 ? 3 * 3600e3 : 6 * 3600e3;
    const off = offsetMs(x1);
    for (let ms = Math.ceil((x0 + off) / step) * step - off; ms <= x1; ms += step) {
      const x = X(ms).toFixed(1);
      const label = fmtTime(ms).slice(width > 24 * 3600e3 ? 5 : 11, 16);
      svg += `<line class="grid" x1="${x}" x2="${x}" y1="${H - bottom}" y2="${H - bottom + 4}"/><text x="${x}" y="${H - 6}" text-anchor="middle">${esc(label)}</text>`;
    }
    let any = false;
    for (const s of opts.series) {
      if (s.kind === 'bar') {
        const bw = Math.max(1, ((W - left - right) / Math.max(1, width / s.width)) * 0.8);
        for (const [ms, v] of s.points) {
          if (!v) continue;
          any = true;
          const y = Y(v);
          svg += `<rect class="barv ${s.cls || ''}" x="${(X(ms + s.width / 2) - bw / 2).toFixed(1)}" y="${y.toFixed(1)}" width="${bw.toFixed(1)}" height="${(H - bottom - y).toFixed(1)}"><title>${esc(fmtTime(ms).slice(0, 16) + ' · ' + (s.fmt || num)(v))}</title></rect>`;
        }
      } else {
        let d = ''; let pen = false; let dots = '';
        for (const [ms, v] of s.points) {
          if (v === null || v === undefined) { pen = false; continue; }
          any = true;
          const x = X(ms).toFixed(1); const y = Y(v).toFixed(1);
          d += (pen ? 'L' : 'M') + x + ' ' + y;
          if (!pen) dots += `<circle class="dot" cx="${x}" cy="${y}" r="1.8"/>`;
          pen = true;
        }
        svg += `<path class="series ${s.cls || ''}" d="${d}"/>` + dots;
      }
    }
    if (drawThr) {
      const y = Y(thr.value).toFixed(1);
      svg += `<line class="limit" x1="${left}" x2="${W - right}" y1="${y}" y2="${y}"/><text class="limit-label" x="${W - right - 4}" y="${+y - 4}" text-anchor="end">${esc(t('h.threshold', thr.label))}</text>`;
    } else if (note) {
      svg += `<text class="limit-label" x="${W - right - 4}" y="${top + 2}" text-anchor="end">${esc(note)}</text>`;
    }
    if (!any) svg += `<text class="empty" x="${W / 2}" y="${H / 2}" text-anchor="middle">${esc(opts.empty || t('h.nodata'))}</text>`;
    el.innerHTML = `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="${esc(opts.label)}">${svg}</svg>`;
    el.dataset.threshold = drawThr ? String(thr.value) : '';
  }

  // ---------------------------------------------------------------- cost
  function meter(el, title, spend, warnAt) {
    const limit = spend.limit_rmb;
    const frac = limit > 0 ? spend.spent_rmb / limit : 0;
    const warns = (warnAt && warnAt.length ? warnAt : [0.5, 0.8, 1]).slice().sort((a, b) => a - b);
    // Amber from the first warning fraction, red from the last (the limit itself by default).
    const state = limit <= 0 ? 'ok' : frac >= warns[warns.length - 1] ? 'over' : frac >= warns[0] ? 'warn' : 'ok';
    el.dataset.state = state;
    el.innerHTML = '';
    const h = document.createElement('h3');
    h.textContent = title;
    const big = document.createElement('div');
    big.className = 'big';
    const spent = span('', money(spend.spent_rmb));
    spent.dataset.k = 'spent';
    spent.dataset.value = String(spend.spent_rmb);
    big.append(spent);
    el.append(h, big);
    if (limit > 0) {
      const m = document.createElement('div');
      m.className = 'meter ' + state;
      m.setAttribute('role', 'meter');
      m.setAttribute('aria-valuemin', '0');
      m.setAttribute('aria-valuemax', String(limit));
      m.setAttribute('aria-valuenow', String(spend.spent_rmb));
      m.setAttribute('aria-label', title);
      const fill = document.createElement('div');
      fill.className = 'fill';
      fill.style.width = Math.min(100, frac * 100).toFixed(1) + '%';
      m.append(fill);
      for (const w of warns) {
        if (w >= 1) continue;
        const tick = document.createElement('span');
        tick.className = 'tick';
        tick.style.left = (w * 100).toFixed(1) + '%';
        m.append(tick);
      }
      const line = document.createElement('div');
      line.append(span('muted', t('c.of', money(limit), nf(0).format(frac * 100) + '%') + ' · '), span('state-' + state, t('c.state.' + state)));
      el.append(m, line);
    } else {
      el.append(span('muted', t('c.nolimit')));
    }
  }
  async function loadCost() {
    const b = await api('/api/budget');
    const warn = cfg && cfg.budget ? cfg.budget.warn_at : null;
    const sliding = b.window === 'sliding';
    meter($('c-hour'), t(sliding ? 'c.hourSliding' : 'c.hour'), b.hour, warn);
    meter($('c-day'), t(sliding ? 'c.daySliding' : 'c.day'), b.day, warn);
    const pr = b.projection || {};
    const rate = money(pr.rate_rmb_per_hour);
    // One sentence per limit, as the daemon judged it (sliding windows lose old spend as they move).
    const reach = (r, which) => {
      if (!r) return '';
      switch (r.verdict) {
        case 'reached': return t('c.projReached', t(which));
        case 'at': return t('c.proj', t(which), r.at_local);
        case 'never_at_this_rate': return t('c.projNever', t(which), money(r.steady_rmb));
        case 'not_before_window_ends': return t('c.projSafe', t(which));
        default: return '';
      }
    };
    const lines = [reach(pr.hour, 'c.hourLimit'), reach(pr.day, 'c.dayLimit')].filter(Boolean);
    $('c-projection').textContent = pr.rate_rmb_per_hour > 0 || lines.length
      ? t('c.projRate', rate) + ' ' + lines.join(' ')
      : t('c.projIdle');
    const now = Date.now();
    const hourOff = offsetMs(now);
    const lastHour = Math.floor((now + hourOff) / 3600e3) * 3600e3 - hourOff;
    const firstHour = lastHour - 47 * 3600e3;
    const [models, hourly] = await Promise.all([
      api('/api/stats/cost?group_by=model&start_time=' + encodeURIComponent(b.day.window_start) + '&end_time=' + encodeURIComponent(b.day.window_end)),
      api('/api/stats/cost?group_by=hour&start_time=' + encodeURIComponent(iso(firstHour)) + '&end_time=' + encodeURIComponent(iso(now))),
    ]);
    const tb = $('c-table').tBodies[0];
    tb.textContent = '';
    const sums = { calls: 0, input: 0, output: 0, total: 0, orig: {} };
    for (const s of models.stats) {
      const tr = tb.insertRow();
      tr.dataset.model = s.model;
      const cells = [s.model, int(s.call_count), int(s.input_tokens), int(s.output_tokens), int(s.total_tokens),
        s.currency_symbol + nf(4).format(s.total_cost), money(s.total_rmb)];
      cells.forEach((c, i) => { const td = tr.insertCell(); td.textContent = c; if (i) td.className = 'num'; });
      tr.cells[6].classList.add('rmb');
      sums.calls += s.call_count; sums.input += s.input_tokens; sums.output += s.output_tokens; sums.total += s.total_tokens;
      sums.orig[s.currency_symbol] = (sums.orig[s.currency_symbol] || 0) + s.total_cost;
    }
    const tf = $('c-table').tFoot;
    tf.textContent = '';
    const tr = tf.insertRow();
    const orig = Object.entries(sums.orig).map(([k, v]) => k + nf(4).format(v)).join(' + ');
    [t('c.total'), int(sums.calls), int(sums.input), int(sums.output), int(sums.total), orig, money(models.total_rmb)]
      .forEach((c, i) => { const td = tr.insertCell(); td.textContent = c; if (i) td.className = 'num'; });
    tr.cells[6].classList.add('rmb');
    tr.cells[6].dataset.value = String(models.total_rmb);
    tr.cells[1].classList.add('calls');
    const perHour = new Map();
    for (const s of hourly.stats) {
      const k = Date.parse(s.period);
      perHour.set(k, (perHour.get(k) || 0) + s.total_rmb);
    }
    const points = [];
    for (let h = firstHour; h <= lastHour; h += 3600e3) points.push([h, perHour.get(h) || 0]);
    chart($('c-chart'), {
      label: t('c.hourly'), x: [firstHour, lastHour + 3600e3],
      series: [{ kind: 'bar', width: 3600e3, points, fmt: money }],
      threshold: b.hour.limit_rmb > 0 ? { value: b.hour.limit_rmb, label: t('c.limitHour') + ' ' + money(b.hour.limit_rmb) } : null,
      empty: t('c.noCost'),
    });
  }

  // ---------------------------------------------------------------- health
  let healthModels = '';
  async function loadHealth() {
    const hours = +$('h-hours').value || 3;
    const model = $('h-model').value;
    const now = Date.now();
    const from = Math.floor((now - hours * 3600e3) / 60e3) * 60e3;
    const q = new URLSearchParams({ start_time: iso(from), end_time: iso(now) });
    if (model) q.set('model', model);
    const r = await api('/api/stats/performance?' + q.toString());
    if (!model) {
      const names = (r.by_model || []).map((m) => m.model).filter(Boolean).sort();
      const key = names.join('\n');
      if (key !== healthModels) {
        healthModels = key;
        const sel = $('h-model');
        const cur = sel.value;
        while (sel.options.length > 1) sel.remove(1);
        for (const n of names) sel.append(new Option(n, n));
        sel.value = cur;
      }
    }
    const calls = r.calls || 0;
    $('h-summary').textContent = t('h.summary', int(calls), calls ? nf(1).format((r.error_calls / calls) * 100) : '0', num(r.p95_response_time));
    const byMin = new Map((r.series || []).map((s) => [Date.parse(s.minute), s]));
    const rpm = []; const err = []; const p95 = [];
    for (let m = from; m <= now; m += 60e3) {
      const s = byMin.get(m);
      rpm.push([m, s ? s.calls : 0]);
      err.push([m, s && s.calls ? (s.error_calls / s.calls) * 100 : null]);
      p95.push([m, s && s.p95_response_time !== null ? s.p95_response_time : null]);
    }
    const rules = (cfg && cfg.monitor && cfg.monitor.rules) || {};
    const on = (r) => r && r.enabled !== false;
    const perMinute = cfg && cfg.monitor ? 60000 / (cfg.monitor.window_ms || 60000) : 1;
    const rc = rules.request_count;
    const er = model ? rules.model_error_rate : rules.error_rate;
    const pr = rules.p95_duration;
    const x = [from, now];
    chart($('h-rpm'), { label: t('h.rpm'), x, series: [{ points: rpm }], threshold: on(rc) ? { value: rc.threshold * perMinute, label: num(rc.threshold * perMinute) + '/min' } : null });
    chart($('h-err'), { label: t('h.err'), x, series: [{ points: err, cls: 'err' }], threshold: on(er) ? { value: er.threshold, label: num(er.threshold) + '%' } : null });
    chart($('h-p95'), { label: t('h.p95'), x, series: [{ points: p95 }], threshold: on(pr) ? { value: pr.threshold, label: num(pr.threshold) + ' s' } : null });
  }
  $('h-hours').addEventListener('change', () => refresh('health'));
  $('h-model').addEventListener('change', () => refresh('health'));
  $('health-form').addEventListener('submit', (ev) => ev.preventDefault());

  // ---------------------------------------------------------------- alerts
  function sevSpan(s) {
    // Alerts stored by earlier versions say 'medium' for what is now 'warning'.
    const name = s === 'medium' ? 'warning' : s;
    return span('sev sev-' + name, t('sev.' + name));
  }
  function setBadge(alerts) {
    const b = $('alert-badge');
    b.hidden = !alerts.length;
    b.textContent = String(alerts.length);
    b.classList.toggle('quiet', alerts.every((a) => a.silenced_by));
  }
  function alertCells(tr, a, last) {
    const c0 = tr.insertCell(); c0.append(sevSpan(a.severity));
    const c1 = tr.insertCell();
    const title = document.createElement('div'); title.textContent = a.title || a.rule;
    const msg = document.createElement('div'); msg.className = 'muted'; msg.textContent = a.message || '';
    c1.append(title, msg);
    // The current value (updated at every evaluation), and the value at firing when it differs.
    const current = a.current ?? a.value;
    const c2 = tr.insertCell(); c2.className = 'num';
    c2.append(document.createTextNode(withUnit(current, a.unit)));
    if (a.current !== undefined && a.current !== a.value) {
      c2.append(document.createElement('br'), span('muted', t('a.atFiring', withUnit(a.value, a.unit))));
    }
    const c3 = tr.insertCell(); c3.className = 'num'; c3.textContent = withUnit(a.threshold, a.unit);
    tr.insertCell().textContent = fmtIso(a.started_at);
    tr.insertCell().textContent = last;
  }
  async function loadAlerts() {
    const [act, res] = await Promise.all([api('/api/alerts/active'), api('/api/alerts?state=resolved&per_page=15')]);
    setBadge(act.alerts);
    const tb = $('a-active').tBodies[0];
    tb.textContent = '';
    for (const a of act.alerts) {
      const tr = tb.insertRow();
      tr.dataset.rule = a.rule;
      tr.dataset.key = a.key;
      alertCells(tr, a, '');
      const cell = tr.cells[5];
      const b = document.createElement('button');
      b.type = 'button';
      if (a.silenced_by) {
        cell.append(span('muted', t('a.silencedUntil', fmtIso(a.silenced_by.ends_at).slice(5, 16)) + ' '));
        b.textContent = t('a.unsilence');
        b.className = 'unsilence';
        b.addEventListener('click', () => silence(null, a.silenced_by.id));
      } else {
        b.textContent = t('a.silence2h');
        b.className = 'silence';
        b.setAttribute('aria-label', t('a.silence2h') + ': ' + (a.title || a.rule));
        b.addEventListener('click', () => silence(a.key, null));
      }
      cell.append(b);
    }
    $('a-none').hidden = act.alerts.length > 0;
    const rb = $('a-resolved').tBodies[0];
    rb.textContent = '';
    for (const a of res.alerts) {
      const tr = rb.insertRow();
      tr.dataset.rule = a.rule;
      tr.dataset.key = a.key;
      alertCells(tr, a, a.ended_at ? fmtIso(a.ended_at) : '');
    }
    if (!res.alerts.length) {
      const td = rb.insertRow().insertCell();
      td.colSpan = 6; td.className = 'muted'; td.textContent = t('a.noResolved');
    }
  }
  async function silence(key, id) {
    try {
      if (key) {
        await api('/api/alerts/silences', {
          method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ key, duration: '2h', comment: t('a.comment') }),
        });
      } else {
        await api('/api/alerts/silences/' + encodeURIComponent(id), { method: 'DELETE' });
      }
      panelError('alerts', null);
    } catch (e) { panelError('alerts', e); }
    refresh('alerts');
  }

  // ---------------------------------------------------------------- collector status
  let lastStored = null;
  function storedTotal(text) {
    let sum = 0;
    for (const m of text.matchAll(/^lngpt_collector_events_stored_total(?:\{[^}]*\})? ([0-9.e+]+)/gm)) sum += +m[1];
    return sum;
  }
  async function loadStatus() {
    const [ready, rej, metrics] = await Promise.all([
      api('/readyz', { allow: [503] }),
      api('/api/rejects?per_page=10'),
      api('/metrics', { text: true }),
    ]);
    const s = ready.store || {};
    const stored = storedTotal(metrics);
    const now = performance.now();
    let rate = '—';
    if (lastStored && now - lastStored.at > 500) rate = nf(1).format(Math.max(0, stored - lastStored.n) / ((now - lastStored.at) / 1000));
    else if (lastStored) rate = lastStored.rate;
    lastStored = { n: stored, at: now, rate };
    const items = [
      ['store', s.kind === 'mongodb' ? 'MongoDB' : s.kind === 'sqlite' ? 'SQLite' : s.kind || '—', ''],
      ['reachable', t(s.reachable ? 'yes' : 'no'), s.reachable ? 'good' : 'bad'],
      ['ready', ready.ready ? t('yes') : t('no') + (ready.error ? ' — ' + ready.error : ''), ready.ready ? 'good' : 'bad'],
      ['outbox', t('st.events', int(s.outbox_events), bytes(s.outbox_bytes || 0)), s.outbox_events ? 'bad' : ''],
      ['dropped', int(s.outbox_dropped), s.outbox_dropped ? 'bad' : ''],
      ['rate', rate, ''],
      ['stored', int(stored), ''],
      ['rejected', int(rej.pagination.total) + (rej.pagination.total_is_lower_bound ? '+' : ''), rej.pagination.total ? 'bad' : ''],
      ['stream', liveStateText(), live.state === 'live' ? 'good' : 'bad'],
    ];
    if (s.failing_collections && s.failing_collections.length) items.push(['ready', t('st.failing', s.failing_collections.join('; ')), 'bad']);
    const grid = $('st-grid');
    grid.textContent = '';
    for (const [k, v, cls] of items) {
      const div = document.createElement('div');
      div.dataset.k = k;
      const dt = document.createElement('dt'); dt.textContent = t('st.' + k);
      const dd = document.createElement('dd'); dd.textContent = v; if (cls) dd.className = cls;
      div.append(dt, dd);
      grid.append(div);
    }
    const tb = $('st-rejects').tBodies[0];
    tb.textContent = '';
    for (const r of rej.rejects) {
      const tr = tb.insertRow();
      tr.insertCell().textContent = fmtIso(r.received_at);
      tr.insertCell().textContent = r.source || '';
      tr.insertCell().textContent = r.reason || '';
    }
    if (!rej.rejects.length) {
      const td = tb.insertRow().insertCell();
      td.colSpan = 3; td.className = 'muted'; td.textContent = t('st.noRejects');
    }
  }

  // ---------------------------------------------------------------- panels, routing, polling
  let current = 'live';
  const loaders = { cost: loadCost, health: loadHealth, alerts: loadAlerts, status: loadStatus };
  const busy = {};
  async function refresh(panel) {
    const load = loaders[panel];
    if (!load || busy[panel] || !cfg) return;
    busy[panel] = true;
    try {
      await load();
      panelError(panel, null);
      $('p-' + panel).dataset.loaded = String(Date.now());
    } catch (e) {
      panelError(panel, e);
    } finally {
      busy[panel] = false;
    }
  }
  function route() {
    const [name, qs] = location.hash.slice(1).split('?');
    const panel = PANELS.includes(name) ? name : 'live';
    const changed = panel !== current;
    current = panel;
    for (const p of PANELS) $('p-' + p).hidden = p !== panel;
    for (const a of document.querySelectorAll('.top nav a')) {
      if (a.dataset.panel === panel) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    document.title = t('nav.' + panel) + ' · lngpt-collector';
    if (panel === 'search') {
      const p = new URLSearchParams(qs || '');
      searchFill(p);
      if (cfg) searchStart(p);
    } else if (cfg) {
      refresh(panel);
      if (panel === 'status' && changed) setTimeout(() => refresh('status'), 1500);
    }
    if (panel === 'live' && changed) liveRerender();
  }
  window.addEventListener('hashchange', route);
  let pollTimer = 0;
  function poll() {
    if (document.visibilityState === 'visible') {
      if (loaders[current]) refresh(current);
      if (current !== 'alerts' && cfg) api('/api/alerts/active').then((r) => setBadge(r.alerts)).catch(() => {});
    }
    pollTimer = setTimeout(poll, POLL_MS);
  }

  function applyLanguage() {
    document.documentElement.lang = lang === 'en' ? 'en' : 'zh-CN';
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', t(el.dataset.i18nLabel));
    $('lang').textContent = lang === 'en' ? '中文' : 'EN';
    $('live-pause').textContent = t(live.paused ? 'live.resume' : 'live.pause');
    $('live-list').dataset.empty = t('live.empty');
    $('s-list').dataset.empty = '';
    fillLevels($('live-level'));
    fillLevels($('s-level'));
    applyTheme();
    liveStatus(true);
  }
  $('lang').addEventListener('click', () => {
    lang = lang === 'en' ? 'zh' : 'en';
    localStorage.setItem('lngpt.lang', lang);
    applyLanguage();
    route();
  });
  $('theme').addEventListener('click', () => {
    themeChoice = { auto: 'light', light: 'dark', dark: 'auto' }[themeChoice] || 'auto';
    localStorage.setItem('lngpt.theme', themeChoice);
    applyTheme();
  });

  async function start() {
    try {
      await loadConfig();
    } catch (e) {
      if (e.status !== 401) showGlobal(e.message);
      return;
    }
    document.body.dataset.ready = '1';
    liveConnect();
    route();
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, POLL_MS);
  }

  setZone(tz);
  applyLanguage();
  route();
  start();
})();
