// Subscribing: fill the time zone field with this device's zone, so "07:00 wherever you are"
// means the donor's own morning. Only fresh forms carry data-browser-timezone; without
// JavaScript the field keeps the fast day's zone (or UTC) and can be changed by hand.
(function () {
  "use strict";
  var input = document.querySelector("input[data-browser-timezone]");
  if (!input || !window.Intl || !Intl.DateTimeFormat) { return; }
  var zone = "";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) {
    return;
  }
  if (zone) { input.value = zone; }
})();
