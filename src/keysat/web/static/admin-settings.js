// Settings screen enhancements (web.md 11.5.13): the analytics opt-in saves on change
// (its Save button is for pages without this file).
// Every form also works as a plain post without this file.
(function () {
  "use strict";
  var admin = window.KeysatAdmin;
  if (!admin) { return; }
  admin.start("save on change", function () {
    admin.each("form[data-save-on-change]", function (form) {
      var box = form.querySelector("input[type=checkbox]");
      var save = form.querySelector("[data-save-button]");
      if (save) { save.hidden = true; }
      if (box) { box.addEventListener("change", function () { form.submit(); }); }
    });
  });
})();
