// Charts drawn with Chart.js from data the page carries in <script type="application/json"> blocks.
(function () {
  "use strict";
  function draw() {
    if (!window.Chart) return;
    Chart.defaults.font.family = "system-ui, 'Noto Sans', Arial, sans-serif";
    Chart.defaults.color = "#1a1a1a";
    Chart.defaults.animation = false;
    var lang = document.documentElement.lang || "vi";
    // numbers on the axes and in the tooltips in the page's language (2,5 and 1.234 on a Vietnamese page), not the
    // browser's: Chart.js formats them with Intl in this locale, by default the browser's own
    Chart.defaults.locale = lang === "en" ? "en-GB" : "vi-VN";
    var fmt = new Intl.DateTimeFormat(lang === "en" ? "en-GB" : "vi-VN",
      {day: "2-digit", month: "2-digit", year: "2-digit", timeZone: "Asia/Ho_Chi_Minh"});
    var holder = document.getElementById("series-data");
    var series = holder ? JSON.parse(holder.textContent) : {};
    document.querySelectorAll("canvas[data-series]").forEach(function (c) {
      var s = series[c.getAttribute("data-series")];
      if (!s) return;
      new Chart(c, {type: "line", data: {
        labels: s.points.map(function (p) { return fmt.format(new Date(p.t)); }),
        datasets: [{label: s.label + (s.unit ? " (" + s.unit + ")" : ""), data: s.points.map(function (p) { return p.v; }),
          borderColor: "#8a1c4a", backgroundColor: "#8a1c4a", tension: 0.2}]},
        options: {maintainAspectRatio: false, plugins: {legend: {display: false}}}});
    });
    document.querySelectorAll("canvas[data-chart]").forEach(function (c) {
      var el = document.getElementById("chart-" + c.getAttribute("data-chart"));
      if (!el) return;
      var cfg = JSON.parse(el.textContent);
      cfg.options = Object.assign({maintainAspectRatio: false}, cfg.options || {});
      if (cfg.keepEnds) keepEnds(cfg);
      if (cfg.money) money(cfg);
      inLegend(cfg);
      delete cfg.keepEnds;
      delete cfg.money;
      new Chart(c, cfg);
    });
  }
  // A time axis (the weeks) whose labels do not all fit: Chart.js's auto-skip drops labels from the end,
  // and the last week, often the only one with data, went unlabelled on a phone (review 8). Instead every
  // step-th label is kept counting back from the last, and the first too when it does not touch its
  // neighbour; the others stay ticks without a label. The step is computed from the axis's own width.
  function keepEnds(cfg) {
    var labels = cfg.data.labels || [];
    var scales = cfg.options.scales = cfg.options.scales || {};
    var x = scales.x = scales.x || {};
    var widest = 0;
    var ctx = document.createElement("canvas").getContext("2d");
    ctx.font = (Chart.defaults.font.size || 12) + "px " + Chart.defaults.font.family;
    labels.forEach(function (l) { widest = Math.max(widest, ctx.measureText(String(l)).width); });
    x.ticks = Object.assign({}, x.ticks, {autoSkip: false, maxRotation: 0, minRotation: 0,
      callback: function (value, index) {
        var n = labels.length, room = (this.maxWidth || this.chart.width) / Math.max(n, 1);
        var step = Math.max(1, Math.ceil((widest + 8) / room));
        var last = n - 1, first = last % step;  // the first label kept counting back from the last
        var shown = index === 0 || ((last - index) % step === 0 && !(index === first && first * room < widest + 8));
        return shown ? this.getLabelForValue(value) : "";
      }});
  }
  // An amount of đồng as every page writes it, in both languages (formatting.vnd): 448.000 ₫
  function vnd(n) {
    return (n < 0 ? "-" : "") + String(Math.abs(Math.round(n))).replace(/\B(?=(\d{3})+(?!\d))/g, ".") + "\u00a0₫";
  }
  // A chart of money (the cashless share): its tooltips say the amount in đồng, not a bare number in the
  // browser's own grouping (review 12: "448,000" in an English browser, and never a unit)
  function money(cfg) {
    var plugins = cfg.options.plugins = cfg.options.plugins || {};
    var tooltip = plugins.tooltip = plugins.tooltip || {};
    tooltip.callbacks = Object.assign({}, tooltip.callbacks, {label: function (item) {
      return (item.label ? item.label + ": " : "") + vnd(item.parsed);
    }});
  }
  // A dataset marked inLegend: false (the facilities chart's bars, whose colours the axis labels name) has no legend
  // entry; the others keep theirs (the goal's line, named with its figure)
  function inLegend(cfg) {
    var sets = (cfg.data && cfg.data.datasets) || [];
    if (!sets.some(function (d) { return d.inLegend === false; })) return;
    var plugins = cfg.options.plugins = cfg.options.plugins || {};
    var legend = plugins.legend = plugins.legend || {};
    legend.labels = Object.assign({}, legend.labels, {filter: function (item) {
      return (sets[item.datasetIndex] || {}).inLegend !== false;
    }});
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw); else draw();
})();
