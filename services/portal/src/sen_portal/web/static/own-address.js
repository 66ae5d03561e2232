// A page a form's POST rendered (its errors, a refusal, a saved notice) takes the address of the page
// it shows (the script's data-address), so the browser's history holds a GET there: Back from the page
// the next, successful submission leads to comes here without "Confirm Form Resubmission"
// (ERR_CACHE_MISS), and a reload shows the page as it is now instead of sending the form again.
(function () {
  var me = document.currentScript;
  var address = me && me.getAttribute("data-address");
  if (address && window.history && history.replaceState) history.replaceState(null, "", address + location.hash);
})();
