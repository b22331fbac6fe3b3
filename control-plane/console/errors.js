// Loaded first on every page: keeps every console.error and uncaught error
// in window.__consoleErrors, so the browser tests can assert there were none.
(function () {
  "use strict";
  var seen = [];
  window.__consoleErrors = seen;
  var original = console.error.bind(console);
  console.error = function () {
    seen.push(Array.prototype.map.call(arguments, String).join(" "));
    original.apply(null, arguments);
  };
  window.addEventListener("error", function (e) {
    seen.push("error: " + (e.message || String(e.error)));
  });
  window.addEventListener("unhandledrejection", function (e) {
    seen.push("unhandled rejection: " + String(e.reason && e.reason.message || e.reason));
  });
})();
