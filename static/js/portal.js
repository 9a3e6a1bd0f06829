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

  onReady(function () {
    initCopy();
    initPoll();
  });
})();
