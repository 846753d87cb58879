/*
 * The device page, live (API.md §13): images the server stores for this
 * device appear in the grid as they arrive, without a reload.
 *
 * The page names what this script needs as data- attributes on #images (no
 * inline script: the page's Content-Security-Policy allows only this file,
 * and connections to our own origin), and sets them only on the newest page:
 *   data-events-url         the device's text/event-stream, id percent-encoded
 *                           (absolute when served by serve's stream listener)
 *   data-image-url-prefix   an image page's URL without the id
 *   data-tile-size          the thumbnails' ?size=
 *   data-start, data-end    the date filter's bounds (RFC 3339, end exclusive);
 *                           empty when unbounded
 *   data-has-older          older pages exist: an image older than the last
 *                           tile belongs on one of them, not here
 *
 * Each `image` event carries the image's metadata (GET /collections/images/{id}).
 * Tiles are built with DOM APIs and textContent, as the template renders them:
 * nothing that comes from an event is ever parsed as HTML.
 */
(function () {
  "use strict";

  const root = document.getElementById("images");
  if (!root || !root.dataset.eventsUrl || !window.EventSource) {
    return;
  }
  const options = root.dataset;
  const size = Number(options.tileSize);
  const start = options.start ? Date.parse(options.start) : -Infinity;
  const end = options.end ? Date.parse(options.end) : Infinity;
  const count = document.getElementById("image-count");

  // Ids already shown or counted: a reconnect may replay what we have seen.
  const seen = new Set();
  root.querySelectorAll("li[data-id]").forEach(function (item) {
    seen.add(item.dataset.id);
  });

  // Python's round(), which sized the server's tiles: halves go to the even side.
  function roundHalfEven(x) {
    const r = Math.round(x);
    return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  // The template's _time.html: <time datetime="…+00:00">YYYY-MM-DD HH:MM:SS UTC</time>.
  function timeElement(timestamp, label) {
    const time = document.createElement("time");
    setTime(time, timestamp, label);
    return time;
  }

  function setTime(time, timestamp, label) {
    time.dateTime = timestamp.replace(/Z$/, "+00:00");
    time.textContent = label + " UTC";
  }

  // The template's tile: li > a.tile > (span.frame > img) + time.
  function tile(image, label) {
    const scale = Math.min(1, size / Math.max(image.width, image.height));
    const img = document.createElement("img");
    img.src = image.href + "/thumbnail?size=" + size;
    img.width = Math.max(1, roundHalfEven(image.width * scale));
    img.height = Math.max(1, roundHalfEven(image.height * scale));
    img.alt = "Image taken " + label + " UTC";
    img.loading = "lazy";
    img.decoding = "async";

    const frame = document.createElement("span");
    frame.className = "frame";
    frame.append(img);

    const link = document.createElement("a");
    link.className = "tile";
    link.href = options.imageUrlPrefix + encodeURIComponent(image.id);
    link.append(frame, timeElement(image.timestamp, label));

    const item = document.createElement("li");
    item.dataset.id = image.id;
    item.append(link);
    return item;
  }

  function instant(time) {
    return Date.parse(time.dateTime);
  }

  // Newest first: before the first tile older than this image. One older than
  // every tile goes last, unless older pages exist (then it is on one of them).
  function place(item, at) {
    let grid = root.querySelector("ul.grid");
    if (!grid) {
      // The page said "No images in these dates": the grid replaces that.
      grid = document.createElement("ul");
      grid.className = "grid images";
      root.replaceChildren(grid);
    }
    for (const shown of grid.children) {
      if (instant(shown.querySelector("time")) < at) {
        grid.insertBefore(item, shown);
        return;
      }
    }
    if (!("hasOlder" in options)) {
      grid.append(item);
    }
  }

  // The lead paragraph: the device's image count, first and last timestamps.
  function summarise(image, at, label) {
    if (count) {
      const n = Number(count.dataset.count) + 1;
      count.dataset.count = String(n);
      count.textContent = n + (n === 1 ? " image" : " images");
    }
    const first = document.querySelector("#image-first time");
    if (first && at < instant(first)) {
      setTime(first, image.timestamp, label);
    }
    const last = document.querySelector("#image-last time");
    if (last && at > instant(last)) {
      setTime(last, image.timestamp, label);
    }
  }

  function arrived(event) {
    let image;
    try {
      image = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    if (typeof image.id !== "string" || seen.has(image.id)) {
      return;
    }
    // format_timestamp's form: YYYY-MM-DDTHH:MM:SS[.ffffff]Z.
    const parts = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})/.exec(image.timestamp);
    const at = Date.parse(image.timestamp);
    if (!parts || isNaN(at)) {
      return;
    }
    const label = parts[1] + " " + parts[2];
    seen.add(image.id);
    summarise(image, at, label);
    if (at >= start && at < end) {
      place(tile(image, label), at);
    }
  }

  // Our own origin, or (under `serve`, reached directly) its stream listener
  // on another port of the same host: credentials go along either way, for
  // the staff session cookie (token mode), which belongs to the host. The
  // browser reconnects by itself, sending Last-Event-ID: the server then
  // replays what was stored meanwhile.
  const source = new EventSource(options.eventsUrl, { withCredentials: true });
  source.addEventListener("image", arrived);
})();
