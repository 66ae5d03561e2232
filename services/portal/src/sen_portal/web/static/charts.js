// Charts drawn with Chart.js from data the page carries in <script type="application/json"> blocks.
(function () {
  "use strict";
  function draw() {
    if (!window.Chart) return;
    Chart.defaults.font.family = "system-ui, 'Noto Sans', Arial, sans-serif";
    Chart.defaults.color = "#1a1a1a";
    Chart.defaults.animation = false;
    var lang = document.documentElement.lang || "vi";
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
      new Chart(c, cfg);
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw); else draw();
})();
