// Herald's shared page script (every page loads it): relative times kept fresh, copy buttons,
// keyboard shortcuts. Page-specific behaviour lives in its own file (feed.js, automate.js, …).
"use strict";
(function () {
  function relative(iso) {
    var seconds = (Date.now() - Date.parse(iso)) / 1000;
    var ahead = seconds < 0;
    seconds = Math.abs(seconds);
    var text;
    if (seconds >= 86400) text = Math.floor(seconds / 86400) + " d";
    else if (seconds >= 3600) text = Math.floor(seconds / 3600) + " h";
    else if (seconds >= 60) text = Math.floor(seconds / 60) + " min";
    else text = Math.floor(seconds) + " s";
    return ahead ? "in " + text : text + " ago";
  }
  function refreshTimes(root) {
    (root || document).querySelectorAll("time.rel[datetime]").forEach(function (el) {
      el.textContent = relative(el.getAttribute("datetime"));
    });
  }
  window.Herald = window.Herald || {};
  window.Herald.refreshTimes = refreshTimes;
  // Requests that change state carry this header: the server refuses a cookie-authenticated
  // change without it (a cross-site form cannot set headers).
  window.Herald.api = function (method, url, body) {
    var init = { method: method, headers: { "X-Herald-Request": "1" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text }; }
        if (!response.ok) {
          var detail = data && data.detail ? data.detail : response.status + " " + response.statusText;
          if (typeof detail !== "string") detail = JSON.stringify(detail);
          throw new Error(detail);
        }
        return data;
      });
    });
  };
  // A truncated value shows in full when clicked (its title has it on hover too).
  document.addEventListener("click", function (e) {
    var cut = e.target.closest(".trunc");
    if (cut && !e.target.closest("a, button")) cut.classList.toggle("open");
  });
  document.addEventListener("click", function (e) {
    var button = e.target.closest("[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.textContent;
    var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
    } else {
      selectText(source);
    }
  });
  function selectText(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
  // "/" focuses the page's search box (as on most feeds); Escape leaves a field.
  document.addEventListener("keydown", function (e) {
    var tag = (e.target.tagName || "").toLowerCase();
    var typing = tag === "input" || tag === "textarea" || tag === "select";
    if (e.key === "/" && !typing) {
      var search = document.querySelector("[data-search]");
      if (search) { e.preventDefault(); search.focus(); }
    } else if (e.key === "Escape" && typing) {
      e.target.blur();
    }
  });
  document.addEventListener("DOMContentLoaded", function () { refreshTimes(); });
  setInterval(refreshTimes, 30000);
})();
