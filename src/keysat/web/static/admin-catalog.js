// Products and Policies enhancements (web.md 11.5.2, 11.5.3): the slug follows the name
// until edited, catalog rows are added and removed in place, the price default follows the
// currency, the recurring section opens with its checkbox, and tier cards can be dragged
// along the ladder. Every form works without this file.
(function () {
  "use strict";
  var admin = window.KeysatAdmin;
  function start(name, fn) { if (admin) { admin.start(name, fn); } else { fn(); } }
  function each(selector, fn, root) {
    Array.prototype.forEach.call((root || document).querySelectorAll(selector), fn);
  }

  function slugify(text) {
    return text.toLowerCase().normalize("NFKD").replace(/[\u0300-\u036f]/g, "")
      .replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 128);
  }

  start("slug", function () {
    each("form", function (form) {
      var source = form.querySelector("[data-slug-source]");
      var target = form.querySelector("[data-slug-target]");
      if (!source || !target) { return; }
      var touched = target.value !== "" && target.value !== slugify(source.value);
      target.addEventListener("input", function () { touched = target.value !== ""; });
      source.addEventListener("input", function () { if (!touched) { target.value = slugify(source.value); } });
      // A name typed before this script ran fills the slug now.
      if (!touched && target.value === "" && source.value !== "") { target.value = slugify(source.value); }
    });
  });

  start("catalog rows", function () {
    each("[data-catalog-editor]", function (editor) {
      var rows = editor.querySelector("[data-catalog-rows]");
      var template = editor.querySelector("template[data-catalog-template]");
      var add = editor.querySelector("[data-add-row]");
      function wire(row) {
        var remove = row.querySelector("[data-remove-row]");
        if (remove) {
          remove.type = "button";
          remove.addEventListener("click", function () { row.remove(); if (add) { add.focus(); } });
        }
      }
      each("[data-catalog-row]", wire, rows);
      if (add && template && rows) {
        add.type = "button";
        add.addEventListener("click", function () {
          var row = template.content.firstElementChild.cloneNode(true);
          rows.appendChild(row);
          wire(row);
          var first = row.querySelector("input");
          if (first) { first.focus(); }
        });
      }
    });
  });

  start("price defaults", function () {
    each("[data-price-row]", function (row) {
      var defaults = JSON.parse(row.getAttribute("data-defaults") || "{}");
      var amount = row.querySelector("input[name=price_value]");
      var currency = row.querySelector("select[name=price_currency]");
      if (!amount || !currency) { return; }
      var before = currency.value;
      currency.addEventListener("change", function () {
        if (amount.value === "" || amount.value === defaults[before]) { amount.value = defaults[currency.value] || ""; }
        before = currency.value;
      });
    });
  });

  start("recurring", function () {
    each("[data-recurring-toggle]", function (toggle) {
      var form = toggle.form;
      if (!form) { return; }
      function sync() {
        each("[data-recurring-only]", function (el) { el.hidden = !toggle.checked; }, form);
        each("[data-one-off-only]", function (el) { el.hidden = toggle.checked; }, form);
      }
      toggle.addEventListener("change", sync);
      sync();
    });
    each("select[data-custom-select]", function (select) {
      var custom = document.getElementById(select.getAttribute("data-custom-select"));
      if (!custom) { return; }
      function sync() { custom.hidden = select.value !== "custom"; }
      select.addEventListener("change", sync);
      sync();
    });
  });

  start("ladder drag", function () {
    each("[data-ladder]", function (list) {
      var form = document.getElementById(list.getAttribute("data-ladder"));
      if (!form) { return; }
      var dragged = null;
      each("li[data-tier-id]", function (item) {
        var handle = item.querySelector(".drag-handle");
        if (!handle) { return; }
        handle.hidden = false;
        item.setAttribute("draggable", "true");
        item.addEventListener("dragstart", function (event) {
          dragged = item;
          item.classList.add("is-dragging");
          if (event.dataTransfer) { event.dataTransfer.effectAllowed = "move"; event.dataTransfer.setData("text/plain", item.getAttribute("data-tier-id")); }
        });
        item.addEventListener("dragend", function () { item.classList.remove("is-dragging"); dragged = null; });
        item.addEventListener("dragover", function (event) { if (dragged && dragged !== item) { event.preventDefault(); item.classList.add("drop-target"); } });
        item.addEventListener("dragleave", function () { item.classList.remove("drop-target"); });
        item.addEventListener("drop", function (event) {
          event.preventDefault();
          item.classList.remove("drop-target");
          if (!dragged || dragged === item) { return; }
          var items = Array.prototype.slice.call(list.querySelectorAll("li[data-tier-id]"));
          var after = items.indexOf(dragged) < items.indexOf(item);
          list.insertBefore(dragged, after ? item.nextSibling : item);
          var order = Array.prototype.map.call(list.querySelectorAll("li[data-tier-id]"), function (li) { return li.getAttribute("data-tier-id"); });
          form.querySelector("input[name=order]").value = order.join(",");
          form.submit();
        });
      }, list);
    });
  });
})();
