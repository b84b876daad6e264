// The candlewick chart page: closed bars from /api/bars (the CSV files), the forming bar, closed
// bars, corrections and gaps live from /api/stream (Server-Sent Events), health in the strip.
const { createChart, CandlestickSeries, HistogramSeries, LineSeries, createSeriesMarkers, CrosshairMode } = window.LightweightCharts;

const UP = '#26a69a';
const DOWN = '#ef5350';
const GREY = '#6b7280';
const FORMING = '#f5c542';
const HISTORY = 1500;

const $ = (id) => document.getElementById(id);
const state = {
  meta: undefined,
  symbol: '',
  interval: '',
  /** closed bars, by start ascending */
  bars: [],
  /** the bar still forming, or null */
  forming: null,
  gaps: [],
  source: undefined,
  formingUpdates: 0,
  closedEvents: 0,
  corrections: 0,
  /** the interval's bars are days (labelled by date) */
  daily: false,
  /** the interval's bars are activity bars: keyed by their number, drawn at their end */
  activity: false,
  /** decimals the prices are shown with */
  precision: 2,
  /** the time-axis labels drawn, by chart time */
  axisLabels: {},
};
window.candlewick = state;

/**
 * Chart time of a bar: its true start instant (UTC seconds), so bars are spaced as they happened —
 * the repeated hour of a November night is an hour, not squeezed. The labels the library would
 * write in UTC are written in BAR_TZ by the formatters below instead.
 */
function withTimes(bars) {
  if (state.activity) {
    // an activity bar (docs/activity-bars.md) at its last trade's time; bars ending in the same
    // millisecond a millisecond apart, as the chart wants times that rise
    let prev = -Infinity;
    for (const b of bars) prev = b.time = Math.max(b.end / 1000, prev + 0.001);
    return bars;
  }
  for (const b of bars) b.time = b.start / 1000;
  return bars;
}

/** A moment's fields in BAR_TZ (year … second, the zone's short name, its UTC offset in minutes). */
let zoneFormat = new Intl.DateTimeFormat('en-US', { timeZone: 'UTC' });
function zoned(ms) {
  const p = Object.fromEntries(zoneFormat.formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
  const wall = Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day), Number(p.hour), Number(p.minute), Number(p.second));
  return { ...p, offset: Math.round((wall - Math.floor(ms / 1000) * 1000) / 60_000) };
}
/** The zone's name where the wall time alone is ambiguous or skipped (within an hour of a DST change). */
function zoneNote(ms) {
  const z = zoned(ms);
  return zoned(ms - 3_600_000).offset !== z.offset || zoned(ms + 3_600_000).offset !== z.offset ? ` ${z.timeZoneName}` : '';
}
const dateOf = (z) => `${z.year}-${z.month}-${z.day}`;
const hmOf = (z) => `${z.hour}:${z.minute}`;

/** Time-axis labels in BAR_TZ: dates for daily bars; else the local time, with the date at a day's mark. */
function tickLabel(time, type) {
  const ms = time * 1000;
  const z = zoned(ms);
  let label;
  if (state.daily) label = type === 0 ? z.year : type === 1 ? `${z.year}-${z.month}` : dateOf(z);
  else if (type <= 2) label = `${z.month}-${z.day}${hmOf(z) === '00:00' ? '' : ` ${hmOf(z)}${zoneNote(ms)}`}`;
  else label = `${hmOf(z)}${type === 4 ? `:${z.second}` : ''}${zoneNote(ms)}`;
  state.axisLabels[time] = label;
  return label;
}
/** The crosshair's time label: the date of a daily bar, else the local time with the zone's name. */
function crosshairLabel(time) {
  const z = zoned(time * 1000);
  return state.daily ? dateOf(z) : `${dateOf(z)} ${hmOf(z)} ${z.timeZoneName}`;
}

