/* Small DOM helpers shared by the viewer modules. */

export const $ = (id) => document.getElementById(id);

/** Build an element: attrs (class, text, dataset, on<event>, others as attributes) and children. */
export function el(tag, attrs, ...children) {
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

/** An icon from the inline SVG sprite in index.html. */
export function icon(name, cls) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "icon" + (cls ? " " + cls : ""));
  svg.setAttribute("aria-hidden", "true");
  const use = document.createElementNS(ns, "use");
  use.setAttribute("href", "#" + name);
  svg.append(use);
  return svg;
}

/** Call fn at most once per ms, and once more after the last call. */
export function throttle(fn, ms) {
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

/** A plain left click (modified clicks keep the link's "open in new tab" behaviour). */
export function plainClick(ev) {
  return !(ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.button !== 0);
}
