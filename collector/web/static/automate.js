// The Automate form: builds Prefect's automation JSON from the fields, previews it (a backtest
// over the last 24 h) and saves it through the automations API.
"use strict";
(function () {
  var form = document.getElementById("automate-form");
  if (!form) return;
  var $ = function (id) { return document.getElementById(id); };
  var errorBox = $("form-error");
  var result = $("preview-result");

  function list(text) {
    return text.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
  }
  function json(id, what) {
    var text = $(id).value.trim();
    if (!text) return {};
    try { return JSON.parse(text); } catch (e) { throw new Error(what + ": not valid JSON (" + e.message + ")"); }
  }
  function action() {
    var type = $("action-type").value;
    if (type === "call-webhook") {
      var a = { type: type, url: $("webhook-url").value.trim(), method: $("webhook-method").value };
      if ($("webhook-body").value.trim()) a.body = $("webhook-body").value;
      return a;
    }
    if (type === "emit-event") return { type: type, event: $("emit-name").value.trim() };
    if (type === "pause-automation" || type === "resume-automation") {
      var id = $("target-automation").value.trim();
      return id ? { type: type, source: "selected", automation_id: id } : { type: type, source: "inferred" };
    }
    if (type === "run-command") {
      var argv;
      try { argv = JSON.parse($("argv").value); } catch (e) { throw new Error("command: not a JSON list"); }
      return { type: type, argv: argv };
    }
    return { type: "do-nothing" };
  }
  function automation() {
    return {
      name: $("name").value.trim(),
      description: $("description").value,
      enabled: true,
      trigger: {
        type: "event",
        posture: $("posture").value,
        match: json("match", "match"),
        match_related: json("match_related", "match related"),
        after: list($("after").value),
        expect: list($("expect").value),
        for_each: list($("for_each").value),
        threshold: parseInt($("threshold").value || "1", 10),
        within: parseFloat($("within").value || "0")
      },
      actions: [action()]
    };
  }
  function showError(err) {
    errorBox.textContent = err.message || String(err);
    errorBox.hidden = false;
  }
  function refresh() {
    try {
      $("automation-json").textContent = JSON.stringify(automation(), null, 2);
      errorBox.hidden = true;
    } catch (e) {
      $("automation-json").textContent = "";
    }
  }
  function showFields() {
    var type = $("action-type").value;
    form.querySelectorAll("[data-for]").forEach(function (row) {
      row.hidden = row.getAttribute("data-for").split(" ").indexOf(type) < 0;
    });
  }
  form.addEventListener("input", refresh);
  form.addEventListener("change", function () { showFields(); refresh(); });
  showFields();
  refresh();

  $("preview").addEventListener("click", function () {
    var body;
    try { body = automation(); } catch (e) { showError(e); return; }
    errorBox.hidden = true;
    result.textContent = "Replaying the last 24 h…";
    window.Herald.api("POST", "/automate/preview", body).then(function (r) {
      var n = r.firings;
      var text = "Would have fired " + (r.truncated || r.stopped ? "at least " : "") + n +
        " time" + (n === 1 ? "" : "s") + " in the last 24 h (" + r.events + " events replayed)";
      result.textContent = text;
    }, function (e) { result.textContent = ""; showError(e); });
  });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var body;
    try { body = automation(); } catch (err) { showError(err); return; }
    errorBox.hidden = true;
    $("save").disabled = true;
    window.Herald.api("POST", "/api/automations/", body).then(function (created) {
      window.location.assign("/automations/" + created.id);
    }, function (err) { $("save").disabled = false; showError(err); });
  });
})();
