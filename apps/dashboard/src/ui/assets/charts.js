// Draws the charts of a page with uPlot (served from this dashboard, never a CDN). The page puts
// the data in <script type="application/json" id="chart-data"> and an empty <div id="…"
// class="chart-canvas"> per chart; nothing here fetches anything.
(function () {
  'use strict';
  var PALETTE = ['#175cd3', '#067647', '#b54708', '#b42318', '#6941c6', '#0e7090', '#c11574', '#475467'];

  function fmtNumber(v) {
    if (v == null) return '–';
    var a = Math.abs(v);
    return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
  }

  function draw(spec) {
    var el = document.getElementById(spec.id);
    if (!el || typeof uPlot === 'undefined') return;
    var width = Math.max(320, el.clientWidth || 560);
    var series = [{ label: spec.xLabel || (spec.time ? 'time' : 'x') }];
    var data = [spec.x];
    spec.series.forEach(function (s, i) {
      var opts = {
        label: s.label,
        stroke: s.color || PALETTE[i % PALETTE.length],
        width: 1.5,
        value: function (u, v) { return fmtNumber(v) + (spec.unit ? ' ' + spec.unit : ''); },
      };
      if (spec.bars && uPlot.paths && uPlot.paths.bars) {
        opts.paths = uPlot.paths.bars({ size: [0.9, 40] });
        opts.fill = (s.color || PALETTE[i % PALETTE.length]) + '88';
      }
      series.push(opts);
      data.push(s.values);
    });
    var chart = new uPlot(
      {
        width: width,
        height: spec.height || 220,
        scales: { x: { time: !!spec.time }, y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } } },
        series: series,
        axes: [{}, { label: spec.unit || '', size: 60 }],
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
      },
      data,
      el,
    );
    el.setAttribute('data-drawn', 'true');
    return chart;
  }

  function start() {
    var block = document.getElementById('chart-data');
    if (!block) return;
    var specs = JSON.parse(block.textContent || '[]');
    var charts = specs.map(draw).filter(Boolean);
    var timer;
    window.addEventListener('resize', function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        charts.forEach(function (c) {
          var el = c.root.parentElement;
          if (el && el.clientWidth) c.setSize({ width: el.clientWidth, height: c.height });
        });
      }, 150);
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