const chart = createChart($('chart'), {
  autoSize: true,
  layout: { background: { color: '#10141c' }, textColor: '#c3cad5', attributionLogo: true },
  grid: { vertLines: { color: '#1c2330' }, horzLines: { color: '#1c2330' } },
  crosshair: { mode: CrosshairMode.Normal },
  timeScale: { timeVisible: true, secondsVisible: false, borderColor: '#2c3647', tickMarkFormatter: tickLabel },
  localization: { timeFormatter: crosshairLabel },
  rightPriceScale: { borderColor: '#2c3647' },
});
const candles = chart.addSeries(CandlestickSeries, {
  upColor: UP,
  downColor: DOWN,
  wickUpColor: UP,
  wickDownColor: DOWN,
  borderVisible: true,
  borderUpColor: UP,
  borderDownColor: DOWN,
  priceFormat: { type: 'price', precision: 8, minMove: 0.00000001 },
});
const volume = chart.addSeries(HistogramSeries, {
  priceFormat: { type: 'volume' },
  priceScaleId: '',
  lastValueVisible: false,
  priceLineVisible: false,
});
volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.25 } });
const vwapLine = chart.addSeries(LineSeries, {
  color: '#8ab4f8',
  lineWidth: 1,
  priceLineVisible: false,
  lastValueVisible: false,
  crosshairMarkerVisible: false,
});
const markers = createSeriesMarkers(candles, []);

// prices, VWAP and volume arrive as the CSV's text: numbers only to draw them
function candleOf(b, forming) {
  const c = { time: b.time, open: Number(b.open), high: Number(b.high), low: Number(b.low), close: Number(b.close) };
  if (!b.complete) Object.assign(c, { color: GREY, wickColor: GREY, borderColor: GREY });
  if (forming) c.borderColor = FORMING;
  return c;
}
const volumeOf = (b) => ({
  time: b.time,
  value: Number(b.volume),
  color: Number(b.close) >= Number(b.open) ? 'rgba(38,166,154,0.45)' : 'rgba(239,83,80,0.45)',
});
const vwapOf = (b) => (b.vwap === null ? { time: b.time } : { time: b.time, value: Number(b.vwap) });

/** The decimals of the prices as received (their text), so a price of 0.00000012 is not "0.0000". */
function precisionOf(bars) {
  let p = 2;
  for (const b of bars.slice(-200)) for (const v of [b.open, b.high, b.low, b.close]) p = Math.max(p, (v.split('.')[1] ?? '').length);
  return Math.min(p, 12);
}

/** Everything drawn again: after a load, a correction, or a closed bar older than the forming one. */
function redraw() {
  const all = state.forming ? [...state.bars, state.forming] : state.bars;
  withTimes(all);
  const p = precisionOf(all);
  state.precision = p;
  const priceFormat = { type: 'price', precision: p, minMove: 10 ** -p };
  candles.applyOptions({ priceFormat });
  vwapLine.applyOptions({ priceFormat });
  candles.setData(all.map((b) => candleOf(b, b === state.forming)));
  volume.setData(all.map(volumeOf));
  vwapLine.setData(all.map(vwapOf));
  drawMarkers();
  publish();
}

function drawMarkers() {
  const out = [];
  const bars = state.bars;
  for (const g of state.gaps) {
    // the bar holding the gap's start (or the first after it)
    const b = bars.find((x, i) => x.start >= g.start || (bars[i + 1] && bars[i + 1].start > g.start));
    if (b) out.push({ time: b.time, position: 'belowBar', shape: 'arrowUp', color: DOWN, text: 'gap' });
  }
  for (const b of bars) if (!b.complete) out.push({ time: b.time, position: 'aboveBar', shape: 'square', color: GREY, text: 'incomplete' });
  out.sort((a, b) => a.time - b.time);
  markers.setMarkers(out);
}

