/*
 * tilerouter viewer — slide browser + OpenSeadragon viewer whose tiles are
 * fetched over a single multiplexed websocket (/ws).
 *
 * Plain browser JavaScript, no build step. Requires OpenSeadragon 6.x
 * (loaded from /osd/openseadragon.min.js before this file).
 *
 * Test hooks: window.tilerouter exposes live counters
 *   {tilesRequested, tilesReceived, tileErrors, reconnects, lastLevel,
 *    socketState, viewer, slide}
 *
 * URL hash: #slide=<urlencoded path>&x=<0..1>&y=<0..1>&zoom=<viewport zoom>
 *   x / y are the view centre as fractions of the slide width / height,
 *   zoom is OpenSeadragon's viewport zoom (1 = slide width fits the viewer).
 */
(function () {
  "use strict";

  const OSD = window.OpenSeadragon;

  // OpenSeadragon logs every failed tile as an error; tiles we drop on purpose
  // (no longer visible, or belonging to a slide that was closed) are not errors.
  if (OSD && OSD.console && typeof OSD.console.error === "function") {
    const base = OSD.console;
    const error = base.error.bind(base);
    OSD.console = Object.assign(Object.create(base), {
      error(...args) {
        if (args.some((a) => typeof a === "string" && /\[tilerouter\] (stale|cancelled)$/.test(a))) return;
        error(...args);
      },
    });
  }

  // ------------------------------------------------------------------ config
  const MAX_INFLIGHT = 48;          // server allows 64 per connection
  const TILE_TIMEOUT_MS = 16000;    // per tile, measured from send (router deadline is 15 s)
  const RPC_TIMEOUT_MS = 30000;     // info / list / associated
  const BACKOFF_MIN_MS = 250;
  const BACKOFF_MAX_MS = 5000;
  const STALE_TILE_MS = 2500;       // queued tile not wanted by OSD for this long is dropped
  const BUSY_RETRIES = 5;
  const HASH_THROTTLE_MS = 300;
  const STATS_POLL_MS = 2000;
  const PRIO_CONTROL = 0, PRIO_TILE = 1, PRIO_BACKGROUND = 2;

  // --------------------------------------------------------- public counters
  const tr = (window.tilerouter = {
    tilesRequested: 0,
    tilesReceived: 0,
    tileErrors: 0,
    reconnects: 0,
    lastLevel: -1,
    socketState: "reconnecting",
    viewer: null,
    slide: null,
    version: 1,
  });

  // ----------------------------------------------------------------- helpers
  const $ = (id) => document.getElementById(id);
  const now = () => performance.now();

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "class") node.className = v;
        else if (k === "text") node.textContent = v;
        else if (k === "dataset") Object.assign(node.dataset, v);
        else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? "" : v);
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function icon(name, cls) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "icon" + (cls ? " " + cls : ""));
    svg.setAttribute("aria-hidden", "true");
    const use = document.createElementNS(ns, "use");
    use.setAttribute("href", "#" + name);
    svg.append(use);
    return svg;
  }

  const fmtInt = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–");

  function fmtBytes(n) {
    if (!Number.isFinite(n)) return "";
    const u = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + " " + u[i];
  }

  function fmtMpp(v) {
    if (!Number.isFinite(v)) return null;
    return (v < 0.1 ? v.toFixed(4) : v.toFixed(3)).replace(/0+$/, "").replace(/\.$/, "") + " µm/px";
  }

  function fmtLength(um) {
    if (um >= 1000) {
      const mm = um / 1000;
      return (mm >= 10 ? mm.toFixed(0) : mm.toFixed(mm % 1 === 0 ? 0 : 1)) + " mm";
    }
    return (um >= 1 ? String(+um.toFixed(um % 1 === 0 ? 0 : 1)) : String(+um.toPrecision(2))) + " µm";
  }

  function fmtMs(ms) {
    if (!Number.isFinite(ms)) return "–";
    return ms < 10 ? ms.toFixed(1) + " ms" : Math.round(ms) + " ms";
  }

  function percentile(values, p) {
    if (!values.length) return NaN;
    const s = values.slice().sort((a, b) => a - b);
    const idx = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
    return s[idx];
  }

  function vendorLabel(v) {
    if (!v) return null;
    const known = {
      aperio: "Aperio", hamamatsu: "Hamamatsu", leica: "Leica", mirax: "3DHISTECH (MIRAX)",
      philips: "Philips", sakura: "Sakura", trestle: "Trestle", ventana: "Ventana",
      "generic-tiff": "Generic TIFF", dicom: "DICOM", zeiss: "Zeiss",
    };
    return known[v] || v;
  }

  function dirname(path) {
    const i = path.lastIndexOf("/");
    return i < 0 ? "" : path.slice(0, i);
  }

  function basename(path) {
    const i = path.lastIndexOf("/");
    return i < 0 ? path : path.slice(i + 1);
  }

  function throttle(fn, ms) {
    let last = 0, timer = null;
    return function throttled() {
      const t = Date.now();
      const wait = ms - (t - last);
      if (wait <= 0) {
        clearTimeout(timer); timer = null; last = t; fn();
      } else if (!timer) {
        timer = setTimeout(() => { timer = null; last = Date.now(); fn(); }, wait);
      }
    };
  }

  class RpcError extends Error {
    constructor(code, message) {
      super(message || code);
      this.code = code;
    }
  }

  // ------------------------------------------------------- websocket client
  /**
   * Multiplexing websocket client.
   *  - at most MAX_INFLIGHT requests on the wire; the rest wait client-side in
   *    three priority classes (control, tiles, background). Tiles are served
   *    newest-first (what the user looks at now), the others first-in-first-out.
   *  - on close: every in-flight request goes back to the queue and is re-sent
   *    after reconnecting (exponential backoff 250 ms → 5 s).
   */
  class WsClient {
    constructor(url) {
      this.url = url;
      this.ws = null;
      this.state = "reconnecting";
      this.nextId = 1;
      this.seq = 0;
      this.pending = new Map();            // id -> req (queued, waiting for retry, or in flight)
      this.queues = [[], [], []];          // by priority; entries may be lazily-cancelled
      this.inflight = 0;
      this.pumping = false;
      this.backoff = BACKOFF_MIN_MS;
      this.everOpened = false;
      this.reconnectTimer = null;
      this.stableTimer = null;
      this.lastMessageAt = 0;
      this.stateListeners = [];
      this.decoder = new TextDecoder();
      window.addEventListener("online", () => this.reconnectNow());
      this.connect();
    }

    onState(fn) { this.stateListeners.push(fn); }

    setState(s) {
      if (this.state === s) return;
      this.state = s;
      for (const fn of this.stateListeners) fn(s);
    }

    connect() {
      this.reconnectTimer = null;
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (e) {
        this.scheduleReconnect();
        return;
      }
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onopen = () => { if (ws === this.ws) this.handleOpen(); };
      ws.onmessage = (ev) => { if (ws === this.ws) this.handleMessage(ev.data); };
      ws.onclose = () => { if (ws === this.ws) this.handleClose(); };
      ws.onerror = () => { /* a close event always follows */ };
    }

    reconnectNow() {
      if (this.state === "open" || !this.reconnectTimer) return;
      clearTimeout(this.reconnectTimer);
      this.backoff = BACKOFF_MIN_MS;
      this.connect();
    }

    scheduleReconnect() {
      if (this.reconnectTimer) return;
      const delay = this.backoff;
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
      this.reconnectTimer = setTimeout(() => this.connect(), delay);
    }

    handleOpen() {
      this.lastMessageAt = now();
      if (this.everOpened) tr.reconnects++;
      this.everOpened = true;
      // Only reset the backoff once the connection proved stable.
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => { this.backoff = BACKOFF_MIN_MS; }, 1000);
      this.setState("open");
      this.pump();
    }

    handleClose() {
      clearTimeout(this.stableTimer);
      this.ws = null;
      // Everything that was on the wire goes back to the queue, in original order.
      for (const req of this.pending.values()) {
        if (!req.sent) continue;
        clearTimeout(req.timer);
        req.timer = null;
        req.sent = false;
        if (!req.cb) { this.pending.delete(req.id); continue; }   // abandoned: forget it
        this.queues[req.priority].push(req);
      }
      this.inflight = 0;
      for (const q of this.queues) q.sort((a, b) => a.seq - b.seq);
      this.setState("reconnecting");
      this.scheduleReconnect();
    }

    /**
     * Queue a request. opts: {priority, timeoutMs, cb(err, result), isStale()}
     * Returns a handle usable with cancel().
     */
    request(msg, opts) {
      const id = this.nextId++;
      const req = {
        id,
        msg: Object.assign({ id }, msg),
        priority: opts.priority ?? PRIO_CONTROL,
        timeoutMs: opts.timeoutMs ?? RPC_TIMEOUT_MS,
        cb: opts.cb,
        isStale: opts.isStale || null,
        seq: this.seq++,
        sent: false,
        done: false,
        timer: null,
        sentAt: 0,
        attempts: 0,
      };
      this.pending.set(id, req);
      this.queues[req.priority].push(req);
      this.pump();
      return req;
    }

    /** Promise wrapper for control / background requests; the promise carries .req */
    call(msg, priority = PRIO_CONTROL, timeoutMs = RPC_TIMEOUT_MS) {
      let req = null;
      const promise = new Promise((resolve, reject) => {
        req = this.request(msg, {
          priority, timeoutMs,
          cb: (err, res) => (err ? reject(err) : resolve(res)),
        });
      });
      promise.req = req;
      return promise;
    }

    /** Move a still-queued request to a more urgent priority class. */
    promote(req, priority) {
      if (!req || req.done || req.sent || req.priority <= priority) return;
      req.priority = priority;
      this.queues[priority].push(req);
      this.queues[priority].sort((a, b) => a.seq - b.seq);
      this.pump();
    }

    /** Cancel a request: dropped if not yet sent, reply ignored otherwise. */
    cancel(req) {
      if (!req || req.done) return;
      req.cb = null;
      if (!req.sent) {
        req.done = true;
        this.pending.delete(req.id);
        clearTimeout(req.timer);
      }
      // If it is on the wire we keep counting it in flight until the reply or
      // timeout arrives, so our accounting matches the server's.
    }

    /** Fail (with code) every not-yet-sent request matching pred. */
    failQueued(pred, code) {
      for (const req of Array.from(this.pending.values())) {
        if (req.sent || req.done || !pred(req)) continue;
        this.finish(req, new RpcError(code, code), null);
      }
    }

    queuedCount() {
      let n = 0;
      for (const req of this.pending.values()) if (!req.sent) n++;
      return n;
    }

    nextReq() {
      for (let p = 0; p < this.queues.length; p++) {
        const q = this.queues[p];
        while (q.length) {
          const req = p === PRIO_TILE ? q.pop() : q.shift();
          if (req.done || req.sent || req.priority !== p || !this.pending.has(req.id)) continue;
          if (req.isStale && req.isStale()) {
            this.finish(req, new RpcError("stale", "no longer needed"), null);
            continue;
          }
          return req;
        }
      }
      return null;
    }

    pump() {
      if (this.pumping) return;       // re-entered from a callback: the running loop continues
      this.pumping = true;
      try {
        while (this.state === "open" && this.ws && this.inflight < MAX_INFLIGHT) {
          const req = this.nextReq();
          if (!req) break;
          try {
            this.ws.send(JSON.stringify(req.msg));
          } catch (e) {
            this.queues[req.priority].push(req);
            break;
          }
          req.sent = true;
          req.attempts++;
          req.sentAt = now();
          this.inflight++;
          req.timer = setTimeout(() => this.handleTimeout(req), req.timeoutMs);
        }
      } finally {
        this.pumping = false;
      }
    }

    handleTimeout(req) {
      if (req.done || !req.sent) return;
      // Nothing at all arrived for a whole timeout period while requests were on the
      // wire: the connection is dead even if the browser has not noticed (half-open
      // TCP). Reconnect; this request is re-sent with the others.
      if (this.ws && now() - this.lastMessageAt >= req.timeoutMs) {
        const old = this.ws;
        this.handleClose();
        try { old.close(); } catch (e) { /* ignore */ }
        return;
      }
      this.finish(req, new RpcError("timeout", "no reply within " + Math.round(req.timeoutMs / 1000) + " s"), null);
    }

    finish(req, err, result) {
      if (req.done) return;
      req.done = true;
      clearTimeout(req.timer);
      this.pending.delete(req.id);
      if (req.sent) {
        req.sent = false;
        this.inflight = Math.max(0, this.inflight - 1);
      }
      const cb = req.cb;
      req.cb = null;
      if (cb) {
        try { cb(err, result); } catch (e) { console.error("[tilerouter] callback failed", e); }
      }
      this.pump();
    }

    retryLater(req, delay) {
      clearTimeout(req.timer);
      req.timer = null;
      if (req.sent) {
        req.sent = false;
        this.inflight = Math.max(0, this.inflight - 1);
      }
      setTimeout(() => {
        if (req.done || !this.pending.has(req.id)) return;
        this.queues[req.priority].push(req);
        this.queues[req.priority].sort((a, b) => a.seq - b.seq);
        this.pump();
      }, delay);
      this.pump();
    }

    handleMessage(data) {
      this.lastMessageAt = now();
      let header, body = null;
      if (typeof data === "string") {
        try { header = JSON.parse(data); } catch (e) { return; }
      } else {
        if (!(data instanceof ArrayBuffer) || data.byteLength < 4) return;
        const n = new DataView(data).getUint32(0, false);
        if (4 + n > data.byteLength) return;
        try {
          header = JSON.parse(this.decoder.decode(new Uint8Array(data, 4, n)));
        } catch (e) { return; }
        body = new Blob([new Uint8Array(data, 4 + n)], { type: header.mime || "image/jpeg" });
      }
      if (!header || header.id === undefined || header.id === null) return;
      const req = this.pending.get(header.id) || this.pending.get(Number(header.id));
      if (!req || !req.sent) return;           // late reply for a timed-out request
      if (header.ok === false) {
        const e = header.error || {};
        const code = e.code || "error";
        // Transient refusals (connection over its limit, router briefly away): retry
        // with a growing delay before reporting a failure.
        if ((code === "busy" || code === "unavailable") && req.attempts < BUSY_RETRIES && req.cb) {
          this.retryLater(req, 100 * Math.pow(2, req.attempts));
          return;
        }
        this.finish(req, new RpcError(code, e.message || code), null);
        return;
      }
      header.rtt = now() - req.sentAt;
      if (body) header.blob = body;
      this.finish(req, null, header);
    }
  }

  // ---------------------------------------------------------- live metrics
  const metrics = {
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
    noteLevel(level) {
      const t = Date.now();
      this.recentLevels.push([t, level]);
      while (this.recentLevels.length && t - this.recentLevels[0][0] > 2000) this.recentLevels.shift();
      let max = -1;
      for (const [, l] of this.recentLevels) if (l > max) max = l;
      tr.lastLevel = max;
    },
  };

  // ------------------------------------------------------------ app state
  const wsUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  const client = new WsClient(wsUrl);

  const infoCache = new Map();     // path -> Promise<info>
  const thumbCache = new Map();    // path -> Promise<blobURL|null>
  let slides = [];                 // from list
  let current = null;              // {path, info, source, token}
  let viewer = null;
  let pendingView = null;          // view to apply once the slide opened
  let viewRestored = false;
  let openToken = 0;

  function getInfo(path, priority = PRIO_CONTROL) {
    let p = infoCache.get(path);
    if (!p) {
      p = client.call({ op: "info", slide: path }, priority);
      p.catch(() => { if (infoCache.get(path) === p) infoCache.delete(path); });   // allow a retry later
      infoCache.set(path, p);
    } else {
      client.promote(p.req, priority);     // e.g. the slide being opened while its card info waits
    }
    return p;
  }

  function getAssociated(path, name, size, priority) {
    return client
      .call({ op: "associated", slide: path, name, size }, priority)
      .then((res) => (res.blob ? URL.createObjectURL(res.blob) : null));
  }

  function getThumb(path) {
    let p = thumbCache.get(path);
    if (!p) {
      p = getAssociated(path, "thumbnail", 256, PRIO_BACKGROUND).catch(() => null);
      thumbCache.set(path, p);
    }
    return p;
  }

  // ------------------------------------------------------ connection badge
  const connEl = $("conn-status");
  function renderConn(state) {
    tr.socketState = state;
    connEl.dataset.state = state;
    const label = connEl.querySelector(".conn-label");
    if (state === "open") {
      label.textContent = "Connected";
      connEl.title = "Connected to the tile server";
    } else {
      label.textContent = client.everOpened ? "Reconnecting…" : "Connecting…";
      connEl.title = "Connection lost — reconnecting automatically; pending tiles will be re-requested";
    }
    $("st-reconnects").textContent = String(tr.reconnects);
  }
  client.onState((s) => {
    renderConn(s);
    if (s === "open" && listFailed) loadList();
  });
  renderConn(client.state);

  // ------------------------------------------------------------ slide list
  const listEl = $("slide-list");
  const filterEl = $("slide-filter");
  let listFailed = false;
  const cardObserver = "IntersectionObserver" in window
    ? new IntersectionObserver(onCardsVisible, { root: listEl, rootMargin: "200px 0px" })
    : null;

  function loadList() {
    listFailed = false;
    listEl.setAttribute("aria-busy", "true");
    return client
      .call({ op: "list" })
      .then((res) => {
        slides = (res.slides || []).slice().sort((a, b) => a.path.localeCompare(b.path, undefined, { numeric: true }));
        renderList();
      })
      .catch((err) => {
        listFailed = true;
        listEl.replaceChildren(el("div", { class: "list-placeholder error" },
          "Could not load the slide list (" + (err.message || err.code) + ").",
          el("br"),
          el("button", { class: "btn small", type: "button", onclick: () => loadList() }, "Retry")));
      })
      .finally(() => listEl.setAttribute("aria-busy", "false"));
  }

  function renderList() {
    if (cardObserver) cardObserver.disconnect();
    const groups = new Map();
    for (const s of slides) {
      const d = dirname(s.path);
      if (!groups.has(d)) groups.set(d, []);
      groups.get(d).push(s);
    }
    const keys = Array.from(groups.keys()).sort((a, b) => (a === "" ? -1 : b === "" ? 1 : a.localeCompare(b)));
    const frag = document.createDocumentFragment();
    const ordered = [];
    for (const k of keys) {
      const items = groups.get(k);
      ordered.push(...items);
      const group = el("section", { class: "slide-group", dataset: { folder: k } });
      const head = el("button", { class: "group-head", type: "button", "aria-expanded": "true" },
        icon("i-folder", "folder"),
        el("span", { class: "group-name", title: k || "Slide root" }, k || "Slide root"),
        el("span", { class: "count" }, String(items.length)));
      head.addEventListener("click", () => {
        const collapsed = group.classList.toggle("collapsed");
        head.setAttribute("aria-expanded", String(!collapsed));
      });
      group.append(head);
      const ul = el("div", { class: "group-items" });
      for (const s of items) ul.append(renderCard(s));
      group.append(ul);
      frag.append(group);
    }
    if (!slides.length) {
      frag.append(el("div", { class: "list-placeholder" }, "No slides found in the slide root."));
    }
    listEl.replaceChildren(frag);
    $("slide-count").textContent = slides.length ? String(slides.length) : "";
    renderGallery(ordered);
    applyFilter();
    markActiveCard();
  }

  function renderCard(s) {
    const card = el("a", {
      class: "slide-card", href: "#slide=" + encodeURIComponent(s.path),
      dataset: { path: s.path, search: (s.path + " " + (s.name || "")).toLowerCase() },
      title: s.path,
    },
    el("div", { class: "thumb loading" }),
    el("div", { class: "card-text" },
      el("div", { class: "card-name" }, s.name || basename(s.path)),
      el("div", { class: "card-meta dims" }, "\u00a0"),
      el("div", { class: "card-meta sub" }, fmtBytes(s.size) || "\u00a0")));
    card.addEventListener("click", (ev) => {
      if (ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.button !== 0) return;  // let "open in new tab" work
      ev.preventDefault();
      navigateToSlide(s.path);
    });
    if (cardObserver) cardObserver.observe(card);
    else loadCardDetails(card);
    return card;
  }

  function onCardsVisible(entries) {
    for (const e of entries) {
      if (!e.isIntersecting) continue;
      cardObserver.unobserve(e.target);
      loadCardDetails(e.target);
    }
  }

  function loadCardDetails(card) {
    const path = card.dataset.path;
    const thumbEl = card.querySelector(".thumb");
    getThumb(path).then((url) => {
      thumbEl.classList.remove("loading");
      if (url) {
        const img = el("img", { src: url, alt: "", loading: "lazy", decoding: "async" });
        thumbEl.replaceChildren(img);
      } else {
        thumbEl.classList.add("none");
        thumbEl.replaceChildren(icon("i-slide"));
      }
    });
    getInfo(path, PRIO_BACKGROUND).then((info) => {
      const dims = card.querySelector(".dims");
      const entry = slides.find((s) => s.path === path);
      dims.textContent = fmtInt(info.width) + " × " + fmtInt(info.height) + " px" +
        (entry && entry.size ? " · " + fmtBytes(entry.size) : "");
      const sub = card.querySelector(".sub");
      const bits = [];
      const v = vendorLabel(info.vendor);
      if (v) bits.push(v);
      const mpp = fmtMpp(info.mpp_x);
      if (mpp) bits.push(mpp);
      if (info.objective_power) bits.push(info.objective_power + "×");
      sub.textContent = bits.join(" · ") || "Unknown format";
      sub.title = sub.textContent;
      card.dataset.search += " " + (info.vendor || "").toLowerCase();
      applyFilterToCard(card, filterEl.value.trim().toLowerCase());
    }).catch((err) => {
      const dims = card.querySelector(".dims");
      dims.textContent = "Unreadable (" + (err.code || "error") + ")";
      card.classList.add("broken");
    });
  }

  function applyFilterToCard(card, q) {
    card.hidden = !!q && !q.split(/\s+/).every((w) => card.dataset.search.includes(w));
  }

  // Larger cards shown in the viewer area while no slide is open.
  const GALLERY_MAX = 200;
  const galleryEl = $("gallery");
  const galleryObserver = "IntersectionObserver" in window
    ? new IntersectionObserver((entries) => {
      for (const e of entries) {
        if (!e.isIntersecting) continue;
        galleryObserver.unobserve(e.target);
        loadGalleryCard(e.target);
      }
    }, { root: $("empty-state"), rootMargin: "300px 0px" })
    : null;

  function renderGallery(ordered) {
    if (galleryObserver) galleryObserver.disconnect();
    const items = ordered.slice(0, GALLERY_MAX).map((s) => {
      const folder = dirname(s.path);
      const card = el("a", {
        class: "g-card", href: "#slide=" + encodeURIComponent(s.path), title: s.path,
        dataset: { path: s.path, search: (s.path + " " + (s.name || "")).toLowerCase() },
      },
      el("div", { class: "g-thumb loading" }),
      el("div", { class: "g-text" },
        el("div", { class: "g-name" }, s.name || basename(s.path)),
        el("div", { class: "g-meta" }, folder ? folder + "/" : "\u00a0"),
        el("div", { class: "g-meta dims" }, "\u00a0")));
      card.addEventListener("click", (ev) => {
        if (ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.button !== 0) return;
        ev.preventDefault();
        navigateToSlide(s.path);
      });
      if (galleryObserver) galleryObserver.observe(card);
      else loadGalleryCard(card);
      return card;
    });
    galleryEl.replaceChildren(...items);
    $("home-sub").textContent = slides.length
      ? slides.length + (slides.length === 1 ? " slide" : " slides") + " available. Choose one below or from the library; press / to filter."
      : "No slides were found in the slide root.";
  }

  function loadGalleryCard(card) {
    const path = card.dataset.path;
    const thumbEl = card.querySelector(".g-thumb");
    getThumb(path).then((url) => {
      thumbEl.classList.remove("loading");
      thumbEl.replaceChildren(url ? el("img", { src: url, alt: "", decoding: "async" }) : icon("i-slide"));
    });
    getInfo(path, PRIO_BACKGROUND).then((info) => {
      const bits = [fmtInt(info.width) + " × " + fmtInt(info.height)];
      const mpp = fmtMpp(info.mpp_x);
      if (mpp) bits.push(mpp);
      card.querySelector(".dims").textContent = bits.join(" · ");
      card.dataset.search += " " + (info.vendor || "").toLowerCase();
    }).catch(() => { card.querySelector(".dims").textContent = "Unreadable"; });
  }

  function applyFilter() {
    const q = filterEl.value.trim().toLowerCase();
    for (const card of galleryEl.children) applyFilterToCard(card, q);
    let shown = 0;
    for (const group of listEl.querySelectorAll(".slide-group")) {
      let n = 0;
      for (const card of group.querySelectorAll(".slide-card")) {
        applyFilterToCard(card, q);
        if (!card.hidden) n++;
      }
      group.hidden = n === 0;
      shown += n;
    }
    let none = listEl.querySelector(".no-match");
    if (q && shown === 0 && slides.length) {
      if (!none) listEl.append(el("div", { class: "list-placeholder no-match" }, "No slides match “" + q + "”."));
      else none.textContent = "No slides match “" + q + "”.";
    } else if (none) {
      none.remove();
    }
    $("slide-count").textContent = slides.length ? (q ? shown + " / " + slides.length : String(slides.length)) : "";
  }

  function markActiveCard() {
    for (const c of listEl.querySelectorAll(".slide-card")) {
      const active = current && c.dataset.path === current.path;
      c.classList.toggle("active", !!active);
      if (active) c.setAttribute("aria-current", "true");
      else c.removeAttribute("aria-current");
    }
  }

  let filterTimer = null;
  filterEl.addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(applyFilter, 60);
  });
  filterEl.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      const first = listEl.querySelector(".slide-card:not([hidden])");
      if (first) navigateToSlide(first.dataset.path);
    } else if (ev.key === "Escape") {
      filterEl.value = "";
      applyFilter();
    }
  });
  $("refresh-list").addEventListener("click", () => {
    infoCache.clear();
    for (const p of thumbCache.values()) p.then((u) => u && URL.revokeObjectURL(u));
    thumbCache.clear();
    loadList();
  });

  // ---------------------------------------------------------- tile source
  function buildTileSource(path, info) {
    const tileSize = info.tile_size || 254;
    const overlap = info.overlap || 0;
    let dims = Array.isArray(info.dz_dimensions) && info.dz_dimensions.length ? info.dz_dimensions : null;
    if (!dims) {
      dims = [];
      let w = info.width, h = info.height;
      for (;;) {
        dims.unshift([w, h]);
        if (w === 1 && h === 1) break;
        w = Math.max(1, Math.ceil(w / 2));
        h = Math.max(1, Math.ceil(h / 2));
      }
    }
    const maxLevel = (info.dz_levels || dims.length) - 1;
    // Lowest level worth loading: the largest one that still fits in one tile.
    let minLevel = 0;
    for (let l = 0; l <= maxLevel; l++) {
      const d = dims[l];
      if (d && d[0] <= tileSize && d[1] <= tileSize) minLevel = l;
    }
    const format = info.format === "png" ? "png" : "jpeg";
    const prefix = "ws:" + path + "/";

    return new OSD.TileSource({
      width: info.width,
      height: info.height,
      tileSize: tileSize,
      tileOverlap: overlap,
      minLevel: minLevel,
      maxLevel: maxLevel,
      tilerouterSlide: path,

      getTileUrl(level, x, y) {
        return prefix + level + "/" + x + "_" + y;
      },

      hasTransparency() {
        return format === "png";
      },

      downloadTileStart(job) {
        const tile = job.tile || {};
        const level = tile.level, col = tile.x, row = tile.y;
        job.userData.req = null;
        tr.tilesRequested++;
        metrics.noteLevel(level);
        job.userData.req = client.request(
          { op: "tile", slide: path, level: level, col: col, row: row, format: format },
          {
            priority: PRIO_TILE,
            timeoutMs: TILE_TIMEOUT_MS,
            isStale() {
              // OSD already gave up on the job, or has not wanted this tile for a while.
              if (!job.jobId) return true;
              return !!tile.lastTouchTime && Date.now() - tile.lastTouchTime > STALE_TILE_MS;
            },
            cb(err, res) {
              job.userData.req = null;
              if (!job.jobId) return;                 // OSD timed it out / aborted already
              if (err) {
                if (err.code === "stale" || err.code === "cancelled") {
                  job.fail("[tilerouter] " + err.code);
                  // Not a real failure: let OSD request it again if it comes back into view.
                  if (err.code === "stale") tile.exists = true;
                  return;
                }
                tr.tileErrors++;
                job.fail("[tilerouter] " + err.code + ": " + err.message);
                return;
              }
              if (!res.blob || res.blob.size === 0) {
                tr.tileErrors++;
                job.fail("[tilerouter] empty tile");
                return;
              }
              tr.tilesReceived++;
              metrics.recordTile(res.rtt);
              job.finish(res.blob, null, "rasterBlob");
            },
          });
      },

      downloadTileAbort(job) {
        // Drops it from our queue if not yet sent; otherwise the reply is ignored.
        if (job.userData && job.userData.req) {
          client.cancel(job.userData.req);
          job.userData.req = null;
        }
      },
    });
  }

  // Tiles that failed for transient reasons (timeout, overload, worker loss)
  // are given another chance a little later instead of staying blank forever.
  const TRANSIENT = /timeout|exceeded|busy|unavailable|overload|worker|backend|internal|disconnect|shutting/i;
  function onTileFailed(ev) {
    const msg = String(ev.message || "");
    if (msg.includes("[tilerouter] stale") || msg.includes("[tilerouter] cancelled")) return;
    const tile = ev.tile;
    if (!tile || !TRANSIENT.test(msg)) return;
    tile._trRevives = (tile._trRevives || 0) + 1;
    if (tile._trRevives > 2) return;
    const ti = ev.tiledImage;
    setTimeout(() => {
      const owner = ti && ti.viewer;     // the main viewer or its navigator
      if (!owner || !owner.world || owner.world.getIndexOfItem(ti) < 0) return;
      tile.exists = true;
      ti._needsUpdate = true;     // make OSD re-evaluate tiles even when the view is static
      owner.forceRedraw();
    }, 3000 * tile._trRevives);
  }

  // --------------------------------------------------------------- viewer
  function ensureViewer() {
    if (viewer) return viewer;
    viewer = OSD({
      element: $("osd"),
      prefixUrl: "/osd/images/",
      showNavigationControl: false,
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",
      navigatorSizeRatio: 0.17,
      navigatorMaintainSizeRatio: true,
      navigatorAutoFade: false,
      navigatorBackground: "#0d1014",
      navigatorBorderColor: "#4a5261",
      navigatorDisplayRegionColor: "#4f8cff",
      animationTime: 0.45,
      springStiffness: 9,
      blendTime: 0.1,
      immediateRender: false,
      visibilityRatio: 0.3,
      constrainDuringPan: false,
      minZoomImageRatio: 0.5,
      maxZoomPixelRatio: 2,
      zoomPerScroll: 1.3,
      zoomPerClick: 2,
      imageLoaderLimit: 0,        // the websocket client does its own queueing / prioritisation
      maxTilesPerFrame: 6,
      timeout: 120000,            // our own per-tile timeout (15 s from send) fires first
      tileRetryMax: 0,
      crossOriginPolicy: false,
      preserveImageSizeOnResize: true,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true, flickEnabled: true },
      gestureSettingsTouch: { pinchRotate: false, flickEnabled: true },
      keyboardNavEnabled: true,
    });
    tr.viewer = viewer;

    viewer.addHandler("tile-load-failed", onTileFailed);
    viewer.addHandler("open", onViewerOpen);
    viewer.addHandler("open-failed", (ev) => showViewerError(ev.message || "The viewer could not open the slide."));
    const onView = () => { updateScalebar(); updateReadout(); scheduleHashUpdate(); };
    viewer.addHandler("viewport-change", onView);
    viewer.addHandler("animation-finish", onView);
    viewer.addHandler("resize", () => { updateScalebar(); updateReadout(); });
    viewer.addHandler("rotate", onView);
    return viewer;
  }

  function showViewerError(msg) {
    if (viewer) viewer.close();
    document.body.classList.remove("slide-ready");
    $("scalebar").hidden = true;
    $("zoom-readout").textContent = "";
    $("viewer-loading").hidden = true;
    $("viewer-error").hidden = false;
    $("viewer-error-msg").textContent = msg;
  }

  function navigateToSlide(path) {
    const hash = "#slide=" + encodeURIComponent(path);
    if (!current || current.path !== path) {
      history.pushState(null, "", hash);
    }
    applyLocation();
    if (window.matchMedia("(max-width: 900px)").matches) setPanel("library", false);
  }

  function parseHash() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const num = (k) => {
      const v = params.get(k);
      if (v === null || v === "") return null;
      const n = Number(v);
      return Number.isFinite(n) ? n : null;
    };
    return { slide: params.get("slide"), x: num("x"), y: num("y"), zoom: num("zoom") };
  }

  function applyLocation() {
    const h = parseHash();
    if (!h.slide) {
      if (current) closeSlide();
      return;
    }
    const view = h.x !== null && h.y !== null && h.zoom !== null && h.zoom > 0 ? { x: h.x, y: h.y, zoom: h.zoom } : null;
    if (current && current.path === h.slide) {
      if (view && current.opened) applyView(view, false);
      else if (view) pendingView = view;
      return;
    }
    openSlide(h.slide, view);
  }

  function closeSlide() {
    openToken++;
    client.failQueued((r) => r.msg.op === "tile", "cancelled");
    current = null;
    tr.slide = null;
    document.body.classList.remove("slide-ready");
    if (viewer) viewer.close();
    document.body.classList.add("no-slide");
    $("empty-state").hidden = false;
    $("viewer-loading").hidden = true;
    $("viewer-error").hidden = true;
    $("scalebar").hidden = true;
    $("zoom-readout").textContent = "";
    $("slide-title").textContent = "";
    document.title = "tilerouter · slide viewer";
    renderInfo(null);
    markActiveCard();
  }

  function openSlide(path, view) {
    const token = ++openToken;
    // Tiles of the previous slide that are still waiting client-side are not needed anymore.
    client.failQueued((r) => r.msg.op === "tile" && r.msg.slide !== path, "cancelled");
    current = { path, info: null, opened: false, token };
    tr.slide = path;
    pendingView = view;
    viewRestored = false;
    document.body.classList.remove("no-slide");
    $("empty-state").hidden = true;
    $("viewer-error").hidden = true;
    $("viewer-loading").hidden = false;
    $("scalebar").hidden = true;
    $("slide-title").textContent = basename(path);
    $("slide-title").title = path;
    document.title = basename(path) + " · tilerouter";
    markActiveCard();
    renderInfo(null, path);

    getInfo(path).then((info) => {
      if (token !== openToken) return;
      current.info = info;
      renderInfo(info, path);
      ensureViewer();
      viewer.open(buildTileSource(path, info));
    }).catch((err) => {
      if (token !== openToken) return;
      const why = err && err.code === "not_found" ? "The slide “" + path + "” does not exist (or is not readable)." :
        (err && (err.message || err.code)) || String(err);
      showViewerError(why);
      renderInfo(null);
    });
  }

  function onViewerOpen() {
    if (!current) return;
    current.opened = true;
    document.body.classList.add("slide-ready");
    $("viewer-loading").hidden = true;
    renderMagPresets(current.info);
    if (pendingView) {
      applyView(pendingView, true);
      pendingView = null;
    }
    viewRestored = true;
    updateScalebar();
    updateReadout();
    scheduleHashUpdate();
    try { viewer.canvas.focus({ preventScroll: true }); } catch (e) { /* ignore */ }
  }

  function imageAspect() {
    const info = current && current.info;
    return info && info.width ? info.height / info.width : 1;
  }

  function applyView(view, immediately) {
    if (!viewer || !viewer.viewport) return;
    const vp = viewer.viewport;
    const x = Math.min(1.5, Math.max(-0.5, view.x));
    const y = Math.min(1.5, Math.max(-0.5, view.y));
    vp.zoomTo(Math.min(vp.getMaxZoom(), Math.max(vp.getMinZoom(), view.zoom)), null, immediately);
    vp.panTo(new OSD.Point(x, y * imageAspect()), immediately);
  }

  function writeHash() {
    if (!current || !viewer || !viewer.viewport || !viewRestored) return;
    const vp = viewer.viewport;
    const c = vp.getCenter(false);
    const z = vp.getZoom(false);
    const hash = "#slide=" + encodeURIComponent(current.path) +
      "&x=" + c.x.toFixed(5) + "&y=" + (c.y / imageAspect()).toFixed(5) + "&zoom=" + (+z.toPrecision(5));
    if (location.hash !== hash) history.replaceState(history.state, "", hash);
  }
  const scheduleHashUpdate = throttle(writeHash, HASH_THROTTLE_MS);

  window.addEventListener("hashchange", applyLocation);
  window.addEventListener("popstate", applyLocation);
  $("brand-link").addEventListener("click", (ev) => {
    ev.preventDefault();
    if (current) { history.pushState(null, "", location.pathname + location.search); closeSlide(); }
    setPanel("library", true);
  });
  $("viewer-error-retry").addEventListener("click", () => {
    if (!current) return;
    const p = current.path;
    current = null;
    infoCache.delete(p);
    openSlide(p, pendingView);
  });

  // ------------------------------------------------------ toolbar / zoom
  function vp() { return viewer && current && current.opened ? viewer.viewport : null; }

  $("zoom-in").addEventListener("click", () => { const v = vp(); if (v) { v.zoomBy(2); v.applyConstraints(); } });
  $("zoom-out").addEventListener("click", () => { const v = vp(); if (v) { v.zoomBy(0.5); v.applyConstraints(); } });
  $("zoom-home").addEventListener("click", () => { const v = vp(); if (v) v.goHome(); });
  $("zoom-native").addEventListener("click", () => { const v = vp(); if (v) v.zoomTo(v.imageToViewportZoom(1)); });
  $("rotate").addEventListener("click", () => { const v = vp(); if (v) v.setRotation((v.getRotation() + 90) % 360); });

  function objectivePower() {
    const o = current && current.info && parseFloat(current.info.objective_power);
    return Number.isFinite(o) && o > 0 ? o : null;
  }

  function renderMagPresets(info) {
    const box = $("mag-presets");
    box.replaceChildren();
    const obj = parseFloat(info && info.objective_power);
    if (!Number.isFinite(obj) || obj <= 0) {
      box.hidden = true;
      box.previousElementSibling.hidden = true;
      return;
    }
    box.hidden = false;
    box.previousElementSibling.hidden = false;
    const v = viewer && viewer.viewport;
    const maxMag = v ? obj * v.viewportToImageZoom(v.getMaxZoom()) : obj * 2;
    const minMag = v ? obj * v.viewportToImageZoom(v.getMinZoom()) : obj / 64;
    for (const m of [1.25, 2.5, 5, 10, 20, 40, 80]) {
      if (m > maxMag * 1.001) break;
      if (m < minMag * 0.999) continue;
      box.append(el("button", {
        class: "tool mag", type: "button", title: "Zoom to " + m + "× (equivalent objective)",
        onclick: () => { const v = vp(); if (v) v.zoomTo(v.imageToViewportZoom(m / obj)); },
      }, (m < 10 ? m : String(m)) + "×"));
    }
  }

  function updateReadout() {
    const v = vp();
    const out = $("zoom-readout");
    if (!v) { out.textContent = ""; return; }
    const imageZoom = v.viewportToImageZoom(v.getZoom(true));   // screen px per slide px
    const obj = objectivePower();
    if (obj) {
      const mag = obj * imageZoom;
      out.textContent = (mag >= 10 ? mag.toFixed(1) : mag.toFixed(2)) + "×";
      out.title = "Equivalent magnification (scanned at " + obj + "×)";
    } else {
      out.textContent = (imageZoom * 100 >= 10 ? Math.round(imageZoom * 100) : (imageZoom * 100).toFixed(1)) + "%";
      out.title = "Zoom relative to the scanned resolution";
    }
  }

  // ----------------------------------------------------------- scale bar
  const NICE_UM = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];
  function updateScalebar() {
    const bar = $("scalebar");
    const v = vp();
    const mpp = current && current.info && current.info.mpp_x;
    if (!v || !Number.isFinite(mpp) || mpp <= 0) { bar.hidden = true; return; }
    const imageZoom = v.viewportToImageZoom(v.getZoom(true));   // CSS px per slide px
    const umPerCssPx = mpp / imageZoom;
    const maxPx = Math.min(160, Math.max(60, viewer.container.clientWidth * 0.25));
    let chosen = NICE_UM[0];
    for (const u of NICE_UM) {
      if (u / umPerCssPx <= maxPx) chosen = u;
      else break;
    }
    const px = chosen / umPerCssPx;
    bar.hidden = false;
    bar.querySelector(".scalebar-bar").style.width = px.toFixed(1) + "px";
    bar.querySelector(".scalebar-label").textContent = fmtLength(chosen);
  }

  // ----------------------------------------------------------- fullscreen
  const area = $("viewer-area");
  const fsButton = $("fullscreen");
  function isFullscreen() {
    return document.fullscreenElement === area || document.webkitFullscreenElement === area || area.classList.contains("pseudo-fullscreen");
  }
  function toggleFullscreen() {
    if (isFullscreen()) {
      if (area.classList.contains("pseudo-fullscreen")) area.classList.remove("pseudo-fullscreen");
      else if (document.exitFullscreen) document.exitFullscreen().catch(() => {});
      else if (document.webkitExitFullscreen) document.webkitExitFullscreen();
    } else {
      const req = area.requestFullscreen || area.webkitRequestFullscreen;
      if (req) {
        Promise.resolve(req.call(area)).catch(() => area.classList.add("pseudo-fullscreen")).then(syncFs);
      } else {
        area.classList.add("pseudo-fullscreen");
      }
    }
    syncFs();
  }
  function syncFs() {
    const fs = isFullscreen();
    fsButton.setAttribute("aria-pressed", String(fs));
    fsButton.title = fs ? "Exit full screen (Esc)" : "Full screen";
    document.body.classList.toggle("is-fullscreen", fs);
    if (viewer) viewer.forceResize && viewer.forceResize();
  }
  fsButton.addEventListener("click", toggleFullscreen);
  document.addEventListener("fullscreenchange", syncFs);
  document.addEventListener("webkitfullscreenchange", syncFs);

  // -------------------------------------------------------- side panels
  const panels = { library: $("library"), info: $("info-panel") };
  const panelButtons = { library: $("library-toggle"), info: $("info-toggle") };
  const scrim = $("scrim");
  const narrow = window.matchMedia("(max-width: 900px)");

  function setPanel(name, open) {
    document.body.classList.toggle(name + "-closed", !open);
    document.body.classList.toggle(name + "-open", open);
    panelButtons[name].setAttribute("aria-expanded", String(open));
    if (open && narrow.matches) {
      const other = name === "library" ? "info" : "library";
      document.body.classList.remove(other + "-open");
      document.body.classList.add(other + "-closed");
      panelButtons[other].setAttribute("aria-expanded", "false");
    }
    scrim.hidden = !(narrow.matches && (document.body.classList.contains("library-open") || document.body.classList.contains("info-open")));
    // OSD notices container size changes on its own; nudge it for the transition end.
    setTimeout(() => { if (viewer) { viewer.forceResize(); updateScalebar(); } }, 220);
  }
  function panelOpen(name) { return !document.body.classList.contains(name + "-closed"); }
  panelButtons.library.addEventListener("click", () => setPanel("library", !panelOpen("library")));
  panelButtons.info.addEventListener("click", () => setPanel("info", !panelOpen("info")));
  scrim.addEventListener("click", () => { setPanel("library", false); setPanel("info", false); });
  function initPanels() {
    if (narrow.matches) {
      // Small screens: panels are drawers; the home gallery / viewer gets the space.
      setPanel("info", false);
      setPanel("library", false);
    } else {
      setPanel("library", true);
      setPanel("info", true);
    }
  }
  narrow.addEventListener ? narrow.addEventListener("change", initPanels) : narrow.addListener(initPanels);
  initPanels();

  // ----------------------------------------------------------- info panel
  const assocUrls = [];
  function renderInfo(info, path) {
    for (const u of assocUrls.splice(0)) URL.revokeObjectURL(u);
    const content = $("info-content");
    if (!info) {
      content.hidden = !path;
      $("info-empty").hidden = !!path;
      if (path) {
        $("info-name").textContent = basename(path);
        $("info-path").textContent = path;
        $("info-summary").replaceChildren(el("div", { class: "muted" }, "Loading…"));
        $("info-associated").replaceChildren();
        $("info-props-body").replaceChildren();
        $("info-props-count").textContent = "";
      }
      return;
    }
    content.hidden = false;
    $("info-empty").hidden = true;
    $("info-name").textContent = basename(path);
    $("info-path").textContent = path;
    $("info-path").hidden = path === basename(path);

    const rows = [];
    const add = (k, v) => { if (v !== null && v !== undefined && v !== "") rows.push(el("dt", null, k), el("dd", null, v)); };
    add("Vendor", vendorLabel(info.vendor) || "Unknown");
    add("Dimensions", fmtInt(info.width) + " × " + fmtInt(info.height) + " px");
    if (Number.isFinite(info.mpp_x)) {
      const mx = fmtMpp(info.mpp_x), my = fmtMpp(info.mpp_y);
      add("Resolution", my && info.mpp_y !== info.mpp_x ? mx.replace(" µm/px", "") + " × " + my : mx);
      const wmm = (info.width * info.mpp_x) / 1000;
      const hmm = (info.height * (Number.isFinite(info.mpp_y) ? info.mpp_y : info.mpp_x)) / 1000;
      add("Physical size", wmm.toFixed(2) + " × " + hmm.toFixed(2) + " mm");
    } else {
      add("Resolution", "Not calibrated");
    }
    if (info.objective_power) add("Objective", info.objective_power + "×");
    if (Array.isArray(info.level_dimensions) && info.level_dimensions.length) {
      const ld = info.level_dimensions;
      const down = ld[ld.length - 1][0] ? Math.round(ld[0][0] / ld[ld.length - 1][0]) : 1;
      rows.push(el("dt", null, "Pyramid"), el("dd", {
        title: ld.map((d, i) => "level " + i + ": " + fmtInt(d[0]) + " × " + fmtInt(d[1])).join("\n"),
      }, ld.length + (ld.length === 1 ? " level" : " levels") + (ld.length > 1 ? " (1× – " + down + "×)" : "")));
    }
    add("Tiles", (info.tile_size || "?") + " px, overlap " + (info.overlap || 0) + ", " + (info.format || "jpeg").toUpperCase());
    const entry = slides.find((s) => s.path === path);
    if (entry && entry.size) add("File size", fmtBytes(entry.size));
    $("info-summary").replaceChildren(...rows);

    // associated images
    const assoc = $("info-associated");
    const names = (info.associated || []).filter((n) => n !== "thumbnail");
    const order = { label: 0, macro: 1 };
    names.sort((a, b) => (order[a] ?? 9) - (order[b] ?? 9) || a.localeCompare(b));
    if (!names.length) {
      assoc.replaceChildren(el("p", { class: "muted" }, "This slide has no label or macro image."));
    } else {
      assoc.replaceChildren();
      const token = openToken;
      for (const name of names) {
        const fig = el("figure", { class: "assoc loading" },
          el("button", { class: "assoc-img", type: "button", title: "Enlarge " + name }),
          el("figcaption", null, name));
        assoc.append(fig);
        getAssociated(path, name, 256, PRIO_CONTROL).then((url) => {
          if (token !== openToken) { if (url) URL.revokeObjectURL(url); return; }
          fig.classList.remove("loading");
          if (!url) { fig.classList.add("none"); return; }
          assocUrls.push(url);
          const btn = fig.querySelector(".assoc-img");
          btn.append(el("img", { src: url, alt: name + " image" }));
          btn.addEventListener("click", () => openLightbox(path, name, url));
        }).catch((err) => {
          fig.classList.remove("loading");
          fig.classList.add("none");
          fig.querySelector("figcaption").textContent = name + " (unavailable)";
          fig.title = err.message || String(err);
        });
      }
    }

    // property table
    const props = info.properties || {};
    const keys = Object.keys(props).sort();
    $("info-props-count").textContent = String(keys.length);
    const body = $("info-props-body");
    body.replaceChildren(...keys.map((k) => el("tr", { dataset: { search: (k + " " + props[k]).toLowerCase() } },
      el("th", { scope: "row" }, ...breakable(k)), el("td", null, String(props[k])))));
    filterProps();
  }

  // Property names like "openslide.level[0].tile-width": allow line breaks after separators.
  function breakable(text) {
    const out = [];
    for (const part of text.split(/(?<=[.\]_-])/)) {
      if (out.length) out.push(document.createElement("wbr"));
      out.push(part);
    }
    return out;
  }

  function filterProps() {
    const q = $("props-filter").value.trim().toLowerCase();
    for (const row of $("info-props-body").children) row.hidden = !!q && !row.dataset.search.includes(q);
  }
  $("props-filter").addEventListener("input", filterProps);

  // ------------------------------------------------------------- lightbox
  const lightbox = $("lightbox");
  let lightboxUrl = null;
  function openLightbox(path, name, smallUrl) {
    $("lightbox-title").textContent = name;
    const img = $("lightbox-img");
    img.src = smallUrl;
    img.alt = name + " image";
    lightbox.hidden = false;
    $("lightbox-close").focus();
    getAssociated(path, name, 1024, PRIO_CONTROL).then((url) => {
      if (lightbox.hidden || !url) { if (url) URL.revokeObjectURL(url); return; }
      if (lightboxUrl) URL.revokeObjectURL(lightboxUrl);
      lightboxUrl = url;
      img.src = url;
    }).catch(() => {});
  }
  function closeLightbox() {
    lightbox.hidden = true;
    if (lightboxUrl) { URL.revokeObjectURL(lightboxUrl); lightboxUrl = null; }
  }
  $("lightbox-close").addEventListener("click", closeLightbox);
  lightbox.addEventListener("click", (ev) => { if (ev.target === lightbox) closeLightbox(); });

  // ----------------------------------------------------------- live panel
  const statsPanel = $("stats-panel");
  const statsToggle = $("stats-toggle");
  let statsTimer = null, localTimer = null, lastStatsAt = 0, statsInFlight = false;

  function setStatsOpen(open) {
    statsPanel.hidden = !open;
    statsToggle.setAttribute("aria-pressed", String(open));
    clearInterval(statsTimer); clearInterval(localTimer);
    statsTimer = localTimer = null;
    if (open) {
      renderLocalStats();
      pollRouterStats();
      localTimer = setInterval(renderLocalStats, 500);
      statsTimer = setInterval(pollRouterStats, STATS_POLL_MS);
    }
  }
  statsToggle.addEventListener("click", () => setStatsOpen(statsPanel.hidden));
  $("stats-close").addEventListener("click", () => setStatsOpen(false));

  function renderLocalStats() {
    const l = metrics.latencies;
    $("st-p50").textContent = l.length ? fmtMs(percentile(l, 50)) : "–";
    $("st-p95").textContent = l.length ? fmtMs(percentile(l, 95)) : "–";
    $("st-rate").textContent = metrics.tileRate().toFixed(1);
    $("st-inflight").textContent = client.inflight + " / " + client.queuedCount();
    $("st-totals").textContent = fmtInt(tr.tilesReceived) + " / " + fmtInt(tr.tileErrors);
    $("st-reconnects").textContent = String(tr.reconnects);
    if (lastStatsAt) {
      const age = Math.round((Date.now() - lastStatsAt) / 1000);
      $("st-router-age").textContent = age > 5 ? "(stale, " + age + " s)" : "";
    }
  }

  function pollRouterStats() {
    if (statsInFlight) return;
    statsInFlight = true;
    const ctl = "AbortController" in window ? new AbortController() : null;
    const t = setTimeout(() => ctl && ctl.abort(), 4000);
    fetch("/stats", { cache: "no-store", signal: ctl ? ctl.signal : undefined })
      .then((r) => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then((s) => { lastStatsAt = Date.now(); renderRouterStats(s); })
      .catch(() => { $("st-router-age").textContent = "(unavailable)"; })
      .finally(() => { clearTimeout(t); statsInFlight = false; });
  }

  function renderRouterStats(s) {
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

  // ------------------------------------------------------------ keyboard
  document.addEventListener("keydown", (ev) => {
    const target = ev.target;
    const typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable);
    if (ev.key === "Escape") {
      if (!lightbox.hidden) { closeLightbox(); ev.preventDefault(); return; }
      if (area.classList.contains("pseudo-fullscreen")) { toggleFullscreen(); return; }
    }
    if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "/") { ev.preventDefault(); setPanel("library", true); filterEl.focus(); filterEl.select(); }
  });

  // ---------------------------------------------------------------- boot
  window.addEventListener("resize", () => { updateScalebar(); });
  loadList();
  applyLocation();
})();
