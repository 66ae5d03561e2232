// Sen portal: small progressive enhancements; every page works without this file.
(function () {
  "use strict";
  // upload progress for forms marked data-progress (htmx posts them; the bar follows the bytes of
  // the form's own submission, not of a search a field inside it makes)
  function progressBar(evt) {
    var form = evt.target;
    if (!form.matches || !form.matches("form[data-progress]")) return null;
    return document.getElementById(form.getAttribute("data-progress"));
  }
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var bar = progressBar(evt);
    if (bar) { bar.value = 0; }
  });
  document.addEventListener("htmx:xhr:progress", function (evt) {
    var bar = progressBar(evt);
    if (!bar || !evt.detail.lengthComputable) return;
    bar.hidden = false;
    bar.value = Math.round(evt.detail.loaded / evt.detail.total * 100);
  });
  // a form's files over its data-max-total together (the portal's whole-request limit) are said in its
  // data-too-large box before anything is sent; what was typed stays (one file over the per-file limit
  // goes on: the page names it)
  function tooLargeBox(form) {
    var id = form && form.getAttribute && form.getAttribute("data-too-large");
    return id ? document.getElementById(id) : null;
  }
  document.addEventListener("submit", function (evt) {
    var form = evt.target, box = tooLargeBox(form);
    if (!box) return;
    var total = Number(form.getAttribute("data-max-total")), sum = 0;
    form.querySelectorAll("input[type=file]").forEach(function (input) {
      Array.prototype.forEach.call(input.files || [], function (f) { sum += f.size; });
    });
    box.hidden = !(sum > total);
    if (!box.hidden) {  // before htmx's own listener on the form (this one runs while capturing)
      evt.preventDefault(); evt.stopPropagation();
      var live = document.getElementById("live-error"); if (live) live.hidden = true;
      box.setAttribute("tabindex", "-1"); box.focus();
    }
  }, true);
  // a back-end that fails during an htmx request: say so instead of doing nothing; a 413 (the files were
  // too large for the portal) in the form's own words
  document.addEventListener("htmx:responseError", function (evt) {
    var big = evt.detail.xhr && evt.detail.xhr.status === 413 ? tooLargeBox(evt.detail.elt) : null;
    var box = big || document.getElementById("live-error");
    if (box) { box.hidden = false; }
  });
  document.addEventListener("htmx:sendError", function () {
    var box = document.getElementById("live-error");
    if (box) { box.hidden = false; }
  });
  // the cash form's prefill follows the balance due (the status box swaps it in when a transfer
  // arrives), but an amount the cashier typed, or a field they are in, stays as it is
  document.addEventListener("htmx:oobBeforeSwap", function (evt) {
    var box = evt.detail.target;
    if (!box || box.id !== "cash-fields") return;
    var input = box.querySelector("input[name='cash-amount']");
    var typed = input ? input.value.replace(/\D/g, "") : "";
    if (box.contains(document.activeElement) || typed !== (box.getAttribute("data-due") || "")) {
      evt.detail.shouldSwap = false;
    }
  });
  // the refund form: "Refund by" follows the payment chosen (a transfer is given back by transfer,
  // cash from the drawer); the cashier may still change it after choosing
  document.addEventListener("change", function (evt) {
    var radio = evt.target;
    if (!radio.matches || !radio.matches("form[data-refund-form] input[name='payment'][data-method]")) return;
    var select = radio.form.querySelector("select[name='method']");
    if (select) select.value = radio.getAttribute("data-method");
  });
  // the ICD-10 picker: choosing a suggestion fills the field; in a field of several diagnoses
  // (data-append: the minutes') it replaces the words being typed (data-query) and is added on a
  // line of its own after the codes already there
  document.addEventListener("click", function (evt) {
    var b = evt.target.closest ? evt.target.closest("button[data-pick]") : null;
    if (!b) return;
    evt.preventDefault();
    var input = document.getElementById(b.getAttribute("data-for"));
    if (b.hasAttribute("data-append")) {
      var q = b.getAttribute("data-query") || "", v = input.value.replace(/\s+$/, "");
      if (q && v.slice(-q.length) === q) v = v.slice(0, -q.length);
      v = v.replace(/[\s,;]+$/, "");
      input.value = (v ? v + "\n" : "") + b.getAttribute("data-pick") + "\n";
    } else {
      input.value = b.getAttribute("data-pick");
    }
    var list = b.closest("ul"); if (list) list.innerHTML = "";
    input.focus();
  });
  // focus the first error summary after a failed submission
  document.addEventListener("DOMContentLoaded", function () {
    var e = document.getElementById("form-errors"); if (e) e.focus();
  });
})();
document.addEventListener("click", function (evt) {
  if (evt.target.closest && evt.target.closest("[data-print]")) window.print();
});
