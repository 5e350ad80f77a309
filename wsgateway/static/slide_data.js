/* Slide info and images over the websocket, cached per slide path. */
import { PRIO_BACKGROUND, PRIO_CONTROL } from "./ws_client.js";

const MAX_LIST_PAGES = 20;

export class SlideData {
  constructor(client) {
    this.client = client;
    this.infoCache = new Map();     // path -> Promise<info>
    this.thumbCache = new Map();    // path -> Promise<blobURL|null>
  }

  /* Every page of the listing (the server pages large stores; ``next`` is the
     offset of the following page), up to MAX_LIST_PAGES pages. */
  async list() {
    const slides = [];
    let offset = 0;
    for (let page = 0; page < MAX_LIST_PAGES; page++) {
      const res = await this.client.call(offset ? { op: "list", offset } : { op: "list" });
      slides.push(...(res.slides || []));
      if (typeof res.next !== "number" || res.next <= offset) break;
      offset = res.next;
    }
    return { slides };
  }

  info(path, priority = PRIO_CONTROL) {
    let p = this.infoCache.get(path);
    if (!p) {
      p = this.client.call({ op: "info", slide: path }, priority);
      p.catch(() => { if (this.infoCache.get(path) === p) this.infoCache.delete(path); });   // allow a retry later
      this.infoCache.set(path, p);
    } else {
      this.client.promote(p.req, priority);   // e.g. the slide being opened while its card info waits
    }
    return p;
  }

  forgetInfo(path) {
    this.infoCache.delete(path);
  }

  /** A blob: URL of the associated image fitted in size x size (the caller revokes it). */
  associated(path, name, size, priority) {
    return this.client
      .call({ op: "associated", slide: path, name, size }, priority)
      .then((res) => (res.blob ? URL.createObjectURL(res.blob) : null));
  }

  thumbnail(path) {
    let p = this.thumbCache.get(path);
    if (!p) {
      p = this.associated(path, "thumbnail", 256, PRIO_BACKGROUND).catch(() => null);
      this.thumbCache.set(path, p);
    }
    return p;
  }

  clear() {
    this.infoCache.clear();
    for (const p of this.thumbCache.values()) p.then((u) => u && URL.revokeObjectURL(u));
    this.thumbCache.clear();
  }
}
