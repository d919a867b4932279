/* Keysat buyer pages: enhancements over server-rendered forms (web.md 2.2, 6-8).
 *
 * Every enhancement is set up on its own and its failures are contained: a broken copy
 * button never stops the buy form, and no error ever stops the native form submission,
 * which does the same job without JavaScript. Text reaches the page only through
 * textContent; data comes from the page's one JSON block and from data-* attributes.
 */
(function () {
  "use strict";

  function report(name, error) {
    if (window.console) window.console.warn("keysat: " + name + " enhancement off:", error);
  }

  function safely(name, setup) {
    try {
      setup();
    } catch (error) {
      report(name, error);
    }
  }

  /* --- formatting: mirrors keysat.web.format (web.md 2.5) -------------------------- */

  var SYMBOLS = { USD: "$", EUR: "\u20ac" };
  var CADENCES = { 7: " / wk", 30: " / mo", 90: " / qtr", 180: " / 6 mo", 365: " / yr" };
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  function group(number) {
    return String(number).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  function formatMoney(amount, currency) {
    if (currency === "SAT" || currency === "BTC") {
      return group(amount) + (amount === 1 ? " sat" : " sats");
    }
    var whole = Math.floor(amount / 100);
    var cents = amount % 100;
    var number = cents === 0 ? group(whole) : group(whole) + "." + (cents < 10 ? "0" : "") + cents;
    return (SYMBOLS[currency] || currency + " ") + number;
  }

  function formatPrice(amount, currency, period) {
    if (amount === 0) return "Free";
    var suffix = period > 0 ? CADENCES[period] || " / " + period + " days" : "";
    return formatMoney(amount, currency) + suffix;
  }

  function percentText(bps) {
    var whole = Math.floor(bps / 100);
    var rest = bps % 100;
    if (rest === 0) return String(whole);
    return (whole + "." + (rest < 10 ? "0" : "") + rest).replace(/0+$/, "");
  }

  function discountTag(kind, bps, off, currency, final) {
    if (kind === "free_license" || final === 0) return "Free";
    if (kind === "percent") return percentText(bps) + "% off";
    if (kind === "set_price") return "Flat price";
    return formatMoney(off, currency) + " off";
  }

  function formatDate(date) {
    return date.getUTCDate() + " " + MONTHS[date.getUTCMonth()] + " " + date.getUTCFullYear();
  }

  /* The price block after a valid preview; null keeps the tier's own (views.preview_view). */
  function previewView(tier, currency, preview) {
    var kind = preview.kind;
    var bps = preview.amount_pct === null || preview.amount_pct === undefined
      ? 0 : Math.round(preview.amount_pct * 100);
    var finalSats = preview.final_price_sats;
    if (preview.discount_applied_sats === 0 && finalSats > 0) return null;
    var satProduct = currency === "SAT" || currency === "BTC";
    var original = tier.price ? formatPrice(tier.price, currency, tier.period) : null;
    if (finalSats <= 0 || preview.is_free) {
      return { main: "Free", original: original, tag: "Free", note: null };
    }
    if (satProduct) {
      return {
        main: formatPrice(finalSats, "SAT", tier.period),
        original: formatPrice(preview.base_price_sats, "SAT", tier.period),
        tag: discountTag(kind, bps, preview.discount_applied_sats, "SAT", finalSats),
        note: null
      };
    }
    if (kind === "percent") {
      var newPrice = tier.price - Math.floor((tier.price * Math.min(bps, 10000)) / 10000);
      return {
        main: formatPrice(newPrice, currency, tier.period),
        original: original,
        tag: discountTag(kind, bps, 0, currency, newPrice),
        note: null
      };
    }
    return {
      main: formatPrice(finalSats, "SAT", tier.period),
      original: original,
      tag: discountTag(kind, bps, preview.discount_applied_sats, "SAT", finalSats),
      note: "at today's rate"
    };
  }

  /* Expiry and trial flag read from a LIC1 key's signed payload (license-keys.md). */
  function base32(text) {
    var alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    var bits = 0;
    var value = 0;
    var out = [];
    for (var i = 0; i < text.length; i += 1) {
      var index = alphabet.indexOf(text.charAt(i));
      if (index < 0) return null;
      value = ((value << 5) | index) & 0xffff;
      bits += 5;
      if (bits >= 8) {
        out.push((value >>> (bits - 8)) & 0xff);
        bits -= 8;
      }
    }
    return out;
  }

  function keyFacts(key) {
    var parts = key.split("-");
    var bytes = parts.length === 3 ? base32(parts[1]) : null;
    if (!bytes || bytes.length < 50) return null;
    var expires = 0;
    for (var i = 42; i < 50; i += 1) expires = expires * 256 + bytes[i];
    return { expires: expires ? new Date(expires * 1000) : null, trial: (bytes[1] & 2) !== 0 };
  }

  /* Server messages without their "bad request: " category, as the pages show them. */
  function buyerMessage(message) {
    var text = String(message || "").replace(
      /^(bad request|conflict|not found|too many requests|upstream error|payment provider not configured|unauthorized|forbidden): /,
      ""
    );
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function requestJson(url, options) {
    return window.fetch(url, options).then(function (response) {
      return response.json().then(
        function (body) { return { status: response.status, ok: response.ok, body: body }; },
        function () { return { status: response.status, ok: false, body: null }; }
      );
    });
  }

  function postJson(url, body) {
    return requestJson(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin"
    });
  }

  /* --- copy buttons ------------------------------------------------------------------ */

  function setupCopy(root) {
    var buttons = root.querySelectorAll("[data-copy-target]");
    Array.prototype.forEach.call(buttons, function (button) {
      var label = button.querySelector(".copy-label");
      var status = button.parentNode.querySelector(".copy-status");
      var reset = null;
      button.hidden = false;
      button.addEventListener("click", function () {
        var target = document.getElementById(button.getAttribute("data-copy-target"));
        if (!target) return;
        var text = target.textContent.trim();
        function copied() {
          label.textContent = "Copied";
          status.classList.add("visually-hidden");
          status.textContent = "Copied";
          window.clearTimeout(reset);
          reset = window.setTimeout(function () {
            label.textContent = "Copy";
            status.textContent = "";
          }, 2000);
        }
        function selectInstead() {
          var range = document.createRange();
          range.selectNodeContents(target);
          var selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          status.classList.remove("visually-hidden");
          status.textContent = "Selected: press Ctrl+C (\u2318C on a Mac) to copy";
        }
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(copied, selectInstead);
        } else {
          selectInstead();
        }
      });
    });
  }

  /* --- buy page ---------------------------------------------------------------------- */

  function buyPage(form) {
    var data = JSON.parse(document.getElementById("page-data").textContent);
    var page = {
      form: form,
      data: data,
      code: form.querySelector("#code"),
      status: form.querySelector("#code-status"),
      alert: form.querySelector("#form-alert"),
      emailError: form.querySelector("#email-error"),
      email: form.querySelector("#buyer_email"),
      note: form.querySelector("#buyer_note"),
      cta: form.querySelector("[data-cta]"),
      override: form.querySelector(".cta-override"),
      working: form.querySelector(".cta-working"),
      prefilled: null,
      sequence: 0,
      originals: []
    };
    Array.prototype.forEach.call(form.querySelectorAll(".price-block"), function (block) {
      page.originals.push({ block: block, parts: snapshot(block) });
    });
    return page;
  }

  /* Purchases ignore codes for trials (public-api.md 6.1 step 7); views.TRIAL_NO_CODES. */
  var TRIAL_NO_CODES = "Codes don't apply to free trials.";

  var PARTS = [".price-was", ".price-main", ".price-tag", ".price-then", ".price-note"];

  function snapshot(block) {
    return PARTS.map(function (selector) {
      var element = block.querySelector(selector);
      return { element: element, text: element.textContent, hidden: element.hidden };
    });
  }

  function selectedIndex(page) {
    var radio = page.form.querySelector(".tier-radio:checked");
    return radio ? Number(radio.id.replace("tier-", "")) : -1;
  }

  function currentTier(page) {
    var index = selectedIndex(page);
    if (index >= 0) return page.data.tiers[index];
    return page.data.single;
  }

  function currentBlock(page) {
    var index = selectedIndex(page);
    return page.form.querySelector(index >= 0 ? ".price-block.for-" + index : ".price-block.is-single");
  }

  function setStatus(page, text, ok) {
    page.status.textContent = text || "";
    page.status.classList.toggle("is-ok", ok === true);
    page.status.classList.toggle("is-error", ok === false);
    if (ok === false && text) page.code.setAttribute("aria-invalid", "true");
    else page.code.removeAttribute("aria-invalid");
  }

  function setOverride(page, label) {
    page.override.textContent = label || "";
    page.override.hidden = !label;
    page.form.classList.toggle("has-override", Boolean(label));
  }

  function resetPrices(page) {
    page.originals.forEach(function (entry) {
      entry.parts.forEach(function (part) {
        part.element.textContent = part.text;
        part.element.hidden = part.hidden;
      });
    });
    setOverride(page, null);
  }

  function showPreview(page, tier, preview) {
    resetPrices(page);
    var view = previewView(tier, page.data.currency, preview);
    if (!view) return;
    var block = currentBlock(page);
    var values = [view.original, view.main, view.tag, null, view.note];
    PARTS.forEach(function (selector, index) {
      var element = block.querySelector(selector);
      element.textContent = values[index] || "";
      element.hidden = !values[index];
    });
    if (view.main === "Free") setOverride(page, page.data.labels.free);
  }

  function runPreview(page) {
    var code = page.code.value.trim();
    var tier = currentTier(page);
    page.sequence += 1;
    var mine = page.sequence;
    if (!code) {
      resetPrices(page);
      setStatus(page, "Enter a code to apply it.", false);
      return;
    }
    if (tier && tier.kind === "trial") {
      resetPrices(page);
      setStatus(page, TRIAL_NO_CODES, false);
      return;
    }
    var query = "code=" + encodeURIComponent(code) + "&product=" + encodeURIComponent(page.data.product);
    if (tier && tier.slug) query += "&policy_slug=" + encodeURIComponent(tier.slug);
    setStatus(page, "Checking the code\u2026", null);
    requestJson("/v1/discount-codes/preview?" + query, { headers: { Accept: "application/json" } })
      .then(function (result) {
        if (mine !== page.sequence) return;
        if (!result.ok || !result.body) {
          resetPrices(page);
          setStatus(page, result.body ? buyerMessage(result.body.message) : "Couldn't check the code.", false);
          return;
        }
        if (!result.body.valid) {
          resetPrices(page);
          setStatus(page, result.body.message, false);
          return;
        }
        setStatus(page, code === page.prefilled ? "Launch special applied" : result.body.message, true);
        showPreview(page, tier, result.body);
      })
      .catch(function () {
        if (mine !== page.sequence) return;
        setStatus(page, "Couldn't check the code. Check your connection and try again.", false);
      });
  }

  /* A featured code goes into the field when its tier is chosen; a code the buyer typed
     stays and is previewed again for the new tier (web.md 6.6). */
  function onTierChange(page) {
    var tier = currentTier(page);
    var typed = page.code.value.trim();
    page.sequence += 1;
    resetPrices(page);
    if (typed && typed !== page.prefilled) {
      runPreview(page);
      return;
    }
    page.prefilled = tier && tier.featured ? tier.featured : null;
    page.code.value = page.prefilled || "";
    setStatus(page, page.prefilled ? "Launch special applied" : "", page.prefilled ? true : null);
  }

  function setupPreview(page) {
    var apply = page.form.querySelector("[data-apply]");
    apply.addEventListener("click", function (event) {
      event.preventDefault();
      runPreview(page);
    });
    page.code.addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        event.preventDefault();
        runPreview(page);
      }
    });
    page.code.addEventListener("input", function () {
      page.sequence += 1;
      resetPrices(page);
      var tier = currentTier(page);
      if (!page.code.value.trim() && page.prefilled && tier && tier.featured) {
        setStatus(page, "Launch special applies automatically", true);
      } else {
        setStatus(page, "", null);
      }
      if (page.code.value.trim() !== page.prefilled) page.prefilled = null;
    });
    Array.prototype.forEach.call(page.form.querySelectorAll("[data-tier-card]"), function (card) {
      card.addEventListener("click", function (event) {
        var radio = card.querySelector(".tier-radio");
        if (radio.checked || event.target.closest("label, input, a")) return;
        radio.checked = true;
        radio.dispatchEvent(new Event("change", { bubbles: true }));
      });
    });
    page.form.addEventListener("change", function (event) {
      if (event.target.name === "policy_slug") onTierChange(page);
    });
    if (!page.code.value.trim() && !page.status.textContent.trim()) onTierChange(page);
  }

  function selectedTierKind(page) {
    var tier = currentTier(page);
    if (page.form.classList.contains("has-override")) return "free";
    return tier ? tier.kind : "paid";
  }

  function purchaseBody(page) {
    var body = { product: page.data.product };
    var tier = currentTier(page);
    if (tier && tier.slug) body.policy_slug = tier.slug;
    var fields = { buyer_email: page.email, buyer_note: page.note, code: page.code };
    Object.keys(fields).forEach(function (name) {
      var value = fields[name].value.trim();
      if (value) body[name] = value;
    });
    var rail = page.form.querySelector('input[name="rail"]:checked');
    if (rail && rail.offsetParent !== null) body.rail = rail.value;
    return body;
  }

  function setWorking(page, working, label) {
    page.form.classList.toggle("is-working", working);
    page.cta.disabled = working;
    page.working.hidden = !working;
    page.working.textContent = label || "Working\u2026";
  }

  function showError(page, message) {
    page.alert.textContent = "";
    page.emailError.textContent = "";
    page.email.removeAttribute("aria-invalid");
    var text = String(message || "");
    if (text.indexOf("buyer_email") >= 0) {
      page.emailError.textContent = "That e-mail address doesn't look right. Check it, or leave the field empty.";
      page.email.setAttribute("aria-invalid", "true");
      page.email.focus();
    } else if (text.indexOf("code") >= 0) {
      setStatus(page, buyerMessage(text), false);
      page.code.focus();
    } else {
      page.alert.textContent = buyerMessage(text);
    }
  }

  function checkoutAllowed(url) {
    var target;
    try {
      target = new URL(url, window.location.href);
    } catch (error) {
      return false;
    }
    if (target.origin === window.location.origin) return true;
    if (target.protocol === "https:") return true;
    if (target.protocol !== "http:") return false;
    var host = target.hostname;
    return host === "localhost" || /^127\./.test(host) || host === "[::1]" ||
      /^10\./.test(host) || /^192\.168\./.test(host) || /^172\.(1[6-9]|2\d|3[01])\./.test(host);
  }

  function showIssued(page, answer) {
    var template = document.getElementById("success-template");
    var card = template.content.firstElementChild.cloneNode(true);
    function slot(name) { return card.querySelector('[data-slot="' + name + '"]'); }
    card.querySelector(".key").textContent = answer.license_key;
    var tier = currentTier(page);
    slot("tier").textContent = tier && tier.name ? tier.name : page.data.productName || "";
    var facts = keyFacts(answer.license_key);
    if (facts && facts.expires) {
      slot("expiry-label").textContent = facts.trial ? "Free trial until" : "Expires";
      slot("expiry").textContent = formatDate(facts.expires);
    } else {
      slot("expiry").textContent = "Perpetual";
    }
    var email = page.email.value.trim();
    if (page.data.receipts && email) {
      slot("address").textContent = email;
      slot("mail").hidden = false;
    }
    slot("reference").textContent = answer.invoice_id;
    slot("receipt").setAttribute("href", "/thank-you?invoice_id=" + encodeURIComponent(answer.invoice_id));
    page.form.parentNode.replaceChild(card, page.form);
    safely("copy", function () { setupCopy(card); });
    card.focus();
  }

  function setupSubmit(page) {
    var busy = false;
    page.form.addEventListener("submit", function (event) {
      var submitter = event.submitter;
      if (submitter && submitter.value === "apply") return;
      if (busy) {
        event.preventDefault();
        return;
      }
      var body = purchaseBody(page);
      var kind = selectedTierKind(page);
      event.preventDefault();
      busy = true;
      page.alert.textContent = "";
      setWorking(page, true, "Working\u2026");
      window.setTimeout(function () {
        if (busy) page.working.textContent = kind === "paid" ? "Creating invoice\u2026" : "Issuing license\u2026";
      }, 300);
      postJson("/v1/purchase", body)
        .then(function (result) {
          var answer = result.body || {};
          if (result.ok && answer.license_key) {
            busy = false;
            showIssued(page, answer);
          } else if (result.ok && answer.checkout_url && checkoutAllowed(answer.checkout_url)) {
            window.location.assign(answer.checkout_url);
          } else if (result.ok) {
            busy = false;
            setWorking(page, false);
            showError(page, "The payment page can't be opened from here. Reference: " + answer.invoice_id);
          } else {
            busy = false;
            setWorking(page, false);
            showError(page, answer.message || "Something went wrong (HTTP " + result.status + "). Please try again.");
          }
        })
        .catch(function (error) {
          busy = false;
          report("purchase", error);
          setWorking(page, false);
          showError(page, "We couldn't reach the server. Check your connection and try again.");
        });
    });
  }

  /* --- thank-you page ---------------------------------------------------------------- */

  function pollInterval(seconds) {
    if (seconds < 120) return 3000;
    if (seconds < 600) return 10000;
    if (seconds < 1800) return 30000;
    return null;
  }

  function waitingMessage(seconds) {
    if (seconds < 120) return "Waiting for your payment\u2026";
    if (seconds < 600) return "Still waiting. If you paid on-chain, your transaction is probably waiting for a block.";
    return "This is taking longer than usual. You can close this page and come back to this address later.";
  }

  function setupReceipt(section) {
    var invoiceId = section.getAttribute("data-invoice-id");
    var status = section.querySelector("[data-status]");
    var again = section.querySelector("[data-check-again]");
    var pending = section.classList.contains("receipt-pending");
    var started = Date.now();
    var failures = 0;

    function elapsed() { return (Date.now() - started) / 1000; }

    function show() {
      var text = pending ? waitingMessage(elapsed()) : "This takes a few seconds.";
      if (failures >= 3) text += " Connection problem \u2014 still trying.";
      status.textContent = text;
    }

    function schedule() {
      var wait = pollInterval(elapsed());
      if (wait === null) {
        status.textContent = "Still waiting. Bookmark this page and refresh it later.";
        again.hidden = false;
        return;
      }
      window.setTimeout(poll, wait);
    }

    function poll() {
      window.fetch("/v1/purchase/" + encodeURIComponent(invoiceId), {
        headers: { Accept: "application/json" },
        cache: "no-store"
      })
        .then(function (response) {
          if (response.status === 404) return { terminal: true };
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (answer) {
          failures = 0;
          var done = answer.terminal || answer.license_key || answer.status === "expired" ||
            answer.status === "invalid" || (answer.status === "settled" && answer.license_id);
          if (done) {
            window.location.reload();
            return;
          }
          show();
          schedule();
        })
        .catch(function () {
          failures += 1;
          show();
          schedule();
        });
    }

    again.addEventListener("click", function () {
      again.hidden = true;
      started = Date.now();
      failures = 0;
      show();
      poll();
    });
    show();
    schedule();
  }

  /* --- recover page ------------------------------------------------------------------ */

  var RECOVER_FAILED = "We couldn't match that invoice reference and e-mail to a completed purchase.";

  function setupRecover(form) {
    var error = form.querySelector("[data-recover-error]");
    var submit = form.querySelector("[data-recover-submit]");
    var result = document.querySelector("[data-recovered]");
    function slot(name) { return result.querySelector('[data-slot="' + name + '"]'); }

    function finish(message) {
      form.classList.remove("is-working");
      submit.disabled = false;
      error.textContent = message || "";
    }

    function showRecovered(answer, products) {
      var product = null;
      products.forEach(function (item) { if (item.id === answer.product_id) product = item; });
      var names = {};
      ((product && product.entitlements_catalog) || []).forEach(function (entry) { names[entry.slug] = entry.name; });
      result.querySelector(".key").textContent = answer.license_key;
      slot("product").textContent = product ? product.name : "";
      slot("expires").textContent = answer.expires_at ? formatDate(new Date(answer.expires_at)) : "Perpetual";
      var entitlements = answer.entitlements.map(function (slug) { return names[slug] || slug; });
      slot("entitlements").textContent = entitlements.length ? entitlements.join(", ") : "None";
      result.hidden = false;
      finish("");
      result.querySelector(".key").focus();
    }

    form.addEventListener("submit", function (event) {
      var invoiceId = form.elements.invoice_id.value.trim();
      var email = form.elements.email.value.trim();
      event.preventDefault();
      if (!invoiceId || !email) {
        finish("Enter both the invoice reference and the e-mail.");
        return;
      }
      form.classList.add("is-working");
      submit.disabled = true;
      error.textContent = "";
      postJson("/v1/recover", { invoice_id: invoiceId, email: email })
        .then(function (answer) {
          if (!answer.ok) {
            var messages = { 400: "Enter both the invoice reference and the e-mail.", 429: "Too many attempts. Try again in a minute." };
            result.hidden = true;
            finish(messages[answer.status] || RECOVER_FAILED);
            return null;
          }
          return requestJson("/v1/products", { headers: { Accept: "application/json" } })
            .then(function (list) { return list.ok ? list.body.products : []; }, function () { return []; })
            .then(function (products) { showRecovered(answer.body, products); });
        })
        .catch(function (problem) {
          report("recover", problem);
          finish("We couldn't reach the server. Check your connection and try again.");
        });
    });
  }

  /* --- start ----------------------------------------------------------------------------- */

  safely("copy", function () { setupCopy(document); });
  var buyForm = document.querySelector("[data-buy-form]");
  if (buyForm) {
    var page = null;
    safely("buy page", function () { page = buyPage(buyForm); });
    if (page) {
      buyForm.classList.add("js-enhanced");
      safely("discount preview", function () { setupPreview(page); });
      safely("purchase", function () { setupSubmit(page); });
    }
  }
  var receipt = document.querySelector("[data-receipt]");
  if (receipt) safely("receipt polling", function () { setupReceipt(receipt); });
  var recoverForm = document.querySelector("[data-recover-form]");
  if (recoverForm) safely("recover", function () { setupRecover(recoverForm); });
})();
