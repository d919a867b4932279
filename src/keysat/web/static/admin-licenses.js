// Licenses screen enhancements (web.md 11.5.4): the issue form's tier list follows the
// chosen product, "Change tier" opens in a dialog, and a downgrade asks for a second
// confirmation in place. Without this file every form still posts and the server asks.
(function () {
  "use strict";
  var admin = window.KeysatAdmin;
  if (!admin) { return; }

  admin.start("issue tiers", function () {
    admin.each("[data-issue-form]", function (form) {
      var product = form.querySelector("[data-product-select]");
      var tier = form.querySelector("[data-tier-select]");
      if (!product || !tier) { return; }
      function sync() {
        admin.each("optgroup", function (group) {
          var mine = group.getAttribute("data-product") === product.value;
          group.hidden = !mine;
          group.disabled = !mine;
        }, tier);
        var chosen = tier.options[tier.selectedIndex];
        if (chosen && chosen.value && chosen.getAttribute("data-product") !== product.value) { tier.value = ""; }
      }
      product.addEventListener("change", sync);
      sync();
    });
  });

  admin.start("change tier dialog", function () {
    var dialog = document.getElementById("change-tier-dialog");
    if (!dialog) { return; }
    admin.each("[data-change-tier]", function (link) {
      link.addEventListener("click", function (event) {
        event.preventDefault();
        admin.openDialog(dialog, link);
      });
    });
    admin.each("[data-dialog-close]", function (button) {
      button.addEventListener("click", function () { admin.closeDialog(dialog); });
    }, dialog);
  });

  admin.start("downgrade warning", function () {
    admin.each("[data-change-tier-form]", function (form) {
      var select = form.querySelector("[data-tier-choice]");
      var warning = form.querySelector("[data-downgrade-warning]");
      var ok = form.querySelector("[data-downgrade-ok]");
      if (!select || !warning || !ok) { return; }
      var list = warning.querySelector("[data-lost-list]");
      var line = warning.querySelector("[data-lost-line]");
      function sync() {
        var option = select.options[select.selectedIndex];
        var down = Boolean(option && option.getAttribute("data-downgrade"));
        var lost = option ? option.getAttribute("data-lost") : "";
        warning.hidden = !down;
        ok.required = down;
        if (!down) { ok.checked = false; }
        if (list) { list.textContent = lost || ""; }
        if (line) { line.hidden = !lost; }
      }
      select.addEventListener("change", sync);
      sync();
    });
  });
})();
