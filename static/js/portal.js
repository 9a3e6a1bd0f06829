/* Workload Identity Portal: small enhancements. Every page works without this file. No inline script (CSP). */
"use strict";

(function () {
  function onReady(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  // ---- copy buttons: <button data-copy="text" hidden> (shown only when the clipboard API is there) ----
  function initCopy() {
    if (!navigator.clipboard) return;
    showCopyButtons(document);
    document.addEventListener("click", function (ev) {
      var btn = ev.target.closest("button[data-copy]");
      if (!btn) return;
      var label = btn.textContent;
      navigator.clipboard.writeText(btn.getAttribute("data-copy")).then(
        function () { flash(btn, "Copied", label); },
        function () { flash(btn, "Copy failed", label); }
      );
    });
  }

  function showCopyButtons(root) {
    if (!navigator.clipboard || !root.querySelectorAll) return;
    root.querySelectorAll("button[data-copy]").forEach(function (btn) { btn.hidden = false; });
  }

  function flash(btn, text, label) {
    btn.textContent = text;
    btn.classList.add("copied");
    setTimeout(function () { btn.textContent = label; btn.classList.remove("copied"); }, 1500);
  }

  // ---- live request pages: htmx polls #request-live and morphs it in place (requests_app/live.py) ----
  // htmx does the fetching and swapping (hx-get, hx-trigger="every …", hx-swap="morph" in requests/detail.html).
  // This adds what htmx does not: the last answer's ETag goes back as If-None-Match (the portal answers 304, no
  // body, while nothing changed); polling stops when the answer is not the page (signed out: the sign-in page;
  // no longer visible: 404), and the Refresh link still works; and a morph never undoes what the person did:
  // text typed in a field, a disclosure opened, a copy button shown.
  function initPoll() {
    if (!window.htmx) return;
    var etags = {};

    document.addEventListener("htmx:configRequest", function (ev) {
      var tag = etags[ev.detail.path];
      if (tag && ev.detail.verb === "get") ev.detail.headers["If-None-Match"] = tag;
    });
    document.addEventListener("htmx:beforeSwap", function (ev) {
      var xhr = ev.detail.xhr;
      var asked = ev.detail.pathInfo && ev.detail.pathInfo.requestPath;
      var answered = xhr.responseURL ? new URL(xhr.responseURL, location.href).pathname : asked;
      if (!ev.detail.elt.matches("[hx-trigger^='every']") || xhr.status === 304) return;
      if (xhr.status >= 400 || answered !== asked) {
        ev.detail.shouldSwap = false;
        stopPolling(ev.detail.elt);
        return;
      }
      var tag = xhr.getResponseHeader("ETag");
      if (tag) etags[asked] = tag;
    });
    document.addEventListener("htmx:load", function (ev) { showCopyButtons(ev.detail.elt); });

    if (window.Idiomorph) {
      var callbacks = window.Idiomorph.defaults.callbacks;
      callbacks.beforeNodeMorphed = function (oldNode) { return !edited(oldNode); };
      callbacks.beforeAttributeUpdated = function (name, node) {
        if (name === "open" && node.tagName === "DETAILS") return false; // opened or closed by the reader
        if (name === "hidden" && node.matches && node.matches("button[data-copy]")) return !navigator.clipboard;
        return true;
      };
    }
  }

  function stopPolling(elt) {
    elt.removeAttribute("hx-trigger");
    window.htmx.process(elt); // its attributes changed: htmx drops the old trigger, the poll's timer with it
  }

  // A field whose value the person changed (the server's copy would put back the value it was rendered with).
  function edited(node) {
    if (node instanceof HTMLTextAreaElement) return node.value !== node.defaultValue;
    if (!(node instanceof HTMLInputElement) || node.type === "hidden") return false;
    if (node.type === "checkbox" || node.type === "radio") return node.checked !== node.defaultChecked;
    return node.value !== node.defaultValue;
  }

  // ---- the request form: options follow the chosen cluster; rows added without a round trip; name hint ----
  function initRequestForm() {
    var form = document.getElementById("request-form");
    if (!form) return;
    var cluster = form.querySelector("select[name=cluster]");
    var namespace = form.querySelector("select[name=namespace]");
    var sa = form.querySelector("input[name=service_account]");

    function selectedCluster() {
      return cluster ? cluster.value : "";
    }

    function filterSelect(select) {
      var chosen = selectedCluster();
      select.querySelectorAll("optgroup").forEach(function (group) {
        var first = group.querySelector("option[data-cluster]");
        group.hidden = Boolean(chosen && first && first.dataset.cluster !== chosen);
      });
      select.querySelectorAll("option[data-cluster]").forEach(function (opt) {
        var hide = Boolean(chosen && opt.dataset.cluster !== chosen);
        opt.hidden = hide;
        if (hide && opt.selected) select.value = "";
      });
    }

    function filterAll() {
      if (namespace) filterSelect(namespace);
      form.querySelectorAll("select[name$='-role']").forEach(filterSelect);
      preview();
    }

    function preview() {
      var out = document.getElementById("identity-preview");
      var line = document.getElementById("identity-preview-line");
      if (!out || !line || !cluster) return;
      var opt = cluster.options[cluster.selectedIndex];
      // As naming.identity_name joins them: "_" between the parts, a ServiceAccount's dots as "_" too.
      var account = sa && sa.value.trim().replace(/\./g, "_");
      var parts = [opt && opt.dataset.name, namespace && namespace.value, account];
      out.textContent = parts.map(function (p) { return p || "…"; }).join("_");
      line.hidden = false;
    }

    if (cluster) cluster.addEventListener("change", filterAll);
    if (namespace) namespace.addEventListener("change", preview);
    if (sa) sa.addEventListener("input", preview);

    var add = document.getElementById("add-grant");
    var template = document.getElementById("grant-template");
    var rows = document.getElementById("grant-rows");
    var total = form.querySelector("input[name='grants-TOTAL_FORMS']");
    var max = form.querySelector("input[name='grants-MAX_NUM_FORMS']");
    if (add && template && rows && total) {
      add.addEventListener("click", function (ev) {
        var n = parseInt(total.value, 10);
        if (max && n >= parseInt(max.value, 10)) return; // let the server say why
        ev.preventDefault();
        rows.insertAdjacentHTML("beforeend", template.innerHTML.replace(/__prefix__/g, String(n)));
        total.value = String(n + 1);
        filterAll();
        var first = rows.lastElementChild && rows.lastElementChild.querySelector("select, input");
        if (first) first.focus();
      });
    }
    filterAll();
  }

  onReady(function () {
    initCopy();
    initPoll();
    initRequestForm();
  });
})();
