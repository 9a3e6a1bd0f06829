/* Workload Identity Portal: small enhancements. Every page works without this file. No inline script (CSP). */
"use strict";

(function () {
  var POLL_MS = 3000;

  function onReady(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  // ---- copy buttons: <button data-copy="text" hidden> (shown only when the clipboard API is there) ----
  function initCopy() {
    if (!navigator.clipboard) return;
    document.querySelectorAll("button[data-copy]").forEach(function (btn) { btn.hidden = false; });
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

  function flash(btn, text, label) {
    btn.textContent = text;
    btn.classList.add("copied");
    setTimeout(function () { btn.textContent = label; btn.classList.remove("copied"); }, 1500);
  }

  // ---- live status: #live[data-poll-url] is re-fetched until the status changes, then the page reloads ----
  function initPoll() {
    var live = document.getElementById("live");
    if (!live || !live.dataset.pollUrl || !window.fetch) return;
    var url = live.dataset.pollUrl;
    var status = live.dataset.status;

    function tick() {
      fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" } })
        .then(function (resp) { return resp.ok ? resp.text() : null; })
        .then(function (html) {
          if (html === null) return; // signed out or gone: stop polling, the Refresh link still works
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
          if (!fresh) return;
          if (fresh.dataset.status !== status) {
            // Buttons, decision and IDs depend on the status: let the server render the whole page.
            window.location.reload();
            return;
          }
          var current = document.getElementById("live");
          current.replaceWith(document.importNode(fresh, true));
          setTimeout(tick, POLL_MS);
        })
        .catch(function () { setTimeout(tick, POLL_MS * 3); });
    }
    setTimeout(tick, POLL_MS);
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
