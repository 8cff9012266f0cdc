// The feed page: drag on the histogram to zoom, live mode over Server-Sent Events, j/k keys.
"use strict";
(function () {
  var MAX_ROWS = 300; // rows kept in the list while live
  var rows = document.getElementById("rows");

  // -- time range: a preset clears the custom fields, a custom time selects "Custom…"
  var range = document.getElementById("range");
  var since = document.getElementById("since");
  var until = document.getElementById("until");
  if (range) {
    range.addEventListener("change", function () {
      if (range.value) { since.value = ""; until.value = ""; }
    });
    [since, until].forEach(function (input) {
      input.addEventListener("change", function () { if (input.value) range.value = ""; });
    });
  }

  // -- histogram: fetched once the list shows (its own request), then drag to zoom
  var slot = document.getElementById("histogram-slot");
  if (slot) {
    fetch(slot.getAttribute("data-src"), { credentials: "same-origin" }).then(function (response) {
      return response.text().then(function (html) {
        // The server's own fragment (escaped like every page); an auth error is JSON instead.
        if (response.ok || response.status === 400) slot.innerHTML = html;
        else slot.textContent = "The histogram could not be loaded (" + response.status + ").";
        var svg = document.getElementById("histogram");
        if (svg) wireHistogram(svg);
      });
    }, function () { slot.textContent = "The histogram could not be loaded."; });
  }
  // -- histogram: drag across it to zoom to the selected span
  function wireHistogram(svg) {
    var t0 = Date.parse(svg.getAttribute("data-since"));
    var t1 = Date.parse(svg.getAttribute("data-until"));
    var selection = document.getElementById("hist-selection");
    var width = svg.viewBox.baseVal.width;
    var dragStart = null;
    var fraction = function (e) {
      var box = svg.getBoundingClientRect();
      return Math.min(1, Math.max(0, (e.clientX - box.left) / box.width));
    };
    svg.addEventListener("pointerdown", function (e) {
      if (e.button !== 0) return;
      dragStart = fraction(e);
      selection.setAttribute("x", dragStart * width);
      selection.setAttribute("width", 0);
    });
    svg.addEventListener("pointermove", function (e) {
      if (dragStart === null) return;
      var f = fraction(e);
      selection.setAttribute("x", Math.min(dragStart, f) * width);
      selection.setAttribute("width", Math.abs(f - dragStart) * width);
    });
    var finish = function (e) {
      if (dragStart === null) return;
      var f = fraction(e);
      var a = Math.min(dragStart, f), b = Math.max(dragStart, f);
      dragStart = null;
      if (b - a < 0.01) { selection.setAttribute("width", 0); return; } // a click: the bar's link
      e.preventDefault();
      var from = new Date(t0 + a * (t1 - t0)).toISOString();
      var to = new Date(t0 + b * (t1 - t0)).toISOString();
      var url = svg.getAttribute("data-zoom")
        .replace("SINCE", encodeURIComponent(from)).replace("UNTIL", encodeURIComponent(to));
      window.location.assign(url);
    };
    svg.addEventListener("pointerup", finish);
    svg.addEventListener("pointerleave", function () { dragStart = null; });
    // A drag must not also follow the link under the pointer.
    svg.addEventListener("click", function (e) {
      if (selection.getAttribute("width") > 0) e.preventDefault();
    });
  }

  // -- live mode
  var button = document.getElementById("live");
  var status = document.getElementById("live-status");
  var more = document.getElementById("new-events");
  var source = null;
  var pending = [];   // new rows (elements, newest first) not yet in the list
  var held = 0;       // how many new rows arrived while the list was held (scrolled down)
  var dropped = 0;    // events the server counted but did not send (too many at once)
  var frame = 0;

  function newestTime() {
    var first = rows.querySelector("tr time[datetime]");
    return first ? first.getAttribute("datetime") : "";
  }
  function scrolled() { return window.scrollY > 80; }

  // Ids listed or pending: a row the page or an earlier message already has is not added twice
  // (nor counted as new).
  var listed = new Set();
  Array.prototype.forEach.call(rows.children, function (tr) { listed.add(tr.getAttribute("data-id")); });

  function receive(html) {
    var holder = document.createElement("tbody");
    holder.innerHTML = html;
    var fresh = [];
    Array.prototype.slice.call(holder.children).forEach(function (tr) {
      var id = tr.getAttribute("data-id");
      if (listed.has(id)) return;
      listed.add(id);
      fresh.push(tr);
    });
    pending = fresh.concat(pending); // a message is newer than the ones before it
    held += fresh.length;
    // Held back at a high rate: keep the newest rows only (the count says how many came).
    pending.splice(MAX_ROWS).forEach(function (tr) { listed.delete(tr.getAttribute("data-id")); });
  }
  function insert() {
    if (!pending.length) return;
    var fragment = document.createDocumentFragment();
    pending.forEach(function (tr) { tr.classList.add("fresh"); fragment.appendChild(tr); });
    rows.insertBefore(fragment, rows.firstChild);
    while (rows.children.length > MAX_ROWS) {
      var last = rows.lastElementChild;
      listed.delete(last.getAttribute("data-id"));
      rows.removeChild(last);
    }
    var empty = document.getElementById("empty");
    if (empty) empty.remove();
    pending.forEach(function (tr) { window.Herald.refreshTimes(tr); });
    pending = [];
    held = 0;
    more.hidden = true;
  }
  function flush() {
    frame = 0;
    if (!pending.length) return;
    if (scrolled()) {
      more.hidden = false;
      more.textContent = held + " new event" + (held === 1 ? "" : "s");
      return;
    }
    insert();
  }
  function schedule() { if (!frame) frame = window.requestAnimationFrame(flush); }

  function start() {
    var url = button.getAttribute("data-src");
    var after = newestTime();
    if (after) url += (url.indexOf("?") < 0 ? "?" : "&") + "after=" + encodeURIComponent(after);
    source = new EventSource(url);
    source.addEventListener("rows", function (e) {
      var msg = JSON.parse(e.data);
      if (msg.html) receive(msg.html);
      dropped += msg.skipped + msg.lagged;
      status.textContent = dropped ? "Live — " + dropped + " events came too fast to list (the count and a reload show all)" : "Live";
      schedule();
    });
    source.addEventListener("open", function () { status.textContent = "Live"; });
    source.addEventListener("error", function () {
      status.textContent = source.readyState === EventSource.CLOSED ? "Live stopped" : "Reconnecting…";
    });
    button.setAttribute("aria-pressed", "true");
    button.textContent = "Live: on";
    history.replaceState(null, "", button.getAttribute("data-live-on"));
  }
  function stop() {
    if (source) source.close();
    source = null;
    button.setAttribute("aria-pressed", "false");
    button.textContent = "Live: off";
    status.textContent = "";
    history.replaceState(null, "", button.getAttribute("data-live-off"));
  }
  if (button) {
    button.addEventListener("click", function () { if (source) stop(); else start(); });
    if (button.getAttribute("aria-pressed") === "true") start();
    window.addEventListener("scroll", function () { if (!scrolled() && pending.length) schedule(); }, { passive: true });
    more.addEventListener("click", function () {
      window.scrollTo(0, 0);
      insert();
      var first = rows.querySelector("a.event-name");
      if (first) first.focus({ preventScroll: true });
    });
    window.addEventListener("pagehide", function () { if (source) source.close(); });
  }

  // -- keyboard: j / k move between events, Enter opens the focused one
  document.addEventListener("keydown", function (e) {
    var tag = (e.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key !== "j" && e.key !== "k") return;
    var links = Array.prototype.slice.call(rows.querySelectorAll("a.event-name"));
    if (!links.length) return;
    var at = links.indexOf(document.activeElement);
    var next = e.key === "j" ? Math.min(links.length - 1, at + 1) : Math.max(0, at - 1);
    links[next].focus();
    e.preventDefault();
  });
})();
