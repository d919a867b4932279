// Dashboard charts (web.md 11.5.1): hovering or focusing a bar shows its value in the
// chart's readout line. The charts and their "Show data" tables work without this file.
(function () {
  "use strict";
  var admin = window.KeysatAdmin;
  function start(fn) { if (admin) { admin.start("charts", fn); } else { fn(); } }
  start(function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-chart]"), function (chart) {
      var readout = chart.querySelector("[data-readout]");
      if (!readout) { return; }
      var resting = readout.textContent;
      var current = null;
      function show(bar) {
        if (current) { current.classList.remove("is-current"); }
        current = bar;
        bar.classList.add("is-current");
        readout.textContent = bar.getAttribute("data-value");
        readout.classList.add("is-live");
      }
      function clear() {
        if (current) { current.classList.remove("is-current"); }
        current = null;
        readout.textContent = resting;
        readout.classList.remove("is-live");
      }
      Array.prototype.forEach.call(chart.querySelectorAll(".bar"), function (bar) {
        bar.addEventListener("mouseenter", function () { show(bar); });
        bar.addEventListener("focus", function () { show(bar); });
        bar.addEventListener("mouseleave", clear);
        bar.addEventListener("blur", clear);
      });
    });
  });
})();
