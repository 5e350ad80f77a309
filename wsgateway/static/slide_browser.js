/*
 * The slide library: the list grouped by folder (side panel), the larger gallery shown
 * while no slide is open, and the filter box. Card details (thumbnail, size, scanner)
 * load as cards scroll into view, at background priority.
 */
import { $, el, icon, plainClick } from "./dom.js";
import { errorMessage } from "./errors.js";
import { basename, dirname, fmtBytes, fmtInt, fmtMpp, vendorLabel } from "./format.js";
import { PRIO_BACKGROUND } from "./ws_client.js";

const GALLERY_MAX = 200;

/** onOpen(path): a card was chosen; onListed(): the list (re)loaded. */
export function createSlideBrowser({ client, data, onOpen, onListed }) {
  const listEl = $("slide-list");
  const filterEl = $("slide-filter");
  const galleryEl = $("gallery");
  let slides = [];                 // from list
  let activePath = null;
  let listFailed = false;

  const lazy = (root, margin, load) => ("IntersectionObserver" in window
    ? new IntersectionObserver((entries, observer) => {
      for (const e of entries) {
        if (!e.isIntersecting) continue;
        observer.unobserve(e.target);
        load(e.target);
      }
    }, { root, rootMargin: margin })
    : null);
  const cardObserver = lazy(listEl, "200px 0px", loadCardDetails);
  const galleryObserver = lazy($("empty-state"), "300px 0px", loadGalleryCard);

  function load() {
    listFailed = false;
    listEl.setAttribute("aria-busy", "true");
    return data.list()
      .then((res) => {
        slides = (res.slides || []).slice().sort((a, b) => a.path.localeCompare(b.path, undefined, { numeric: true }));
        renderList();
        if (onListed) onListed();
      })
      .catch((err) => {
        listFailed = true;
        listEl.replaceChildren(el("div", { class: "list-placeholder error" },
          "Could not load the slide list (" + errorMessage(err) + ").",
          el("br"),
          el("button", { class: "btn small", type: "button", onclick: () => load() }, "Retry")));
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
      // a store may name the folder (a PACS study: patient · accession); the path stays the key
      const label = items[0].group || k || "Slide root";
      const head = el("button", { class: "group-head", type: "button", "aria-expanded": "true" },
        icon("i-folder", "folder"),
        el("span", { class: "group-name", title: k || "Slide root" }, label),
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
    markActive(activePath);
  }

  function openOnClick(card, path) {
    card.addEventListener("click", (ev) => {
      if (!plainClick(ev)) return;   // let "open in new tab" work
      ev.preventDefault();
      onOpen(path);
    });
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
    openOnClick(card, s.path);
    if (cardObserver) cardObserver.observe(card);
    else loadCardDetails(card);
    return card;
  }

  function loadCardDetails(card) {
    const path = card.dataset.path;
    const thumbEl = card.querySelector(".thumb");
    data.thumbnail(path).then((url) => {
      thumbEl.classList.remove("loading");
      if (url) {
        const img = el("img", { src: url, alt: "", loading: "lazy", decoding: "async" });
        thumbEl.replaceChildren(img);
      } else {
        thumbEl.classList.add("none");
        thumbEl.replaceChildren(icon("i-slide"));
      }
    });
    data.info(path, PRIO_BACKGROUND).then((info) => {
      const dims = card.querySelector(".dims");
      const s = entry(path);
      dims.textContent = fmtInt(info.width) + " × " + fmtInt(info.height) + " px" +
        (s && s.size ? " · " + fmtBytes(s.size) : "");
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
      openOnClick(card, s.path);
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
    data.thumbnail(path).then((url) => {
      thumbEl.classList.remove("loading");
      thumbEl.replaceChildren(url ? el("img", { src: url, alt: "", decoding: "async" }) : icon("i-slide"));
    });
    data.info(path, PRIO_BACKGROUND).then((info) => {
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
    const none = listEl.querySelector(".no-match");
    if (q && shown === 0 && slides.length) {
      if (!none) listEl.append(el("div", { class: "list-placeholder no-match" }, "No slides match “" + q + "”."));
      else none.textContent = "No slides match “" + q + "”.";
    } else if (none) {
      none.remove();
    }
    $("slide-count").textContent = slides.length ? (q ? shown + " / " + slides.length : String(slides.length)) : "";
  }

  /** Highlight the card of the open slide (null: none). */
  function markActive(path) {
    activePath = path;
    for (const c of listEl.querySelectorAll(".slide-card")) {
      const active = path !== null && c.dataset.path === path;
      c.classList.toggle("active", active);
      if (active) c.setAttribute("aria-current", "true");
      else c.removeAttribute("aria-current");
    }
  }

  /** The list's entry for a slide ({path, name, size}), if listed. */
  function entry(path) {
    return slides.find((s) => s.path === path);
  }

  function focusFilter() {
    filterEl.focus();
    filterEl.select();
  }

  let filterTimer = null;
  filterEl.addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(applyFilter, 60);
  });
  filterEl.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      const first = listEl.querySelector(".slide-card:not([hidden])");
      if (first) onOpen(first.dataset.path);
    } else if (ev.key === "Escape") {
      filterEl.value = "";
      applyFilter();
    }
  });
  $("refresh-list").addEventListener("click", () => {
    data.clear();
    load();
  });
  client.onState((s) => { if (s === "open" && listFailed) load(); });

  return { load, markActive, entry, focusFilter };
}
