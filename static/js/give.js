// The give form: the browser's time zone goes in a hidden field (a pledge for the fast day is
// charged in the donor's own morning). The suggested amounts are in the fast day's own
// currency: when a donor picks another currency, the amount chips are disabled and "Other
// amount" is chosen, so they type their amount; without JavaScript the server refuses the mix with a message instead.
(function () {
  "use strict";
  // The donor's time zone, so a pledge for the fast day is charged in their own morning.
  var zone = document.querySelector("form.give-form input[name=timezone]");
  if (zone && !zone.value && window.Intl && Intl.DateTimeFormat) {
    try { zone.value = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { /* none */ }
  }
})();
(function () {
  "use strict";
  var form = document.querySelector("form.give-form[data-day-currency]");
  if (!form) { return; }
  var select = form.querySelector("select[name=currency]");
  if (!select) { return; }
  var dayCurrency = form.dataset.dayCurrency;
  var typed = form.querySelector("input[name=other_amount]");
  var placeholder = typed ? typed.getAttribute("placeholder") || "" : "";

  function update() {
    var other = select.value !== dayCurrency;
    // The placeholder is a suggested amount in the day's currency: no hint for the others.
    if (typed) { typed.setAttribute("placeholder", other ? "" : placeholder); }
    form.querySelectorAll("input[name=amount]").forEach(function (radio) {
      if (radio.value === "other") {
        if (other) { radio.checked = true; }
      } else {
        radio.disabled = other;
        if (other) { radio.checked = false; }
      }
    });
  }

  select.addEventListener("change", update);
  update();
})();
