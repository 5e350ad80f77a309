/*
 * OpenSeadragon tile source whose tiles come over the websocket (op "tile"), and the
 * second chance given to tiles that failed for a passing reason.
 *
 * Only OpenSeadragon's public API: TileSource with downloadTileStart/Abort, ImageJob
 * finish/fail/userData, Tile exists/lastTouchTime, TiledImage.update, the
 * tile-load-failed event.
 */
import { QUIET_CODES, behaviour } from "./errors.js";
import { counters, metrics } from "./stats.js";
import { PRIO_TILE } from "./ws_client.js";

const OSD = window.OpenSeadragon;

const TILE_TIMEOUT_MS = 16000;    // per tile, measured from send (router deadline is 15 s)
const JOB_TIMEOUT_MS = 120000;    // per tile, queueing included (a long reconnect)
const STALE_TILE_MS = 2500;       // queued tile not wanted by OSD for this long is dropped
const REVIVE_DELAY_MS = 3000;
const MAX_REVIVES = 2;

/** For the viewer's `timeout` option: a backstop; the tile source ends its jobs first. */
export const VIEWER_JOB_TIMEOUT_MS = JOB_TIMEOUT_MS + 30000;

// tile -> code of its last failure, for the tile-load-failed handler (the event only
// carries the message, which is for people).
const failedWith = new WeakMap();

const jobMessage = (code, message) => "[tilerouter] " + code + (message ? ": " + message : "");

// OpenSeadragon logs every failed job as an error, and has no public way to end a job
// quietly; the jobs we end on purpose (tile no longer wanted, slide closed) are not errors.
const QUIET_MESSAGES = new Set(QUIET_CODES.map((code) => jobMessage(code)));
const consoleError = console.error.bind(console);
console.error = (...args) => {
  if (args.some((a) => typeof a === "string" && QUIET_MESSAGES.has(a))) return;
  consoleError(...args);
};

/** DeepZoom geometry from the slide's info, fed tile by tile over the websocket. */
export function buildTileSource(client, path, info) {
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

    getTileUrl(level, x, y) {
      return prefix + level + "/" + x + "_" + y;   // also OSD's cache key
    },

    hasTransparency() {
      return format === "png";
    },

    downloadTileStart(job) {
      const tile = job.tile;
      // ended: finished, failed, or aborted by OSD; after that the job is not touched.
      const state = (job.userData.tilerouter = { req: null, ended: false, timer: null });
      const end = () => {
        if (state.ended) return false;
        state.ended = true;
        state.req = null;
        clearTimeout(state.timer);
        return true;
      };
      const fail = (code, message) => {
        if (!end()) return;
        failedWith.set(tile, code);
        job.fail(jobMessage(code, message));
      };

      counters.tilesRequested++;
      metrics.noteLevel(tile.level);
      state.timer = setTimeout(() => {
        client.cancel(state.req);
        fail("timeout", "no tile within " + JOB_TIMEOUT_MS / 1000 + " s");
      }, JOB_TIMEOUT_MS);
      state.req = client.request(
        { op: "tile", slide: path, level: tile.level, col: tile.x, row: tile.y, format: format },
        {
          priority: PRIO_TILE,
          timeoutMs: TILE_TIMEOUT_MS,
          isStale() {
            // OSD gave up on the job, or has not wanted this tile for a while.
            if (state.ended) return true;
            return !!tile.lastTouchTime && Date.now() - tile.lastTouchTime > STALE_TILE_MS;
          },
          cb(err, res) {
            if (state.ended) return;
            if (err) {
              const how = behaviour(err.code);
              if (how.quiet) {
                fail(err.code);
                // OSD marks a failed tile missing; this one may be asked for again.
                if (how.tile === "again") tile.exists = true;
                return;
              }
              counters.tileErrors++;
              fail(err.code, err.message);
              return;
            }
            if (!res.blob || res.blob.size === 0) {
              counters.tileErrors++;
              fail("empty_tile", "empty tile");
              return;
            }
            counters.tilesReceived++;
            metrics.recordTile(res.rtt);
            if (end()) job.finish(res.blob, null, "rasterBlob");
          },
        });
    },

    downloadTileAbort(job) {
      // OSD fails the job itself right after this; drop the request if not yet sent,
      // otherwise its reply is ignored.
      const state = job.userData.tilerouter;
      if (!state || state.ended) return;
      const req = state.req;
      state.ended = true;
      state.req = null;
      clearTimeout(state.timer);
      failedWith.set(job.tile, "cancelled");
      client.cancel(req);
    },
  });
}

/**
 * Tiles that failed for a passing reason (errors.js: tile "later") are asked for again
 * a little later instead of staying blank until the view moves.
 */
export function reviveFailedTiles(viewer) {
  const revives = new WeakMap();
  viewer.addHandler("tile-load-failed", (ev) => {
    const tile = ev.tile, tiledImage = ev.tiledImage;
    if (!tile || !tiledImage) return;
    const code = failedWith.get(tile);
    failedWith.delete(tile);
    if (behaviour(code).tile !== "later") return;
    const n = (revives.get(tile) || 0) + 1;
    revives.set(tile, n);
    if (n > MAX_REVIVES) return;
    setTimeout(() => {
      if (viewer.world.getIndexOfItem(tiledImage) < 0) return;   // closed meanwhile
      tile.exists = true;
      tiledImage.update(true);   // re-evaluate its tiles now, even when the view is static
      viewer.forceRedraw();
    }, REVIVE_DELAY_MS * n);
  });
}
