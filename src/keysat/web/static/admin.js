// Admin UI enhancements (web.md 11.3). Every page works without this file; each enhancement
// starts on its own, so an error in one never stops the others or a form's native submit.
(function () {
  "use strict";

  function each(selector, fn, root) {
    Array.prototype.forEach.call((root || document).querySelectorAll(selector), function (el) {
      try { fn(el); } catch (err) { if (window.console) { console.warn("admin enhancement failed", err); } }
    });
  }

  function start(name, fn) {
    try { fn(); } catch (err) { if (window.console) { console.warn("admin enhancement failed: " + name, err); } }
  }

  var toastRegion = document.getElementById("toasts");
  function toast(text, kind) {
    if (!toastRegion) { return; }
    var item = document.createElement("div");
    item.className = "toast toast-" + (kind || "ok");
    item.textContent = text;
    toastRegion.appendChild(item);
    window.setTimeout(function () { item.remove(); }, 5000);
  }

  function copy(text, button) {
    function done() {
      var before = button.getAttribute("data-label") || button.textContent;
      button.setAttribute("data-label", before);
      button.classList.add("copied");
      if (button.classList.contains("copy-id")) {
        var label = button.querySelector(".copy-id-text");
        if (label) { label.textContent = "✓ copied"; }
        window.setTimeout(function () { if (label) { label.textContent = button.getAttribute("data-short"); } button.classList.remove("copied"); }, 1500);
      } else {
        button.textContent = "✓ Copied";
        window.setTimeout(function () { button.textContent = before; button.classList.remove("copied"); }, 1500);
      }
      toast("Copied", "ok");
    }
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, function () { toast("Copy failed; select the text instead.", "error"); });
    }
  }

  start("copy", function () {
    each("[data-copy]", function (button) {
      button.hidden = false;
      if (button.classList.contains("copy-id")) {
        var full = button.getAttribute("data-copy");
        var label = button.querySelector(".copy-id-text");
        var short = full.length > 10 ? full.slice(0, 8) + "…" : full;
        button.setAttribute("data-short", short);
        if (label) { label.textContent = short; }
      }
      button.addEventListener("click", function () { copy(button.getAttribute("data-copy"), button); });
    });
    each("[data-copy-target]", function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        var target = document.getElementById(button.getAttribute("data-copy-target"));
        if (target) {
          copy(target.textContent.trim(), button);
          var box = button.closest("[data-show-once]");
          if (box) { box.setAttribute("data-copied", "1"); }
        }
      });
    });
  });

  function relative(date) {
    var millis = date.getTime() - Date.now();
    var seconds = Math.round(millis / 1000);
    var abs = Math.abs(seconds);
    var text;
    if (abs < 45) { return millis > 0 ? "in a moment" : "just now"; }
    if (abs < 3600) { text = Math.round(abs / 60) + " min"; }
    else if (abs < 86400) { text = Math.round(abs / 3600) + " h"; }
    else if (abs < 86400 * 60) { text = Math.round(abs / 86400) + " d"; }
    else if (abs < 86400 * 730) { text = Math.round(abs / (86400 * 30)) + " mo"; }
    else { text = Math.round(abs / (86400 * 365)) + " y"; }
    return millis > 0 ? "in " + text : text + " ago";
  }

  start("times", function () {
    each("time[data-relative]", function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date.getTime())) { return; }
      var absolute = el.textContent;
      el.textContent = relative(date);
      el.setAttribute("title", absolute);
      el.setAttribute("aria-label", el.textContent + " (" + absolute + ")");
    });
  });

  var lastOpener = null;
  function openDialog(dialog, opener) {
    lastOpener = opener || document.activeElement;
    if (typeof dialog.showModal === "function") { dialog.showModal(); } else { dialog.setAttribute("open", ""); }
    var focus = dialog.querySelector("textarea, input:not([type=hidden]), [data-confirm-button]");
    if (focus) { focus.focus(); }
  }
  function closeDialog(dialog) {
    if (typeof dialog.close === "function") { dialog.close(); } else { dialog.removeAttribute("open"); }
    if (lastOpener && lastOpener.focus) { lastOpener.focus(); }
  }

  start("confirm dialogs", function () {
    each("form[data-confirm]", function (form) {
      var dialog = form.querySelector("dialog");
      if (!dialog) { return; }
      var opener = form.querySelector("button[type=submit]:not([data-confirm-button])");
      var confirmed = dialog.querySelector("[data-confirmed]");
      var typed = dialog.querySelector("[data-must-equal]");
      var go = dialog.querySelector("[data-confirm-button]");
      function syncTyped() { if (typed && go) { go.disabled = typed.value !== typed.getAttribute("data-must-equal"); } }
      if (typed) { typed.addEventListener("input", syncTyped); syncTyped(); }
      form.addEventListener("submit", function (event) {
        if (confirmed && confirmed.disabled) {
          event.preventDefault();
          openDialog(dialog, opener);
        }
      });
      if (go) {
        go.addEventListener("click", function () { if (confirmed) { confirmed.disabled = false; } });
      }
      each("[data-dialog-close]", function (button) {
        button.addEventListener("click", function () { if (confirmed) { confirmed.disabled = true; } closeDialog(dialog); });
      }, dialog);
      dialog.addEventListener("cancel", function () { if (confirmed) { confirmed.disabled = true; } });
      dialog.addEventListener("keydown", function (event) {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && go && !go.disabled) {
          event.preventDefault();
          go.click();
        }
      });
    });
    // The no-JavaScript confirmation page: its form is the confirmed one.
    each(".confirm-page [data-confirmed]", function (input) { input.disabled = false; });
    each(".confirm-page [data-must-equal]", function (typed) {
      var go = typed.form && typed.form.querySelector("[data-confirm-button]");
      function sync() { if (go) { go.disabled = typed.value !== typed.getAttribute("data-must-equal"); } }
      typed.addEventListener("input", sync); sync();
    });
  });

  start("upgrade dialog", function () {
    each("[data-upgrade-dialog]", function (panel) {
      if (typeof HTMLDialogElement === "undefined") { return; }
      var dialog = document.createElement("dialog");
      dialog.className = "dialog upgrade-dialog";
      dialog.setAttribute("aria-labelledby", "upgrade-title");
      panel.parentNode.insertBefore(dialog, panel);
      dialog.appendChild(panel);
      var close = document.createElement("button");
      close.type = "button";
      close.className = "button secondary";
      close.textContent = "Close";
      close.addEventListener("click", function () { closeDialog(dialog); });
      var actions = panel.querySelector(".actions");
      (actions || panel).appendChild(close);
      openDialog(dialog, null);
    });
  });

  start("show once", function () {
    each("[data-show-once] [data-saved-close]", function (link) {
      link.addEventListener("click", function (event) {
        var box = link.closest("[data-show-once]");
        if (box && !box.getAttribute("data-copied") && !box.getAttribute("data-confirm-leave")) {
          event.preventDefault();
          box.setAttribute("data-confirm-leave", "1");
          link.textContent = "Not copied yet — close anyway";
          toast("You haven't copied it. It will not be shown again.", "error");
        }
      });
    });
  });

  start("help", function () {
    each("[data-help]", function (button) {
      var text = document.getElementById(button.getAttribute("aria-controls"));
      if (!text) { return; }
      text.classList.add("help-popover");
      text.hidden = true;
      function set(open) { text.hidden = !open; button.setAttribute("aria-expanded", open ? "true" : "false"); }
      button.addEventListener("click", function (event) { event.stopPropagation(); set(text.hidden); });
      document.addEventListener("click", function (event) { if (!text.contains(event.target)) { set(false); } });
      document.addEventListener("keydown", function (event) { if (event.key === "Escape" && !text.hidden) { set(false); button.focus(); } });
    });
  });

  start("toasts", function () {
    each("[data-toast]", function (notice) {
      if (notice.classList.contains("notice-ok")) {
        window.setTimeout(function () { notice.classList.add("notice-fade"); }, 6000);
      }
    });
  });

  start("menu", function () {
    var toggle = document.getElementById("nav-toggle");
    each(".menu-button", function (button) {
      button.addEventListener("keydown", function (event) {
        if ((event.key === "Enter" || event.key === " ") && toggle) { event.preventDefault(); toggle.checked = !toggle.checked; }
      });
    });
    document.addEventListener("keydown", function (event) { if (event.key === "Escape" && toggle) { toggle.checked = false; } });
  });

  window.KeysatAdmin = { each: each, start: start, toast: toast, copy: copy, openDialog: openDialog, closeDialog: closeDialog };
})();
