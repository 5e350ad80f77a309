/*
 * Multiplexing websocket client for /ws (README "Websocket protocol").
 *  - at most MAX_INFLIGHT requests on the wire; the rest wait client-side in three
 *    priority classes (control, tiles, background). Tiles are served newest-first (what
 *    the user looks at now), the others first-in-first-out.
 *  - on close: every in-flight request goes back to the queue and is re-sent after
 *    reconnecting (exponential backoff 250 ms → 5 s).
 *  - on a gateway's reconnect notice (README "Websocket protocol"): a new connection at
 *    once, new requests on it; the old one is read until its replies are in, then
 *    closed, and what it left unanswered goes back to the queue for the new one.
 */
import { RpcError, behaviour } from "./errors.js";

export const PRIO_CONTROL = 0, PRIO_TILE = 1, PRIO_BACKGROUND = 2;
const RPC_TIMEOUT_MS = 30000;          // info / list / associated

const MAX_INFLIGHT = 48;               // server allows 64 per connection
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 5000;
const RESEND_ATTEMPTS = 5;             // for codes the server refuses only for now

const now = () => performance.now();

export class WsClient {
  constructor(url) {
    this.url = url;
    this.ws = null;
    this.old = null;                     // handing off: the previous socket, still read
    this.state = "reconnecting";
    this.reconnects = 0;
    this.handoffs = 0;
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
    ws.onmessage = (ev) => { if (ws === this.ws || ws === this.old) this.handleMessage(ev.data, ws); };
    ws.onclose = () => {
      if (ws === this.ws) this.handleClose();
      else if (ws === this.old) this.oldClosed();
    };
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
    if (this.everOpened) this.reconnects++;
    this.everOpened = true;
    // Only reset the backoff once the connection proved stable.
    clearTimeout(this.stableTimer);
    this.stableTimer = setTimeout(() => { this.backoff = BACKOFF_MIN_MS; }, 1000);
    const was = this.state;
    this.setState("open");
    // a hand-off keeps the state "open": the listeners still hear of the new connection
    if (was === "open") for (const fn of this.stateListeners) fn("open");
    this.pump();
  }

  handleClose() {
    clearTimeout(this.stableTimer);
    const ws = this.ws;
    this.ws = null;
    this.requeue(ws);
    this.setState("reconnecting");
    this.scheduleReconnect();
  }

  /** What was on the wire on ws goes back to the queue, in original order. */
  requeue(ws) {
    for (const req of this.pending.values()) {
      if (!req.sent || req.ws !== ws) continue;
      clearTimeout(req.timer);
      req.timer = null;
      req.sent = false;
      req.ws = null;
      this.inflight = Math.max(0, this.inflight - 1);
      if (!req.cb) { this.pending.delete(req.id); continue; }   // abandoned: forget it
      this.queues[req.priority].push(req);
    }
    for (const q of this.queues) q.sort((a, b) => a.seq - b.seq);
  }

  /** The gateway is stopping: move to a new connection (a sibling) without waiting. */
  handOff() {
    const old = this.ws;
    this.ws = null;                      // first: nothing more is sent on the noticed socket
    if (this.old) this.oldClosed();      // a second notice before the first hand-off ended
    this.old = old;
    this.handoffs++;
    clearTimeout(this.stableTimer);
    clearTimeout(this.reconnectTimer);
    this.backoff = BACKOFF_MIN_MS;
    this.connect();
    this.closeOldIfDone();
  }

  /** The old connection of a hand-off closed: its unanswered requests go on the new one. */
  oldClosed() {
    const old = this.old;
    this.old = null;
    try { old.close(1000); } catch (e) { /* already closed */ }
    this.requeue(old);
    this.pump();
  }

  closeOldIfDone() {
    if (!this.old) return;
    for (const req of this.pending.values()) if (req.sent && req.ws === this.old) return;
    this.oldClosed();
  }

  /**
   * Queue a request. opts: {priority, timeoutMs, cb(err, result), isStale()}
   * Returns a handle usable with cancel() and promote().
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
      ws: null,                          // the socket it is on the wire on
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
        req.ws = this.ws;
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

  /** A text frame is a JSON reply; a binary one is length-prefixed JSON header + image bytes. */
  handleMessage(data, ws) {
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
    if (header && header.id === null && header.notice === "reconnect" && ws === this.ws) {
      this.handOff();
      return;
    }
    if (!header || header.id === undefined || header.id === null) return;
    const req = this.pending.get(header.id) || this.pending.get(Number(header.id));
    if (!req || !req.sent) return;           // late reply for a timed-out request
    if (ws === this.old) queueMicrotask(() => this.closeOldIfDone());
    if (header.ok === false) {
      const e = header.error || {};
      const code = e.code || "error";
      if (behaviour(code).resend && req.attempts < RESEND_ATTEMPTS && req.cb) {
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
