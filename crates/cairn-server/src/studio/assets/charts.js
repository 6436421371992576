// Cairn studio charts, drawn as SVG by hand (no libraries):
// - line charts: every figure.metric-chart[data-metric][data-run] (data-run="ID" or "ID,ID,…")
//   fetches /w/{ws}/runs/{id}/metrics/{key}/series (or its data-series-url) (downsampled on the server) per run and draws
//   the runs overlaid, with axes, a legend, hover values, drag-to-zoom on steps (refetching the
//   window, so a zoom shows full detail), a reset button and a log-scale toggle;
// - on the compare page, a scatter (#scatter: a metric against a param) and parallel coordinates
//   (#parallel-coords: params → one metric), fed by <script type="application/json" id="compare-data">.
// Text from users (run names, keys, params) only ever goes in through textContent.
(function () {
  'use strict';

  var SVG = 'http://www.w3.org/2000/svg';
  // Okabe–Ito: distinguishable with colour-blindness, all ≥ 3:1 against white.
  var COLORS = ['#0072b2', '#d55e00', '#009e73', '#cc79a7', '#8a6d00', '#56a0d3', '#1b1f24', '#a6501a'];
  var HEIGHT = 280;
  var M = { top: 14, right: 18, bottom: 40, left: 64 };
  var chartCount = 0;

  function svgEl(name, attrs, parent) {
    var e = document.createElementNS(SVG, name);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  function htmlEl(name, attrs, parent, text) {
    var e = document.createElement(name);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  // A chart's root: drawn at `width` × HEIGHT, scaled down (never up) when its box is narrower.
  function chartSvg(parent, width, titleId) {
    var svg = svgEl('svg', { width: width, height: HEIGHT, viewBox: '0 0 ' + width + ' ' + HEIGHT, role: 'img', 'aria-labelledby': titleId }, parent);
    svg.style.maxWidth = '100%';
    svg.style.height = 'auto';
    svg.style.display = 'block';
    var title = svgEl('title', { id: titleId }, svg);
    return [svg, title];
  }

  function svgText(parent, x, y, text, attrs) {
    var t = svgEl('text', Object.assign({ x: x, y: y, 'font-size': 11, fill: '#1b1f24' }, attrs || {}), parent);
    t.textContent = text;
    return t;
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return 'NaN';
    if (!isFinite(v)) return v > 0 ? '∞' : '−∞';
    if (v === 0) return '0';
    var a = Math.abs(v);
    if (a >= 1e6 || a < 1e-3) return v.toExponential(3).replace('e+', 'e');
    return String(parseFloat(v.toPrecision(6)));
  }

  // "Nice" linear ticks (1, 2, 5 × 10^k) covering [lo, hi].
  function linearTicks(lo, hi, count) {
    if (lo === hi) return [lo];
    var raw = (hi - lo) / Math.max(1, count);
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * mag; }).find(function (s) { return s >= raw; });
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }

  // Powers of ten inside [lo, hi] (both > 0), thinned to about `count`.
  function logTicks(lo, hi, count) {
    var a = Math.floor(Math.log10(lo)), b = Math.ceil(Math.log10(hi));
    var every = Math.max(1, Math.ceil((b - a) / Math.max(1, count)));
    var out = [];
    for (var e = a; e <= b; e += every) {
      var v = Math.pow(10, e);
      if (v >= lo && v <= hi) out.push(v);
    }
    return out.length ? out : [lo, hi];
  }

  function scale(d0, d1, r0, r1, log) {
    var f = log ? Math.log10 : function (v) { return v; };
    var a = f(d0), b = f(d1);
    var k = b === a ? 0 : (r1 - r0) / (b - a);
    var s = function (v) { return b === a ? (r0 + r1) / 2 : r0 + (f(v) - a) * k; };
    s.invert = function (p) {
      var v = b === a ? a : a + (p - r0) / k;
      return log ? Math.pow(10, v) : v;
    };
    return s;
  }

  function workspace(fig) {
    if (fig.dataset.ws) return fig.dataset.ws;
    var m = location.pathname.match(/^\/w\/([^/]+)/);
    return m ? decodeURIComponent(m[1]) : '';
  }

  function compareData() {
    var node = document.getElementById('compare-data');
    if (!node) return null;
    try {
      return JSON.parse(node.textContent);
    } catch (e) {
      return null;
    }
  }

  function runLabel(id, data) {
    if (data && data.runs) {
      var r = data.runs.find(function (r) { return r.id === id; });
      if (r && r.name) return r.name + ' (' + id.slice(0, 8) + ')';
    }
    return id.length > 12 ? id.slice(0, 12) + '…' : id;
  }

  function button(parent, text, label) {
    var b = htmlEl('button', { type: 'button', class: 'chart-button' }, parent, text);
    if (label) b.setAttribute('aria-label', label);
    return b;
  }

  // ---------------------------------------------------------------- line charts

  function LineChart(fig, data) {
    this.fig = fig;
    this.key = fig.dataset.metric;
    this.runs = fig.dataset.run.split(',').map(function (s) { return s.trim(); }).filter(Boolean);
    this.ws = workspace(fig);
    this.labels = this.runs.map(function (id) { return runLabel(id, data); });
    this.log = false;
    this.window = null; // [xmin, xmax] while zoomed
    this.series = [];
    this.request = 0;
    this.id = 'chart-' + ++chartCount;

    var bar = htmlEl('div', { class: 'chart-tools', role: 'group', 'aria-label': 'Chart controls for ' + this.key }, fig);
    this.resetButton = button(bar, 'Reset zoom');
    this.resetButton.disabled = true;
    this.logButton = button(bar, 'Log scale');
    this.logButton.setAttribute('aria-pressed', 'false');
    this.status = htmlEl('span', { class: 'chart-status', 'aria-live': 'polite' }, bar);
    this.area = htmlEl('div', { class: 'chart-area' }, fig);
    this.area.style.position = 'relative';
    this.legend = htmlEl('ul', { class: 'chart-legend', 'aria-label': 'Runs' }, fig);
    this.legend.style.cssText = 'list-style:none;margin:0.25rem 0 0;padding:0;display:flex;flex-wrap:wrap;gap:0.25rem 1rem;font-size:0.85rem';
    var self = this;
    this.resetButton.addEventListener('click', function () { self.zoom(null); });
    this.logButton.addEventListener('click', function () { self.toggleLog(); });
    this.load();
  }

  LineChart.prototype.url = function (run) {
    var width = Math.max(200, Math.round(this.area.clientWidth || 800));
    // About two points per pixel column: enough detail, never more than the server's cap.
    var q = 'points=' + Math.min(5000, width * 2);
    if (this.window) q += '&xmin=' + Math.floor(this.window[0]) + '&xmax=' + Math.ceil(this.window[1]);
    // A one-run figure may name its series URL (the run page does); else it is built from the ids.
    if (this.fig.dataset.seriesUrl && this.runs.length === 1) return this.fig.dataset.seriesUrl + '?' + q;
    return '/w/' + encodeURIComponent(this.ws) + '/runs/' + encodeURIComponent(run) + '/metrics/' +
      encodeURIComponent(this.key) + '/series?' + q;
  };

  LineChart.prototype.load = function () {
    var self = this;
    var ticket = ++this.request;
    this.status.textContent = 'Loading…';
    Promise.all(this.runs.map(function (run) {
      return fetch(self.url(run), { credentials: 'same-origin', headers: { Accept: 'application/json' } })
        .then(function (r) {
          var type = r.headers.get('content-type') || '';
          if (type.indexOf('application/json') < 0) throw new Error('the series could not be loaded (HTTP ' + r.status + '; signed out?)');
          return r.json().then(function (body) {
            if (!r.ok) throw new Error((body.error && body.error.message) || ('HTTP ' + r.status));
            return body;
          });
        });
    })).then(function (bodies) {
      if (ticket !== self.request) return; // a newer zoom is on its way
      self.series = bodies;
      self.status.textContent = self.window ? 'Steps ' + fmt(self.window[0]) + '–' + fmt(self.window[1]) : '';
      self.draw();
    }).catch(function (e) {
      if (ticket !== self.request) return;
      self.status.textContent = 'Error: ' + e.message;
    });
  };

  LineChart.prototype.zoom = function (win) {
    this.window = win;
    this.resetButton.disabled = !win;
    this.load();
  };

  LineChart.prototype.toggleLog = function () {
    var on = !this.log;
    if (on && !this.series.some(function (s) { return s.points.some(function (p) { return p[1] > 0; }); })) {
      this.status.textContent = 'Log scale needs positive values; this series has none.';
      return;
    }
    this.log = on;
    this.logButton.setAttribute('aria-pressed', String(on));
    this.draw();
  };

  LineChart.prototype.draw = function () {
    var self = this, log = this.log;
    var width = Math.max(280, this.area.clientWidth || 640);
    var x0 = M.left, x1 = width - M.right, y0 = HEIGHT - M.bottom, y1 = M.top;
    var xs = [], ys = [], hidden = 0;
    this.series.forEach(function (s) {
      s.points.forEach(function (p) {
        xs.push(p[0]);
        var v = p[1];
        if (v === null || !isFinite(v)) return;
        if (log && v <= 0) { hidden++; return; }
        ys.push(v);
      });
    });
    this.area.textContent = '';
    var made = chartSvg(this.area, width, this.id + '-t'), svg = made[0], title = made[1];
    var total = this.series.reduce(function (n, s) { return n + s.points.length; }, 0);
    if (!xs.length) {
      title.textContent = 'No points for ' + this.key;
      svgText(svg, width / 2, HEIGHT / 2, 'No points in this range', { 'text-anchor': 'middle' });
      this.fig.dataset.points = '0';
      return;
    }
    var xlo = this.window ? this.window[0] : Math.min.apply(null, xs);
    var xhi = this.window ? this.window[1] : Math.max.apply(null, xs);
    if (xlo === xhi) { xlo -= 1; xhi += 1; }
    var ylo = ys.length ? Math.min.apply(null, ys) : 0, yhi = ys.length ? Math.max.apply(null, ys) : 1;
    if (ylo === yhi) { if (log) { ylo /= 2; yhi *= 2; } else { ylo -= 1; yhi += 1; } }
    else if (!log) { var pad = (yhi - ylo) * 0.04; ylo -= pad; yhi += pad; }
    var sx = scale(xlo, xhi, x0, x1, false), sy = scale(ylo, yhi, y0, y1, log);
    title.textContent = 'Line chart of ' + this.key + ' for ' + this.labels.join(', ') + ': ' + total +
      ' points shown, steps ' + fmt(xlo) + ' to ' + fmt(xhi) + ', values ' + fmt(ylo) + ' to ' + fmt(yhi) +
      (log ? ', log scale' : '');

    // Axes with grid lines.
    var axes = svgEl('g', { 'aria-hidden': 'true' }, svg);
    linearTicks(xlo, xhi, Math.max(2, Math.floor((x1 - x0) / 90))).forEach(function (t) {
      var x = sx(t);
      svgEl('line', { x1: x, x2: x, y1: y0, y2: y1, stroke: '#eaeef2' }, axes);
      svgText(axes, x, y0 + 16, fmt(t), { 'text-anchor': 'middle' });
    });
    (log ? logTicks(ylo, yhi, 6) : linearTicks(ylo, yhi, 5)).forEach(function (t) {
      var y = sy(t);
      svgEl('line', { x1: x0, x2: x1, y1: y, y2: y, stroke: '#eaeef2' }, axes);
      svgText(axes, x0 - 6, y + 4, fmt(t), { 'text-anchor': 'end' });
    });
    svgEl('line', { x1: x0, x2: x1, y1: y0, y2: y0, stroke: '#57606a' }, axes);
    svgEl('line', { x1: x0, x2: x0, y1: y0, y2: y1, stroke: '#57606a' }, axes);
    svgText(axes, (x0 + x1) / 2, HEIGHT - 6, 'step', { 'text-anchor': 'middle', fill: '#57606a' });

    // One path per run; a missing, non-finite (or, in log scale, non-positive) value breaks the line.
    var clip = this.id + '-clip';
    svgEl('rect', { x: x0, y: y1, width: x1 - x0, height: y0 - y1 }, svgEl('clipPath', { id: clip }, svg));
    var plot = svgEl('g', { 'clip-path': 'url(#' + clip + ')' }, svg);
    this.series.forEach(function (s, i) {
      var color = COLORS[i % COLORS.length], d = '', pen = false, lone = [];
      s.points.forEach(function (p, j) {
        var ok = p[1] !== null && isFinite(p[1]) && !(log && p[1] <= 0);
        if (!ok) { pen = false; return; }
        var px = sx(p[0]).toFixed(1), py = sy(p[1]).toFixed(1);
        var prevOk = j > 0 && pen, next = s.points[j + 1];
        var nextOk = next && next[1] !== null && isFinite(next[1]) && !(log && next[1] <= 0);
        if (!prevOk && !nextOk) lone.push([px, py]);
        d += (pen ? 'L' : 'M') + px + ',' + py;
        pen = true;
      });
      if (d) svgEl('path', { d: d, fill: 'none', stroke: color, 'stroke-width': 1.6, 'stroke-linejoin': 'round' }, plot);
      lone.forEach(function (q) { svgEl('circle', { cx: q[0], cy: q[1], r: 2.5, fill: color }, plot); });
    });
    if (hidden) this.status.textContent = hidden + ' non-positive value' + (hidden > 1 ? 's' : '') + ' not shown in log scale';

    this.legend.textContent = '';
    this.series.forEach(function (s, i) {
      var li = htmlEl('li', {}, self.legend);
      var sw = htmlEl('span', { 'aria-hidden': 'true' }, li);
      sw.style.cssText = 'display:inline-block;width:1.2em;height:0.25em;vertical-align:middle;margin-right:0.35em;background:' + COLORS[i % COLORS.length];
      htmlEl('span', {}, li, self.labels[i] + ' — ' + s.returned_points + ' of ' + s.total_points + ' points');
    });

    this.interact(svg, sx, sy, x0, x1, y0, y1);
    this.fig.dataset.points = String(this.series.length ? this.series[0].points.length : 0);
  };

  // Hover (nearest point, also with arrow keys when the chart has focus) and drag-to-zoom.
  LineChart.prototype.interact = function (svg, sx, sy, x0, x1, y0, y1) {
    var self = this, log = this.log;
    var marker = svgEl('g', { 'pointer-events': 'none', visibility: 'hidden' }, svg);
    var dot = svgEl('circle', { r: 4, fill: '#fff', 'stroke-width': 2 }, marker);
    var box = svgEl('rect', { rx: 3, fill: '#1b1f24', opacity: 0.88 }, marker);
    var label = svgText(marker, 0, 0, '', { fill: '#fff' });
    var band = svgEl('rect', { y: y1, height: y0 - y1, fill: '#0a5cc2', opacity: 0.15, visibility: 'hidden' }, svg);
    var overlay = svgEl('rect', { x: x0, y: y1, width: x1 - x0, height: y0 - y1, fill: 'transparent', cursor: 'crosshair' }, svg);
    svg.setAttribute('tabindex', '0');
    var focus = null; // [series index, point index] of the marked point

    function usable(p) { return p[1] !== null && isFinite(p[1]) && !(log && p[1] <= 0); }

    function show(si, pi) {
      var p = self.series[si].points[pi];
      focus = [si, pi];
      var px = sx(p[0]), py = sy(p[1]);
      dot.setAttribute('cx', px); dot.setAttribute('cy', py);
      dot.setAttribute('stroke', COLORS[si % COLORS.length]);
      label.textContent = (self.runs.length > 1 ? self.labels[si] + ': ' : '') + 'step ' + p[0] + ', ' + fmt(p[1]);
      var w = label.getComputedTextLength ? label.getComputedTextLength() + 12 : 160;
      var lx = px + 10 + w > x1 ? px - 10 - w : px + 10, ly = Math.max(y1 + 2, py - 26);
      box.setAttribute('x', lx); box.setAttribute('y', ly); box.setAttribute('width', w); box.setAttribute('height', 20);
      label.setAttribute('x', lx + 6); label.setAttribute('y', ly + 14);
      marker.setAttribute('visibility', 'visible');
      self.fig.dataset.hover = p[0] + ':' + p[1];
    }

    function nearest(mx, my) {
      var best = null, bestD = Infinity;
      self.series.forEach(function (s, si) {
        var pts = s.points, lo = 0, hi = pts.length - 1, step = sx.invert(mx);
        if (hi < 0) return;
        while (lo < hi) { var mid = (lo + hi) >> 1; if (pts[mid][0] < step) lo = mid + 1; else hi = mid; }
        for (var j = Math.max(0, lo - 3); j <= Math.min(pts.length - 1, lo + 3); j++) {
          if (!usable(pts[j])) continue;
          var dx = sx(pts[j][0]) - mx, dy = sy(pts[j][1]) - my, d = dx * dx + dy * dy * 0.25;
          if (d < bestD) { bestD = d; best = [si, j]; }
        }
      });
      return best;
    }

    // Pointer position in the SVG's own units (it may be scaled down to fit a narrow window).
    function pos(ev) {
      var r = svg.getBoundingClientRect(), k = r.width ? svg.viewBox.baseVal.width / r.width : 1;
      return [(ev.clientX - r.left) * k, (ev.clientY - r.top) * k];
    }

    var drag = null;
    overlay.addEventListener('mousedown', function (ev) {
      if (ev.button !== 0) return;
      ev.preventDefault();
      drag = pos(ev)[0];
      // Listen on the window so that a drag released outside the chart still ends.
      window.addEventListener('mouseup', function (up) {
        var end = pos(up)[0], a = Math.max(x0, Math.min(drag, end)), b = Math.min(x1, Math.max(drag, end));
        drag = null;
        band.setAttribute('visibility', 'hidden');
        if (b - a < 5) return; // a click, not a drag
        var lo = Math.floor(sx.invert(a)), hi = Math.ceil(sx.invert(b));
        if (hi > lo) self.zoom([lo, hi]);
      }, { once: true });
    });
    overlay.addEventListener('mousemove', function (ev) {
      var p = pos(ev);
      if (drag !== null) {
        var a = Math.max(x0, Math.min(drag, p[0])), b = Math.min(x1, Math.max(drag, p[0]));
        band.setAttribute('x', a); band.setAttribute('width', b - a); band.setAttribute('visibility', 'visible');
      }
      var n = nearest(p[0], p[1]);
      if (n) show(n[0], n[1]);
    });
    overlay.addEventListener('mouseleave', function () { marker.setAttribute('visibility', 'hidden'); });
    svg.addEventListener('keydown', function (ev) {
      var keys = { ArrowLeft: -1, ArrowRight: 1 };
      if (!(ev.key in keys) || !self.series.length) return;
      ev.preventDefault();
      var si = focus ? focus[0] : 0, pts = self.series[si].points, j = focus ? focus[1] : -1;
      do { j += keys[ev.key]; } while (j >= 0 && j < pts.length && !usable(pts[j]));
      if (j >= 0 && j < pts.length) show(si, j);
    });
    svg.addEventListener('blur', function () { marker.setAttribute('visibility', 'hidden'); });
  };

  // ---------------------------------------------------------------- compare: scatter and parallel coordinates

  function numeric(values) {
    return values.length > 0 && values.every(function (v) { return v !== '' && isFinite(Number(v)); });
  }

  // An axis for param values: linear when all are numbers, else one slot per distinct value.
  function paramAxis(values, r0, r1) {
    var present = values.filter(function (v) { return v !== undefined && v !== null; });
    if (numeric(present)) {
      var nums = present.map(Number), lo = Math.min.apply(null, nums), hi = Math.max.apply(null, nums);
      if (lo === hi) { lo -= 1; hi += 1; }
      var s = scale(lo, hi, r0, r1, false);
      return { at: function (v) { return v === undefined || v === null ? null : s(Number(v)); },
        ticks: linearTicks(lo, hi, 4).map(function (t) { return [s(t), fmt(t)]; }) };
    }
    var cats = Array.from(new Set(present)).sort();
    var slot = function (v) { var i = cats.indexOf(v); return i < 0 ? null : r0 + (r1 - r0) * (cats.length === 1 ? 0.5 : i / (cats.length - 1)); };
    return { at: slot, ticks: cats.map(function (c) { return [slot(c), c.length > 14 ? c.slice(0, 13) + '…' : c]; }) };
  }

  function metricValues(data, key) {
    return data.runs.map(function (r) { var v = r.metrics[key]; return typeof v === 'number' && isFinite(v) ? v : null; });
  }

  function drawScatter(root, data) {
    var ms = root.querySelector('select[name=metric]'), ps = root.querySelector('select[name=param]');
    var area = root.querySelector('.chart-area') || htmlEl('div', { class: 'chart-area' }, root);
    area.textContent = '';
    var metric = ms && ms.value, param = ps && ps.value;
    var width = Math.max(280, area.clientWidth || 640), x0 = M.left, x1 = width - M.right, y0 = HEIGHT - M.bottom, y1 = M.top;
    var made = chartSvg(area, width, 'scatter-title'), svg = made[0], title = made[1];
    if (!metric || !param) {
      title.textContent = 'Scatter: the runs need a metric and a param to plot';
      svgText(svg, width / 2, HEIGHT / 2, 'Nothing to plot: no metric or no param', { 'text-anchor': 'middle' });
      return;
    }
    var ys = metricValues(data, metric), known = ys.filter(function (v) { return v !== null; });
    var xa = paramAxis(data.runs.map(function (r) { return r.params[param]; }), x0 + 10, x1 - 10);
    var lo = known.length ? Math.min.apply(null, known) : 0, hi = known.length ? Math.max.apply(null, known) : 1;
    if (lo === hi) { lo -= 1; hi += 1; }
    var sy = scale(lo, hi, y0 - 8, y1 + 8, false);
    var plotted = 0;
    var g = svgEl('g', {}, svg);
    var axes = svgEl('g', { 'aria-hidden': 'true' }, g);
    xa.ticks.forEach(function (t) { svgText(axes, t[0], y0 + 16, t[1], { 'text-anchor': 'middle' }); });
    linearTicks(lo, hi, 5).forEach(function (t) {
      svgEl('line', { x1: x0, x2: x1, y1: sy(t), y2: sy(t), stroke: '#eaeef2' }, axes);
      svgText(axes, x0 - 6, sy(t) + 4, fmt(t), { 'text-anchor': 'end' });
    });
    svgEl('line', { x1: x0, x2: x1, y1: y0, y2: y0, stroke: '#57606a' }, axes);
    svgEl('line', { x1: x0, x2: x0, y1: y0, y2: y1, stroke: '#57606a' }, axes);
    svgText(axes, (x0 + x1) / 2, HEIGHT - 6, param, { 'text-anchor': 'middle', fill: '#57606a' });
    data.runs.forEach(function (r, i) {
      var x = xa.at(r.params[param]), y = ys[i];
      if (x === null || y === null) return;
      plotted++;
      var c = svgEl('circle', { cx: x, cy: sy(y), r: 5, fill: COLORS[i % COLORS.length], stroke: '#fff', 'stroke-width': 1 }, g);
      svgEl('title', {}, c).textContent = runLabel(r.id, data) + ': ' + param + ' = ' + r.params[param] + ', ' + metric + ' = ' + fmt(y);
    });
    title.textContent = 'Scatter of ' + metric + ' against ' + param + ' for ' + plotted + ' of ' + data.runs.length + ' runs';
    root.dataset.points = String(plotted);
  }

  function drawParallel(root, data) {
    var ms = root.querySelector('select[name=metric]');
    var area = root.querySelector('.chart-area') || htmlEl('div', { class: 'chart-area' }, root);
    area.textContent = '';
    var metric = ms && ms.value, params = data.param_keys || [];
    var width = Math.max(320, area.clientWidth || 640), top = 24, bottom = HEIGHT - 30;
    var made = chartSvg(area, width, 'parallel-title'), svg = made[0], title = made[1];
    if (!metric) {
      title.textContent = 'Parallel coordinates: the runs have no metric';
      svgText(svg, width / 2, HEIGHT / 2, 'Nothing to plot: no metric', { 'text-anchor': 'middle' });
      return;
    }
    var names = params.concat([metric]);
    var step = (width - 2 * 60) / Math.max(1, names.length - 1);
    var xs = names.map(function (_, i) { return names.length === 1 ? width / 2 : 60 + i * step; });
    var ys = metricValues(data, metric), known = ys.filter(function (v) { return v !== null; });
    var lo = known.length ? Math.min.apply(null, known) : 0, hi = known.length ? Math.max.apply(null, known) : 1;
    if (lo === hi) { lo -= 1; hi += 1; }
    var sm = scale(lo, hi, bottom, top, false);
    var axes = params.map(function (p) { return paramAxis(data.runs.map(function (r) { return r.params[p]; }), bottom, top); });
    axes.push({ at: function (v) { return v === null ? null : sm(v); }, ticks: linearTicks(lo, hi, 4).map(function (t) { return [sm(t), fmt(t)]; }) });
    var lines = svgEl('g', {}, svg);
    data.runs.forEach(function (r, i) {
      var d = '', pen = false;
      names.forEach(function (n, k) {
        var y = k < params.length ? axes[k].at(r.params[n]) : axes[k].at(ys[i]);
        if (y === null) { pen = false; return; }
        d += (pen ? 'L' : 'M') + xs[k].toFixed(1) + ',' + y.toFixed(1);
        pen = true;
      });
      if (!d) return;
      var path = svgEl('path', { d: d, fill: 'none', stroke: COLORS[i % COLORS.length], 'stroke-width': 2, opacity: 0.85 }, lines);
      svgEl('title', {}, path).textContent = runLabel(r.id, data) + ': ' + metric + ' = ' + fmt(ys[i]);
    });
    var g = svgEl('g', { 'aria-hidden': 'true' }, svg);
    names.forEach(function (n, k) {
      svgEl('line', { x1: xs[k], x2: xs[k], y1: top, y2: bottom, stroke: '#57606a' }, g);
      svgText(g, xs[k], 14, n.length > 18 ? n.slice(0, 17) + '…' : n, { 'text-anchor': 'middle', 'font-weight': k === names.length - 1 ? 700 : 400 });
      axes[k].ticks.forEach(function (t) { svgText(g, xs[k] + 4, t[0] + 4, t[1], { 'font-size': 10, fill: '#57606a' }); });
    });
    title.textContent = 'Parallel coordinates of ' + params.length + ' params and ' + metric + ' for ' + data.runs.length + ' runs';
  }

  // Sets up the compare page's scatter and parallel coordinates; returns a function redrawing both.
  function compareViews(data) {
    var redraws = [];
    [['scatter', drawScatter], ['parallel-coords', drawParallel]].forEach(function (v) {
      var root = document.getElementById(v[0]);
      if (!root) return;
      var redraw = function () { v[1](root, data); };
      root.querySelectorAll('select').forEach(function (s) { s.addEventListener('change', redraw); });
      redraw();
      redraws.push(redraw);
    });
    return function () { redraws.forEach(function (r) { r(); }); };
  }

  // ---------------------------------------------------------------- start

  function start() {
    var data = compareData();
    var charts = [];
    document.querySelectorAll('figure.metric-chart[data-metric][data-run]').forEach(function (fig) {
      charts.push(new LineChart(fig, data));
    });
    var redrawCompare = data ? compareViews(data) : function () {};
    var pending = null;
    window.addEventListener('resize', function () {
      clearTimeout(pending);
      pending = setTimeout(function () {
        charts.forEach(function (c) { if (c.series.length) c.draw(); });
        redrawCompare();
      }, 200);
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