/** What the page shows, for people reading the DOM (and the browser test). */
function publish() {
  const d = document.body.dataset;
  d.symbol = state.symbol;
  d.interval = state.interval;
  d.candles = String(state.bars.length);
  d.forming = state.forming
    ? JSON.stringify({ start: state.forming.start, close: state.forming.close, volume: state.forming.volume, trades: state.forming.trades })
    : '';
  d.formingUpdates = String(state.formingUpdates);
  d.closedEvents = String(state.closedEvents);
  d.corrections = String(state.corrections);
  showLegend(state.forming ?? state.bars[state.bars.length - 1]);
}

function showLegend(b) {
  if (!b) return ($('legend').textContent = 'no bars yet');
  const f = (v) => (v === null || v === undefined ? '—' : v);
  // the VWAP is a quotient (many decimals): shown with the prices' decimals
  const vwap = b.vwap === null ? '—' : Number(b.vwap).toFixed(state.precision);
  $('legend').textContent =
    `${b.timestamp}  O ${b.open}  H ${b.high}  L ${b.low}  C ${b.close}  VWAP ${vwap}  V ${b.volume}  N ${f(b.trades)}${
      b.complete ? '' : '  incomplete'
    }${b === state.forming ? '  (forming)' : ''}${b.rev ? `  rev ${b.rev}` : ''}`;
}
chart.subscribeCrosshairMove((p) => {
  if (!p.time) return showLegend(state.forming ?? state.bars[state.bars.length - 1]);
  const all = state.forming ? [...state.bars, state.forming] : state.bars;
  showLegend(all.find((b) => b.time === p.time));
});

async function api(path) {
  const r = await fetch(path, { headers: { accept: 'application/json' } });
  if (r.status === 401) {
    location.href = `/login.html${location.hash}`;
    throw new Error('sign in first');
  }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ?? `HTTP ${r.status}`);
  return body;
}

function showMessage(text, info = false) {
  $('message').hidden = !text;
  $('message').textContent = text ?? '';
  $('message').className = info ? 'message info' : 'message';
}

async function load() {
  const { symbol, interval } = state;
  location.hash = new URLSearchParams({ symbol, interval }).toString();
  state.source?.close();
  state.forming = null;
  state.bars = [];
  state.formingUpdates = 0;
  state.closedEvents = 0;
  state.corrections = 0;
  state.daily = state.meta.dayIntervals.includes(interval);
  state.activity = (state.meta.activityIntervals ?? []).includes(interval);
  state.axisLabels = {};
  chart.applyOptions({ timeScale: { timeVisible: !state.daily } });
  try {
    const q = new URLSearchParams({ symbol, interval, limit: String(HISTORY) });
    const [bars, gaps] = await Promise.all([api(`/api/bars?${q}`), api(`/api/gaps?${new URLSearchParams({ symbol })}`)]);
    if (symbol !== state.symbol || interval !== state.interval) return; // changed meanwhile
    state.bars = bars.bars;
    state.gaps = gaps.gaps;
    showMessage(bars.bars.length ? '' : `No closed ${interval} bars of ${symbol} yet: they appear as they close.`, true);
  } catch (err) {
    showMessage(String(err.message ?? err));
  }
  redraw();
  chart.timeScale().fitContent();
  if (state.bars.length > 120) chart.timeScale().setVisibleLogicalRange({ from: state.bars.length - 120, to: state.bars.length + 5 });
  follow();
  document.body.dataset.ready = `${symbol}|${interval}`;
}

