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
  // no longer visible: 404), and the Refresh link still works; a hidden tab does not poll; and a morph never undoes
  // what the person did: text typed in a field, a disclosure opened, a copy button shown.
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
    // A tab nobody looks at does not poll: a page left open in the background would otherwise cost the portal a
    // render every few seconds for as long as it stays open. Shown again, it asks at once (the visibilitychange
    // trigger beside the poll's in requests/detail.html and audit/_exports_live.html) and then on its usual beat.
    document.addEventListener("htmx:beforeRequest", function (ev) {
      if (document.hidden && ev.detail.elt.matches("[hx-trigger^='every']")) ev.preventDefault();
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

  onReady(function () {
    initCopy();
    initPoll();
  });
})();
