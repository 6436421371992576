// Cairn studio: small enhancements of server-rendered pages. Every page works without this
// file; with it, the runs table remembers chosen columns, selects runs to compare, and live
// statuses and logs update in place. No inline scripts: pages pass data in data-* attributes.
"use strict";

(function () {
  const csrf = () => {
    const m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  };

  // Exposed for the other studio scripts: a fetch that sends the session cookie and, for
  // methods that change state, the CSRF header the server requires.
  window.cairnFetch = function (url, opts) {
    opts = Object.assign({ credentials: "same-origin" }, opts || {});
    const method = (opts.method || "GET").toUpperCase();
    if (method !== "GET" && method !== "HEAD") {
      opts.headers = Object.assign({ "x-csrf-token": csrf() }, opts.headers || {});
    }
    return fetch(url, opts);
  };

  // ---- runs table: column chooser -------------------------------------------------------
  function setupColumns(table) {
    const chooser = document.querySelector("details.columns");
    if (!chooser) return;
    const storeKey = "cairn.cols." + (table.dataset.scope || location.pathname);
    const boxes = Array.from(chooser.querySelectorAll("input.col-toggle"));
    const apply = (visible) => {
      for (const b of boxes) b.checked = visible.has(b.value);
      table.querySelectorAll("[data-col]").forEach((cell) => {
        const col = cell.getAttribute("data-col");
        if (boxes.some((b) => b.value === col)) cell.hidden = !visible.has(col);
      });
    };
    const current = () => new Set(boxes.filter((b) => b.checked).map((b) => b.value));
    const rewriteLinks = (cols) => {
      document.querySelectorAll("a[data-keep-cols]").forEach((a) => {
        const u = new URL(a.href, location.href);
        u.searchParams.set("cols", cols);
        a.href = u.pathname + u.search;
      });
      const hidden = document.querySelector('form#runs-filter input[name="cols"]');
      if (hidden) hidden.value = cols;
      const u = new URL(location.href);
      u.searchParams.set("cols", cols);
      history.replaceState(null, "", u.pathname + u.search);
    };
    // The URL's cols= wins; else the columns remembered for this experiment.
    const url = new URL(location.href);
    if (!url.searchParams.has("cols")) {
      try {
        const saved = localStorage.getItem(storeKey);
        if (saved !== null) {
          const set = new Set(saved.split(",").filter(Boolean));
          apply(set);
          rewriteLinks(saved);
        }
      } catch (e) { /* storage disabled: columns are not remembered */ }
    }
    chooser.addEventListener("change", () => {
      const set = current();
      apply(set);
      const cols = Array.from(set).join(",");
      try { localStorage.setItem(storeKey, cols); } catch (e) { /* not remembered */ }
      rewriteLinks(cols);
    });
  }

  // ---- runs table: selection and compare -------------------------------------------------
  function setupCompare(table) {
    const button = document.getElementById("compare-button");
    if (!button) return;
    const selected = () => Array.from(table.querySelectorAll("input.run-select:checked")).map((c) => c.value);
    const update = () => {
      const n = selected().length;
      button.disabled = n < 2;
      button.textContent = n ? "Compare (" + n + ")" : "Compare";
    };
    table.addEventListener("change", (e) => {
      if (e.target.id === "select-all") {
        table.querySelectorAll("input.run-select").forEach((c) => { c.checked = e.target.checked; });
      }
      update();
    });
    button.addEventListener("click", () => {
      const ids = selected();
      if (ids.length < 2) return;
      location.href = button.dataset.compareUrl + "?runs=" + ids.map(encodeURIComponent).join(",");
    });
    update();
  }

  // ---- live statuses ---------------------------------------------------------------------
  const FINAL = new Set(["Completed", "Failed", "Canceled"]);
  function setupLiveStatus() {
    const root = document.querySelector("[data-status-url]");
    if (!root) return;
    const url = root.dataset.statusUrl;
    const tick = async () => {
      const live = Array.from(document.querySelectorAll("[data-live-run]"));
      if (!live.length) return;
      const ids = Array.from(new Set(live.map((el) => el.dataset.liveRun)));
      try {
        const r = await window.cairnFetch(url + "?ids=" + ids.map(encodeURIComponent).join(","));
        if (!r.ok) return setTimeout(tick, 10000);
        const data = await r.json();
        for (const el of live) {
          const s = data[el.dataset.liveRun];
          if (!s) continue;
          const badge = el.querySelector("[data-status]") || el;
          if (badge.dataset.status !== s.status) {
            badge.dataset.status = s.status;
            badge.textContent = s.status;
            badge.className = s.class;
          }
          // A row's own duration cell, or the run page's.
          const dur = (el.closest("tr") || document).querySelector("[data-duration]");
          if (dur && s.duration) dur.textContent = s.duration;
          if (FINAL.has(s.status)) {
            el.removeAttribute("data-live-run");
            document.dispatchEvent(new CustomEvent("cairn:run-ended", { detail: { id: el.dataset.runId, status: s.status } }));
          }
        }
      } catch (e) { /* network hiccup: try again later */ }
      setTimeout(tick, 3000);
    };
    setTimeout(tick, 3000);
  }

  // ---- log tailing -----------------------------------------------------------------------
  function setupLogs() {
    const pre = document.getElementById("run-logs");
    if (!pre || !pre.dataset.logsUrl) return;
    let offset = Number(pre.dataset.offset || 0);
    let live = pre.dataset.live === "1";
    const poll = async () => {
      try {
        const r = await window.cairnFetch(pre.dataset.logsUrl + "?offset=" + offset);
        if (r.ok) {
          const chunk = await r.json();
          if (chunk.text) {
            const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
            const empty = pre.querySelector(".log-empty");
            if (empty) empty.remove();
            pre.appendChild(document.createTextNode(chunk.text));
            if (atBottom) pre.scrollTop = pre.scrollHeight;
          }
          offset = chunk.next_offset;
          if (chunk.done) live = false;
        }
      } catch (e) { /* try again */ }
      if (live) setTimeout(poll, 2000);
    };
    if (live) setTimeout(poll, 1000);
  }

  // ---- the MLflow client's links ("View run at: …/mlflow/#/experiments/E/runs/R") --------
  // The part after # never reaches the server: pass it on to the page that resolves it.
  function followMlflowLink() {
    const to = document.body && document.body.dataset.mlflowLink;
    if (!to) return;
    location.replace(to + "?route=" + encodeURIComponent(location.hash.replace(/^#/, "")));
  }

  document.addEventListener("DOMContentLoaded", () => {
    followMlflowLink();
    const table = document.getElementById("runs-table");
    if (table) {
      setupColumns(table);
      setupCompare(table);
    }
    setupLiveStatus();
    setupLogs();
  });
})();