/** The live stream for the shown symbol and interval. */
function follow() {
  const es = new EventSource(`/api/stream?${new URLSearchParams({ symbols: state.symbol, intervals: state.interval })}`);
  state.source = es;
  const live = document.querySelector('[data-k="live"]');
  es.onopen = () => {
    live.textContent = 'live';
    live.className = 'pill ok';
  };
  es.onerror = () => {
    live.textContent = 'reconnecting';
    live.className = 'pill bad';
  };
  es.addEventListener('forming', (e) => {
    const b = JSON.parse(e.data);
    const last = state.bars[state.bars.length - 1];
    if (last && b.start <= last.start) return; // already closed
    const older = state.forming && b.start < state.forming.start;
    if (older) return;
    const fresh = !state.forming || state.forming.start !== b.start;
    state.forming = b;
    state.formingUpdates++;
    if (fresh) return redraw();
    withTimes([b]);
    candles.update(candleOf(b, true));
    volume.update(volumeOf(b));
    vwapLine.update(vwapOf(b));
    publish();
  });
  es.addEventListener('bar', (e) => {
    const b = JSON.parse(e.data);
    if (state.activity) {
      // activity bars: new ones only, by number (a bar published again is the same bar)
      if (!state.bars.some((x) => x.bar === b.bar)) {
        state.bars.push(b);
        state.bars.sort((x, y) => x.bar - y.bar);
        state.closedEvents++;
        showMessage('');
        redraw();
      }
      return;
    }
    const i = state.bars.findIndex((x) => x.start === b.start);
    if (i >= 0) {
      // a correction (LATE=amend): the bar is replaced where it stands
      state.bars[i] = b;
      state.corrections++;
    } else {
      state.bars.push(b);
      state.bars.sort((x, y) => x.start - y.start);
      state.closedEvents++;
      if (state.forming && state.forming.start <= b.start) state.forming = null;
      showMessage('');
    }
    redraw();
  });
  es.addEventListener('gap', (e) => {
    state.gaps.push(JSON.parse(e.data));
    drawMarkers();
  });
  es.addEventListener('status', (e) => showStatus(JSON.parse(e.data)));
}

function showStatus(s) {
  const set = (k, text, cls) => {
    const el = document.querySelector(`[data-k="${k}"]`);
    el.textContent = text;
    if (cls !== undefined) el.className = cls;
  };
  if (!s.pipeline) set('feed', 'files only: no pipeline', 'pill');
  else set('feed', s.feedConnected ? 'feed connected' : 'feed down', `pill ${s.feedConnected ? 'ok' : 'bad'}`);
  set('rate', `${s.tradesPerSec.toLocaleString()} trades/s`);
  set('late', `late ${s.late.toLocaleString()}`);
  set('pending', `pending ${s.pending.toLocaleString()}`);
  const noLag = state.meta?.clock === 'wall' ? 'close lag — (no bar closed yet)' : 'close lag — (event clock)';
  set('lag', s.closeLagSec === null ? noLag : `close lag ${s.closeLagSec.toFixed(1)} s`);
  document.body.dataset.status = JSON.stringify(s);
}

async function main() {
  const meta = await api('/api/meta');
  state.meta = meta;
  $('tz').textContent = meta.tz;
  zoneFormat = new Intl.DateTimeFormat('en-US', {
    timeZone: meta.tz,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    hourCycle: 'h23',
    timeZoneName: 'short',
  });
  const fill = (sel, values) => {
    sel.replaceChildren(...values.map((v) => new Option(v, v)));
  };
  fill($('symbol'), meta.symbols);
  fill($('interval'), meta.intervals);
  const want = new URLSearchParams(location.hash.slice(1));
  state.symbol = meta.symbols.includes(want.get('symbol')) ? want.get('symbol') : (meta.symbols[0] ?? '');
  state.interval = meta.intervals.includes(want.get('interval')) ? want.get('interval') : meta.intervals[0];
  $('symbol').value = state.symbol;
  $('interval').value = state.interval;
  $('symbol').onchange = () => {
    state.symbol = $('symbol').value;
    void load();
  };
  $('interval').onchange = () => {
    state.interval = $('interval').value;
    void load();
  };
  api('/api/status').then(showStatus, () => undefined);
  if (!state.symbol) return showMessage('No symbols yet: bars appear here once the pipeline has written some.', true);
  await load();
}

main().catch((err) => showMessage(String(err.message ?? err)));
