// Pause, resume and delete buttons of the automations pages: PATCH / DELETE through the API.
"use strict";
(function () {
  var errorBox = document.getElementById("action-error");
  document.addEventListener("click", function (e) {
    var button = e.target.closest("[data-automation-action]");
    if (!button || button.disabled) return;
    var what = button.getAttribute("data-automation-action");
    var id = button.getAttribute("data-id");
    var url = "/api/automations/" + encodeURIComponent(id);
    if (what === "delete" && !window.confirm("Delete the automation “" + button.getAttribute("data-name") + "”? Its history stays.")) return;
    button.disabled = true;
    var request = what === "delete"
      ? window.Herald.api("DELETE", url)
      : window.Herald.api("PATCH", url, { enabled: what === "resume" });
    request.then(function () {
      if (what === "delete" && /^\/automations\/./.test(window.location.pathname)) {
        window.location.assign("/automations");
      } else {
        window.location.reload();
      }
    }, function (err) {
      button.disabled = false;
      errorBox.textContent = err.message;
      errorBox.hidden = false;
    });
  });
})();
