/* The request form (templates/requests/new_request.html): options follow the chosen cluster, grant rows are added
   without a round trip, the identity-name hint, the scope picker, the purpose's character counter, and focus on
   the error summary. The form works without this file: the server validates everything and says what is wrong.
   No inline script (CSP). */
"use strict";

(function () {
  function onReady(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  // ---- the error summary takes focus, so the first thing read after a failed review is what to fix ----
  function focusErrorSummary() {
    var summary = document.getElementById("error-summary");
    if (!summary) return;
    summary.focus();
    // A link in the summary moves focus to its field (the browser alone only scrolls to it).
    summary.addEventListener("click", function (ev) {
      var link = ev.target.closest("a[href^='#']");
      if (!link) return;
      var field = document.getElementById(link.getAttribute("href").slice(1));
      if (!field) return;
      ev.preventDefault();
      field.focus();
      field.scrollIntoView({ block: "center" });
    });
  }

  // ---- "123 of 2000 characters": shown as typed; said to screen readers once typing pauses ----
  function initCounters(form) {
    form.querySelectorAll(".char-counter[data-counts]").forEach(function (counter) {
      var field = document.getElementById(counter.dataset.counts);
      var live = document.getElementById(counter.id + "_live");
      var max = parseInt(counter.dataset.max, 10);
      if (!field || !max) return;
      var timer = null;
      function text() {
        // As the server counts: line ends are one character each.
        var used = field.value.replace(/\r\n/g, "\n").length;
        var left = max - used;
        return left >= 0
          ? used + " of " + max + " characters (" + left + " left)"
          : used + " of " + max + " characters: " + -left + " too many";
      }
      function update() {
        counter.textContent = text();
        counter.classList.toggle("over", field.value.length > max);
        if (!live) return;
        clearTimeout(timer);
        timer = setTimeout(function () { live.textContent = text(); }, 800);
      }
      field.addEventListener("input", update);
      counter.textContent = text();
    });
  }

  // ---- the scope picker: suggestions (a <datalist>) of the resources the chosen role may be granted on ----
  function initScopePicker(form, selectedCluster) {
    var url = form.dataset.scopesUrl;
    if (!url || !window.fetch) return function () {};

    function rowParts(row) {
      return {
        role: row.querySelector("select[name$='-role']"),
        scope: row.querySelector("input[name$='-scope']"),
        status: row.querySelector(".scope-status"),
      };
    }

    function show(status, text) {
      if (!status) return;
      status.textContent = text;
      status.hidden = !text;
    }

    function load(row) {
      var p = rowParts(row);
      if (!p.role || !p.scope) return;
      var cluster = selectedCluster();
      var listId = p.scope.id + "_choices";
      var list = document.getElementById(listId);
      if (!list) {
        list = document.createElement("datalist");
        list.id = listId;
        p.scope.insertAdjacentElement("afterend", list);
      }
      list.replaceChildren();
      if (!p.role.value || !cluster) {
        p.scope.removeAttribute("list");
        show(p.status, "");
        return;
      }
      p.scope.setAttribute("list", listId);
      p.scope.setAttribute("autocomplete", "off");
      show(p.status, "Looking up the resources this role may be granted on…");
      var query = "?cluster=" + encodeURIComponent(cluster) + "&role=" + encodeURIComponent(p.role.value);
      var asked = p.role.value;
      fetch(url + query, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (resp) { return resp.ok ? resp.json() : { choices: [], error: "Could not list resources: type the resource ID." }; })
        .then(function (data) {
          if (p.role.value !== asked) return; // the role changed meanwhile: that answer is coming
          data.choices.forEach(function (choice) {
            var option = document.createElement("option");
            option.value = choice.scope;
            option.label = choice.label;
            option.textContent = choice.label;
            list.appendChild(option);
          });
          if (data.error) show(p.status, data.error);
          else if (!data.choices.length) show(p.status, "No existing resource fits this role: type the resource ID.");
          else show(p.status, data.choices.length + (data.choices.length === 1 ? " resource" : " resources") +
            " this role may be granted on: start typing a name, or pick from the suggestions.");
        })
        .catch(function () {
          show(p.status, "Could not list resources: type the resource ID.");
        });
    }

    form.addEventListener("change", function (ev) {
      if (ev.target.matches("select[name$='-role']")) load(ev.target.closest(".grant-row"));
    });
    form.querySelectorAll("#grant-rows .grant-row").forEach(function (row) {
      if (rowParts(row).role && rowParts(row).role.value) load(row);
    });
    // Reload every row (the cluster changed).
    return function () { form.querySelectorAll("#grant-rows .grant-row").forEach(load); };
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

    var reloadScopes = initScopePicker(form, selectedCluster);

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

    if (cluster) cluster.addEventListener("change", function () { filterAll(); reloadScopes(); });
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
    initCounters(form);
    filterAll();
  }

  onReady(function () {
    initRequestForm();
    focusErrorSummary();
  });
})();
