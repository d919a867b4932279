// Payments screen enhancements (web.md 11.5.10): the brand colour editor's live preview,
// rail preferences that save on change, the Zaprite connect dialog, and the one-click
// BTCPay connect dialog that polls until the store is connected. Every action also works
// as a plain form post without this file.
(function () {
  "use strict";
  var admin = window.KeysatAdmin;
  if (!admin) { return; }
  var each = admin.each;
  var csrf = (document.querySelector("meta[name=csrf-token]") || {}).content || "";

  function textOn(hex) {
    var channels = [1, 3, 5].map(function (i) {
      var v = parseInt(hex.slice(i, i + 2), 16) / 255;
      return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    var lum = 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2];
    return (1.05 / (lum + 0.05)) >= ((lum + 0.05) / 0.05) ? "#FFFFFF" : "#000000";
  }
  function fullHex(value) {
    var v = (value || "").trim();
    if (/^#[0-9a-fA-F]{6}$/.test(v)) { return v.toUpperCase(); }
    if (/^#[0-9a-fA-F]{3}$/.test(v)) { return ("#" + v[1] + v[1] + v[2] + v[2] + v[3] + v[3]).toUpperCase(); }
    return null;
  }

  admin.start("brand editor", function () {
    each("[data-brand-editor]", function (box) {
      var picker = box.querySelector("[data-brand-picker]");
      var hex = box.querySelector("[data-brand-hex]");
      var fill = box.querySelector("[data-preview-fill]");
      var text = box.querySelector("[data-preview-text]");
      function show(colour) {
        fill.setAttribute("fill", colour);
        text.setAttribute("fill", textOn(colour));
      }
      function fromHex() {
        var colour = fullHex(hex.value) || fullHex(hex.getAttribute("placeholder"));
        if (colour) { picker.value = colour.toLowerCase(); show(colour); }
      }
      picker.addEventListener("input", function () { hex.value = picker.value.toUpperCase(); show(hex.value); });
      hex.addEventListener("input", fromHex);
      // A value typed before this script ran, or restored by the browser on Back.
      fromHex();
    });
  });

  admin.start("rail preferences", function () {
    each("form[data-save-on-change]", function (form) {
      var button = form.querySelector("[data-save-button]");
      if (button) { button.hidden = true; }
      form.querySelector("select").addEventListener("change", function () { form.submit(); });
    });
  });

  admin.start("dialogs shown on arrival", function () {
    each("[data-auto-dialog]", function (panel) {
      if (typeof HTMLDialogElement === "undefined") { return; }
      var dialog = document.createElement("dialog");
      dialog.className = "dialog";
      dialog.setAttribute("aria-labelledby", panel.getAttribute("aria-labelledby"));
      panel.parentNode.insertBefore(dialog, panel);
      dialog.appendChild(panel);
      panel.classList.add("in-dialog");
      each("[data-dialog-dismiss]", function (link) {
        link.addEventListener("click", function (event) { event.preventDefault(); admin.closeDialog(dialog); });
      }, panel);
      admin.openDialog(dialog, null);
    });
  });

  admin.start("zaprite dialog", function () {
    each("details[data-zaprite-dialog]", function (details) {
      if (typeof HTMLDialogElement === "undefined") { return; }
      var summary = details.querySelector("summary");
      var form = details.querySelector("form");
      var dialog = document.createElement("dialog");
      dialog.className = "dialog";
      dialog.appendChild(form);
      details.parentNode.insertBefore(dialog, details.nextSibling);
      var opener = document.createElement("button");
      opener.type = "button";
      opener.className = summary.className;
      opener.textContent = summary.textContent;
      details.parentNode.replaceChild(opener, details);
      opener.addEventListener("click", function () { admin.openDialog(dialog, opener); });
      each("[data-dialog-close]", function (button) {
        button.hidden = false;
        button.addEventListener("click", function () { admin.closeDialog(dialog); });
      }, form);
      if (details.open) { admin.openDialog(dialog, opener); }
    });
  });

  admin.start("btcpay connect", function () {
    var dialog = document.getElementById("btcpay-dialog");
    if (!dialog) { return; }
    var lifetime = parseInt(dialog.getAttribute("data-lifetime"), 10) * 1000;
    var urlBox = document.getElementById("btcpay-authorize-url");
    var openLink = dialog.querySelector("[data-btcpay-open]");
    var waiting = dialog.querySelector("[data-btcpay-waiting]");
    var expired = dialog.querySelector("[data-btcpay-expired]");
    var restart = dialog.querySelector("[data-btcpay-restart]");
    var statusText = dialog.querySelector("[data-btcpay-status]");
    var timer = null;
    var current = null;

    function stop() { if (timer) { window.clearTimeout(timer); timer = null; } }
    function showExpired() {
      stop();
      waiting.hidden = true;
      expired.hidden = false;
      restart.hidden = false;
      openLink.hidden = true;
    }
    function poll(profile, started) {
      timer = window.setTimeout(function () {
        if (Date.now() - started >= lifetime) { showExpired(); return; }
        fetch("/v1/admin/btcpay/status?merchant_profile_id=" + encodeURIComponent(profile), {
          credentials: "same-origin", headers: { "Accept": "application/json" }
        }).then(function (response) { return response.ok ? response.json() : null; })
          .then(function (status) {
            if (status && status.connected) {
              stop();
              statusText.textContent = "Connected. Refreshing…";
              window.location.assign("/admin/payments/" + encodeURIComponent(profile) + "/btcpay");
            } else if (timer !== null) {
              poll(profile, started);
            }
          }, function () { if (timer !== null) { poll(profile, started); } });
      }, 2500);
    }
    function begin(form) {
      var profile = form.getAttribute("data-btcpay-connect");
      current = form;
      fetch("/v1/admin/btcpay/connect", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ merchant_profile_id: profile })
      }).then(function (response) {
        if (!response.ok) { throw new Error("refused"); }
        return response.json();
      }).then(function (started) {
        var url = started.authorize_url;
        if (!/^https?:\/\//i.test(url)) { throw new Error("bad url"); }
        window.open(url, "_blank", "noopener,noreferrer");
        urlBox.textContent = url;
        openLink.href = url;
        openLink.hidden = false;
        waiting.hidden = false;
        expired.hidden = true;
        restart.hidden = true;
        statusText.textContent = "Waiting for BTCPay…";
        if (!dialog.open) { admin.openDialog(dialog, form.querySelector("button")); }
        stop();
        timer = 0;
        poll(profile, Date.now());
      }).catch(function () {
        // The server's own page says why (not configured, already connected, a tier cap).
        form.submit();
      });
    }
    each("form[data-btcpay-connect]", function (form) {
      form.addEventListener("submit", function (event) { event.preventDefault(); begin(form); });
    });
    restart.addEventListener("click", function () { if (current) { begin(current); } });
    each("[data-dialog-close]", function (button) {
      button.addEventListener("click", function () { stop(); admin.closeDialog(dialog); });
    }, dialog);
    dialog.addEventListener("close", stop);
  });
})();
