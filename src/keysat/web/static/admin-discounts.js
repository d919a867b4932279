// Discount-code forms (web.md 11.5.8, 2.5). The forms post without this file; it only
// upper-cases the code as typed, fits the amount hint to the kind, shows the chosen
// product's tiers, reveals the use cap, and turns the expiry typed in local time into UTC.
(function () {
  "use strict";
  var admin = window.KeysatAdmin;
  var each = admin ? admin.each : function (selector, fn) { Array.prototype.forEach.call(document.querySelectorAll(selector), fn); };
  var start = admin ? admin.start : function (name, fn) { try { fn(); } catch (err) { console.warn(name, err); } };

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function localValue(date) {
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + "T" + pad(date.getHours()) + ":" + pad(date.getMinutes());
  }
  function utcText(date) {
    return date.getUTCFullYear() + "-" + pad(date.getUTCMonth() + 1) + "-" + pad(date.getUTCDate()) + " " + pad(date.getUTCHours()) + ":" + pad(date.getUTCMinutes()) + " UTC";
  }

  start("expiry in local time", function () {
    var zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (err) { zone = ""; }
    each("input[data-local-utc]", function (input) {
      var field = input.closest(".field");
      var hidden = field.querySelector("[data-utc-value]");
      var line = field.querySelector("[data-utc-line]");
      var label = field.querySelector("[data-expiry-label]");
      if (label) { label.textContent = "Expires at (your time" + (zone ? ", " + zone : "") + ")"; }
      // The server renders the stored time in UTC; show it in the operator's zone.
      if (input.value) {
        var stored = new Date(input.value + ":00Z");
        if (!isNaN(stored.getTime())) { input.value = localValue(stored); }
      }
      function sync() {
        if (!input.value) {
          hidden.value = "";
          line.textContent = "Leave empty for a code that never expires.";
          return;
        }
        var when = new Date(input.value);
        if (isNaN(when.getTime())) { hidden.value = ""; return; }
        hidden.value = when.toISOString();
        line.textContent = "Sent as " + utcText(when) + ".";
      }
      input.addEventListener("input", sync);
      input.addEventListener("change", sync);
      sync();
    });
  });

  start("code in capitals", function () {
    each("input[name=code][id=f-code]", function (input) {
      input.addEventListener("input", function () {
        var at = input.selectionStart;
        input.value = input.value.toUpperCase();
        try { input.setSelectionRange(at, at); } catch (err) { /* not a text input */ }
      });
    });
  });

  start("create form", function () {
    each("form[data-code-form]", function (form) {
      var kind = form.querySelector("[data-kind]");
      var amountField = form.querySelector("[data-amount-field]");
      var hint = form.querySelector("[data-amount-hint]");
      var currencyField = form.querySelector("[data-currency-field]");
      var currency = form.querySelector("select[name=currency]");
      var product = form.querySelector("[data-product-select]");
      var pills = form.querySelector("[data-tier-pills]");
      function currentCurrency() {
        if (currency.value) { return currency.value; }
        var option = product.options[product.selectedIndex];
        return (option && option.getAttribute("data-currency")) || "SAT";
      }
      function syncKind() {
        var value = kind.value;
        amountField.hidden = value === "free_license";
        currencyField.hidden = value === "percent" || value === "free_license";
        if (!hint) { return; }
        var unit = currentCurrency();
        var example = unit === "SAT" ? "whole sats, for example 5000" : "in " + unit + ", for example 9.99";
        if (value === "percent") { hint.textContent = "A percentage, up to two decimals: 12.5 means 12.5% off."; }
        else if (value === "fixed_sats") { hint.textContent = "The amount taken off the price, " + example + "."; }
        else if (value === "set_price") { hint.textContent = "The price the buyer pays instead, " + example + "."; }
      }
      function syncProduct() {
        var chosen = product.value;
        var groups = pills ? pills.querySelectorAll(".tier-pill-group") : [];
        Array.prototype.forEach.call(groups, function (group) {
          var mine = chosen && group.getAttribute("data-product") === chosen;
          group.hidden = !mine;
          if (!mine) { Array.prototype.forEach.call(group.querySelectorAll("input"), function (box) { box.checked = false; }); }
          var name = group.querySelector(".small");
          if (name) { name.hidden = true; }
        });
        if (pills) {
          var any = chosen && pills.querySelector(".tier-pill-group[data-product='" + chosen.replace(/'/g, "") + "']");
          pills.hidden = !any;
        }
        syncKind();
      }
      kind.addEventListener("change", syncKind);
      currency.addEventListener("change", syncKind);
      product.addEventListener("change", syncProduct);
      syncProduct();
    });
  });

  start("use cap", function () {
    each("[data-limit-toggle]", function (toggle) {
      var form = toggle.form;
      var input = form.querySelector("[data-limit-field]");
      if (!input) { return; }
      var field = input.closest(".field");
      function sync() {
        field.hidden = !toggle.checked;
        input.disabled = !toggle.checked;
      }
      toggle.addEventListener("change", function () { sync(); if (toggle.checked) { input.focus(); } });
      sync();
    });
  });
})();
