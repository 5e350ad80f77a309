/*
 * What the viewer does with each error code: the one place that decides.
 *
 * The server's codes are stable (README "Error codes"); its messages are for people
 * and are only ever shown, never inspected. The client adds a few codes of its own
 * for requests it ends itself (last block of the table).
 */

export class RpcError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

/*
 * resend  the websocket client sends the same request again after a growing delay
 *         (refused for now, not for good).
 * tile    a tile that failed with it: "again" = OpenSeadragon may ask for it as soon as
 *         it wants it, "later" = it is asked for again after a pause, "never".
 * quiet   not a failure: no error counted, nothing shown, nothing logged.
 * text    what to tell the user, given the slide path; null = the server's message.
 */
const TABLE = {
  // The request or the slide is wrong: asking again gives the same answer.
  bad_request:  {},
  unknown_op:   {},
  too_large:    {},
  forbidden:    {},
  unauthorized: {},
  not_found:    { text: (path) => "The slide “" + path + "” does not exist (or is not readable)." },
  out_of_range: {},
  bad_slide:    {},
  quarantined:  {},   // refused for minutes: a few quick retries would not help

  // Refused or lost for now.
  busy:         { resend: true, tile: "later" },
  rate_limited: { resend: true, tile: "later" },
  unavailable:  { resend: true, tile: "later" },
  timeout:      { tile: "later" },   // also the client's own (no reply in time)
  worker_lost:  { tile: "later" },
  internal:     { tile: "later" },

  // The client's own.
  stale:        { quiet: true, tile: "again" },   // a queued tile OpenSeadragon stopped wanting
  cancelled:    { quiet: true },                  // its slide was closed, or OpenSeadragon aborted it
  empty_tile:   {},                               // a tile reply without image bytes
};

const DEFAULTS = { resend: false, tile: "never", quiet: false, text: null };
const BEHAVIOUR = new Map(Object.entries(TABLE).map(([code, b]) => [code, Object.freeze({ ...DEFAULTS, ...b })]));
const UNKNOWN = Object.freeze({ ...DEFAULTS });   // a code this page does not know yet

/** Codes of failures that are not failures (the client ended the request on purpose). */
export const QUIET_CODES = Object.keys(TABLE).filter((code) => BEHAVIOUR.get(code).quiet);

export function behaviour(code) {
  return BEHAVIOUR.get(code) || UNKNOWN;
}

/** The server's (or the client's) own words for an error. */
export function errorMessage(err) {
  return (err && (err.message || err.code)) || String(err);
}

/** What to tell the user about an error concerning the slide at path. */
export function describe(err, path) {
  const b = behaviour(err && err.code);
  return b.text ? b.text(path) : errorMessage(err);
}
