/*
 * Live numbers: the page's counters (window.tilerouter, read by the browser tests
 * and handy in the console), tile latency / rate, and the "Live performance" panel
 * that also polls the gateway's GET /stats.
 */
import { $, el } from "./dom.js";
import { fmtInt, fmtMs, percentile } from "./format.js";

const STATS_POLL_MS = 2000;

// Plain data only: the tests copy it out of the page.
export const counters = (window.tilerouter = {
  tilesRequested: 0,
  tilesReceived: 0,
  tileErrors: 0,
  reconnects: 0,
  handoffs: 0,             // gateway reconnect notices followed (README "Websocket protocol")
  lastLevel: -1,
  socketState: "reconnecting",
  viewer: null,
  slide: null,
  version: 1,
});

export const metrics = {
  latencies: [],           // last 100 tile round-trips (ms)
  receipts: [],            // timestamps (ms) of tile receipts, last 5 s
  recentLevels: [],        // [t, level] of recent tile requests
  recordTile(rtt) {
    this.latencies.push(rtt);
    if (this.latencies.length > 100) this.latencies.shift();
    const t = Date.now();
    this.receipts.push(t);
    this.trimReceipts(t);
  },
  trimReceipts(t) {
    while (this.receipts.length && t - this.receipts[0] > 5000) this.receipts.shift();
  },
  tileRate() {
    const t = Date.now();
    this.trimReceipts(t);
    return this.receipts.length / 5;
  },
  /** lastLevel: the finest level requested in the last 2 s. */
  noteLevel(level) {
    const t = Date.now();
    this.recentLevels.push([t, level]);
    while (this.recentLevels.length && t - this.recentLevels[0][0] > 2000) this.recentLevels.shift();
    let max = -1;
    for (const [, l] of this.recentLevels) if (l > max) max = l;
    counters.lastLevel = max;
  },
};

/** Wire the live panel to its toggle; client gives in-flight / queued counts. */
export function initStatsPanel(client) {
  const panel = $("stats-panel");
  const toggle = $("stats-toggle");
  let statsTimer = null, localTimer = null, lastStatsAt = 0, statsInFlight = false;

  function setOpen(open) {
    panel.hidden = !open;
    toggle.setAttribute("aria-pressed", String(open));
    clearInterval(statsTimer); clearInterval(localTimer);
    statsTimer = localTimer = null;
    if (open) {
      renderLocal();
      pollRouter();
      localTimer = setInterval(renderLocal, 500);
      statsTimer = setInterval(pollRouter, STATS_POLL_MS);
    }
  }
  toggle.addEventListener("click", () => setOpen(panel.hidden));
  $("stats-close").addEventListener("click", () => setOpen(false));

  function renderLocal() {
    const l = metrics.latencies;
    $("st-p50").textContent = l.length ? fmtMs(percentile(l, 50)) : "–";
    $("st-p95").textContent = l.length ? fmtMs(percentile(l, 95)) : "–";
    $("st-rate").textContent = metrics.tileRate().toFixed(1);
    $("st-inflight").textContent = client.inflight + " / " + client.queuedCount();
    $("st-totals").textContent = fmtInt(counters.tilesReceived) + " / " + fmtInt(counters.tileErrors);
    $("st-reconnects").textContent = String(counters.reconnects);
    if (lastStatsAt) {
      const age = Math.round((Date.now() - lastStatsAt) / 1000);
      $("st-router-age").textContent = age > 5 ? "(stale, " + age + " s)" : "";
    }
  }

  function pollRouter() {
    if (statsInFlight) return;
    statsInFlight = true;
    const ctl = "AbortController" in window ? new AbortController() : null;
    const t = setTimeout(() => ctl && ctl.abort(), 4000);
    fetch("/stats", { cache: "no-store", signal: ctl ? ctl.signal : undefined })
      .then((r) => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then((s) => { lastStatsAt = Date.now(); renderRouter(s); })
      .catch(() => { $("st-router-age").textContent = "(unavailable)"; })
      .finally(() => { clearTimeout(t); statsInFlight = false; });
  }

  function renderRouter(s) {
    const workers = Array.isArray(s.workers) ? s.workers : [];
    const r = s.routing || {};
    $("st-workers").textContent = String(workers.length);
    $("st-workers").classList.toggle("bad", workers.length === 0);
    const hits = r.affinity_hits || 0, misses = r.affinity_misses || 0;
    $("st-affinity").textContent = hits + misses ? ((100 * hits) / (hits + misses)).toFixed(1) + "%" : "–";
    $("st-waiting").textContent = fmtInt(r.waiting || 0);
    $("st-requests").textContent = fmtInt(r.requests) + " / " + fmtInt(r.replies);
    $("st-errors").textContent = fmtInt(r.errors || 0) + " / " + fmtInt(r.timeouts || 0);
    $("st-policy").textContent = r.policy || "–";
    $("st-router-age").textContent = "";
    const tbody = $("st-worker-table").querySelector("tbody");
    tbody.replaceChildren(...workers.map((w) => {
      const c = w.tile_cache || {};
      const total = (c.hits || 0) + (c.misses || 0);
      return el("tr", { title: (w.host ? w.host + " · " : "") + "pid " + (w.pid ?? "?") + (w.open_slides && w.open_slides.length ? "\nopen: " + w.open_slides.join(", ") : "") },
        el("td", { class: "wid" }, String(w.id ?? "?")),
        el("td", { class: "state-" + String(w.state || "").toLowerCase() }, w.state || "–"),
        el("td", null, fmtInt(w.inflight || 0)),
        el("td", null, fmtInt(w.served || 0)),
        el("td", null, total ? Math.round((100 * (c.hits || 0)) / total) + "%" : "–"));
    }));
  }
}
