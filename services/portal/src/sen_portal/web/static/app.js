// Sen portal: small progressive enhancements; every page works without this file.
(function () {
  "use strict";
  // the file boxes' own button in the page's words (_form.html's field()): drawn only once this file runs
  document.documentElement.classList.add("js");
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
  // a request that ends without success (an error answer, the signed-out page in the problem box, aborted,
  // no connection) hides the bar and puts it back to 0: a full bar under the files says they went through
  document.addEventListener("htmx:afterRequest", function (evt) {
    var bar = progressBar(evt), d = evt.detail, xhr = d.xhr;
    if (!bar || (d.successful && xhr && xhr.status >= 200 && xhr.status < 400)) return;
    bar.hidden = true; bar.value = 0;
  });
  // a form's files are checked before anything is sent, what was typed staying: each file against the
  // form's data-max-file (the server's per-file limit) and its file box's accept types, said by name in
  // the form's data-files-refused box in the server's own words (its data-too-large-file and
  // data-wrong-type, "{name}" the file's); all of them against its data-max-total (the portal's
  // whole-request limit), said in its data-too-large box. The server checks them all again.
  function tooLargeBox(form) {
    var id = form && form.getAttribute && form.getAttribute("data-too-large");
    return id ? document.getElementById(id) : null;
  }
  function refusedFiles(form, input) {
    var box = document.getElementById(form.getAttribute("data-files-refused") || ""), said = [];
    if (!box) return null;
    var each = Number(form.getAttribute("data-max-file")), types = (input.getAttribute("accept") || "")
      .split(",").map(function (t) { return t.trim(); }).filter(Boolean);
    Array.prototype.forEach.call(input.files || [], function (f) {
      var key = types.length && types.indexOf(f.type) < 0 ? "data-wrong-type"
        : each && f.size > each ? "data-too-large-file" : null;
      if (key) said.push(box.getAttribute(key).split("{name}").join(f.name));
    });
    box.textContent = said.join(" ");
    box.hidden = !said.length;
    var described = (input.getAttribute("aria-describedby") || "").split(" ").filter(function (id) {
      return id && id !== box.id;
    });
    if (said.length) described.push(box.id);
    if (described.length) input.setAttribute("aria-describedby", described.join(" "));
    else input.removeAttribute("aria-describedby");
    if (said.length) input.setAttribute("aria-invalid", "true");
    else if (!input.closest(".field.invalid")) input.removeAttribute("aria-invalid");
    return said.length ? box : null;
  }
  function fileInputs(form) {
    return Array.prototype.slice.call(form.querySelectorAll("input[type=file]"));
  }
  // a photo (JPEG, PNG, WebP) over the form's data-max-file, or larger than a screen shows (its longest side over
  // 1600 px), is made smaller here once chosen (canvas, JPEG) and put in the file box in its place: a phone's 2-4 MB
  // photo was refused, and one at the limit took ~30 s on a clinic's 400 kbit/s link. At most three passes
  // (PASSES), each tried only while the one before is still over the limit: 1600 px at 0.85; then the same size at
  // 0.7 (a doctor reads detail: quality goes before size); then 1280 px at 0.6. A noisy photo (a dim room, an old
  // phone's camera) stayed over the limit after the first. Said beside the field (the refused box's "-shrunk" note,
  // its data-shrunk: "{name}", "{from}", "{to}"). A PDF, a file the browser cannot decode and a photo still over the
  // limit after the last pass stay as chosen and are refused as before; the server checks every file again
  // (without JavaScript it refuses the photo).
  var PHOTOS = ["image/jpeg", "image/png", "image/webp"], SIDE = 1600, PASSES = [[SIDE, 0.85], [SIDE, 0.7], [1280, 0.6]];
  var picks = new WeakMap(), shrinking = new WeakMap();
  function photoPass(bmp, pass) {  // the picture drawn at most pass[0] px on its longest side, as a JPEG of quality pass[1]
    var scale = Math.min(1, pass[0] / Math.max(bmp.width, bmp.height));
    var canvas = document.createElement("canvas"), ctx = canvas.getContext("2d");
    canvas.width = Math.max(1, Math.round(bmp.width * scale)); canvas.height = Math.max(1, Math.round(bmp.height * scale));
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);  // a PNG's transparent parts: white
    ctx.drawImage(bmp, 0, 0, canvas.width, canvas.height);
    return new Promise(function (done) { canvas.toBlob(done, "image/jpeg", pass[1]); });
  }
  function shrinkPhoto(f, each) {
    if (PHOTOS.indexOf(f.type) < 0 || !window.createImageBitmap) return Promise.resolve(f);
    return createImageBitmap(f).then(function (bmp) {  // turned as the camera says (its EXIF orientation)
      if (Math.max(bmp.width, bmp.height) <= SIDE && !(each && f.size > each)) { bmp.close(); return f; }
      function from(n) {  // pass n, and the next while this one is still over the limit
        return photoPass(bmp, PASSES[n]).then(function (blob) {
          return blob && each && blob.size > each && n + 1 < PASSES.length ? from(n + 1) : blob;
        });
      }
      return from(0).finally(function () { bmp.close(); }).then(function (blob) {
        if (!blob || blob.size >= f.size || (each && blob.size > each && f.size > each)) return f;  // no better
        return new File([blob], f.name.replace(/\.[^.]*$/, "") + ".jpg", {type: "image/jpeg", lastModified: f.lastModified});
      });
    }).catch(function () { return f; });  // not a picture the browser can read: left as chosen
  }
  function sizeSaid(n) {  // 3,2 MB / 3.2 MB, 410 KB: the limit's own units (1.5 MB = 1 500 000 bytes)
    var mb = n >= 1e6, lang = document.documentElement.lang || undefined;
    return new Intl.NumberFormat(lang, {maximumFractionDigits: mb ? 1 : 0})
      .format(mb ? n / 1e6 : Math.max(1, Math.round(n / 1000))) + (mb ? " MB" : " KB");
  }
  function shrinkChosen(form, input) {
    var each = Number(form.getAttribute("data-max-file")), files = Array.prototype.slice.call(input.files || []);
    var note = document.getElementById((form.getAttribute("data-files-refused") || "") + "-shrunk"), pick = {};
    if (note) { note.hidden = true; note.textContent = ""; }
    picks.set(input, pick);
    if (!note || !window.DataTransfer || !files.some(function (f) { return PHOTOS.indexOf(f.type) >= 0; })) {
      refusedFiles(form, input);
      return;
    }
    var done = Promise.all(files.map(function (f) { return shrinkPhoto(f, each); })).then(function (out) {
      if (picks.get(input) !== pick) return;  // chosen again meanwhile: that choice's turn
      var said = [], dt = new DataTransfer();
      out.forEach(function (f, i) {
        dt.items.add(f);
        if (f !== files[i]) {
          said.push(note.getAttribute("data-shrunk").split("{name}").join(files[i].name)
            .split("{from}").join(sizeSaid(files[i].size)).split("{to}").join(sizeSaid(f.size)));
        }
      });
      if (said.length) {
        input.files = dt.files;
        note.hidden = false; note.textContent = said.join(" ");
        sayChosen(input);
      }
      refusedFiles(form, input);
    }).finally(function () {
      if (shrinking.get(form) === done) shrinking.delete(form);
    });
    shrinking.set(form, done);
  }
  document.addEventListener("change", function (evt) {  // said as soon as the files are chosen
    var input = evt.target;
    if (input.matches && input.matches("form[data-files-refused] input[type=file]")) shrinkChosen(input.form, input);
  });
  // a file box's text beside its button (_form.html: "{id}-chosen") names what is chosen, in the page's words
  function sayChosen(input) {
    var said = document.getElementById(input.id + "-chosen");
    if (!said) return;
    var names = Array.prototype.map.call(input.files || [], function (f) { return f.name; });
    said.textContent = !names.length ? said.getAttribute("data-none")
      : said.getAttribute(names.length === 1 ? "data-one" : "data-some")
        .split("{count}").join(String(names.length)).split("{names}").join(names.join(", "));
  }
  document.addEventListener("change", function (evt) {
    if (evt.target.matches && evt.target.matches("input[type=file]")) sayChosen(evt.target);
  });
  document.addEventListener("submit", function (evt) {
    var form = evt.target, box = tooLargeBox(form), refused = null, photos = shrinking.get(form);
    if (photos) {  // sent while its photos are being made smaller: sent once they are, with them
      evt.preventDefault(); evt.stopPropagation();
      var by = evt.submitter;
      photos.then(function () { form.requestSubmit(by && by.form === form ? by : undefined); });
      return;
    }
    if (form.hasAttribute && form.hasAttribute("data-files-refused")) {
      fileInputs(form).forEach(function (input) { refused = refusedFiles(form, input) || refused; });
    }
    if (box) {
      var total = Number(form.getAttribute("data-max-total")), sum = 0;
      fileInputs(form).forEach(function (input) {
        Array.prototype.forEach.call(input.files || [], function (f) { sum += f.size; });
      });
      box.hidden = !(sum > total);
      if (!box.hidden) refused = refused || box;
    }
    if (refused) {  // before htmx's own listener on the form (this one runs while capturing)
      evt.preventDefault(); evt.stopPropagation();
      var live = ownBox(form); if (live) live.hidden = true;
      refused.setAttribute("tabindex", "-1"); refused.focus();
    }
  }, true);
  // an htmx request (a form sent in place, a search, a poll) answered by the portal's error page (signed
  // out, not allowed, refused, a service down: 4xx/5xx, which htmx does not swap by itself): the server names
  // the page's problem box (HX-Retarget, web.in_page) and the page's message and links go there, the page and
  // what was typed in it staying; the box takes the focus (the view scrolls to it) when it appears, and goes
  // away when the request that put it there succeeds (a poll that works again, the form sent again)
  var problemFrom = null, failedFrom = null, failedBox = null;
  function hideAll(ids) {
    ids.forEach(function (id) { var b = document.getElementById(id); if (b) b.hidden = true; });
  }
  // a form's own "not sent" box: the one its data-live-error names (a page with two forms sent in place, the
  // consult's answer and its message, says each under its own form), else the page's #live-error
  function ownBox(elt) {
    var form = elt && elt.closest ? elt.closest("[data-live-error]") : null;
    return (form && document.getElementById(form.getAttribute("data-live-error"))) || document.getElementById("live-error");
  }
  function hideFailed() {
    hideAll(["live-error"]);
    if (failedBox) failedBox.hidden = true;
    failedFrom = failedBox = null;
  }
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var d = evt.detail;
    if (d.xhr.status < 400 || !d.xhr.getResponseHeader("HX-Retarget")) return;
    d.shouldSwap = true; d.isError = false; d.ignoreTitle = true;  // the page keeps its own title
  });
  document.addEventListener("htmx:afterSwap", function (evt) {
    var box = document.getElementById("page-problem");
    if (!box || evt.detail.target !== box) return;
    hideAll(["connection-error"]); hideFailed();
    problemFrom = evt.detail.elt;
    // the form was from before the user signed in again: the answer carries the session's token, put into the
    // page (its forms and the header htmx sends), so the form sent once more goes through
    var renewed = box.querySelector("[data-csrf]");
    if (renewed) {
      var token = renewed.getAttribute("data-csrf");
      document.querySelectorAll("input[name='csrf_token']").forEach(function (i) { i.value = token; });
      document.body.setAttribute("hx-headers", JSON.stringify({"X-CSRFToken": token}));
    }
    if (box.hidden) { box.hidden = false; box.focus(); }
  });
  document.addEventListener("htmx:afterRequest", function (evt) {
    var d = evt.detail;
    if (!d.successful || !d.xhr || d.xhr.status >= 400) return;
    hideAll(["connection-error"]);
    // the form's own "not sent" box goes when the request that failed works (the form sent again), not when
    // another one does: the reason box's suggestions answered after the consult failed to go hid it, the
    // consult still not sent and nothing said
    if (!failedFrom || d.elt === failedFrom || !document.body.contains(failedFrom)) hideFailed();
    if (problemFrom && (d.elt === problemFrom || !document.body.contains(problemFrom))) {
      hideAll(["page-problem"]); problemFrom = null;
    }
  });
  // no answer at all (the connection failed), or an answer that is not the portal's page (a proxy's): said as
  // a connection error, in the form's own box (#live-error) or the page's; a 413 (the files were too large
  // for the portal) in the form's own words
  // A poll's (hx-trigger "every …": a status box, the worklist) is no request of the user's: nothing was sent
  // and there is nothing to try again; the page's box says it is not up to date and updates by itself (the
  // next poll that works hides it), never the form's box, which would say a form was not sent
  function isPoll(elt) {
    return !!elt && !!elt.getAttribute && /(^|[\s,])every\s/.test(elt.getAttribute("hx-trigger") || "");
  }
  // A suggestion box's request (the diagnosis box's codes, the secretary box's names, the reason box's), asked
  // as the user types, sends nothing of the form: its failure is said quietly beside the suggestions' own box
  // (a polite status under the list it would have filled, the connection box's data-suggest) and the form's
  // "not sent" box is left for the form's own submission (it said the minutes had failed to go). The next of
  // its answers that comes takes the note away.
  function suggestTarget(elt) {
    var sel = elt && elt.getAttribute ? elt.getAttribute("hx-target") : null, t = null;
    try { t = sel ? document.querySelector(sel) : null; } catch (e) { t = null; }
    return t && (t.matches("ul.suggest") || t.tagName === "DATALIST") ? t : null;
  }
  function suggestNote(list, make) {
    var id = list.id + "-failed", note = document.getElementById(id), page = document.getElementById("connection-error");
    if (!note && make) {
      note = document.createElement("p");
      note.id = id; note.className = "hint suggest-failed"; note.setAttribute("role", "status");
      note.textContent = (page && page.getAttribute("data-suggest")) || "";
      list.parentNode.insertBefore(note, list.nextSibling);
    }
    return note;
  }
  document.addEventListener("htmx:afterRequest", function (evt) {
    var d = evt.detail, list = d.successful && d.xhr && d.xhr.status < 400 ? suggestTarget(d.elt) : null;
    var note = list ? suggestNote(list, false) : null;
    if (note) note.hidden = true;
  });
  function connectionError(evt) {
    var list = suggestTarget(evt.detail.elt);
    if (list) { suggestNote(list, true).hidden = false; return; }
    var xhr = evt.detail.xhr, big = xhr && xhr.status === 413 ? tooLargeBox(evt.detail.elt) : null;
    var poll = !big && isPoll(evt.detail.elt), page = document.getElementById("connection-error");
    var own = ownBox(evt.detail.elt), box = big || (poll ? page : own || page);
    if (!box) return;
    if (box === page) {
      if (!box.hasAttribute("data-sent")) box.setAttribute("data-sent", box.textContent);
      box.textContent = box.getAttribute(poll ? "data-poll" : "data-sent") || box.getAttribute("data-sent");
      box.className = "alert error"; box.setAttribute("role", "alert");
    }
    if (box === own) { failedFrom = evt.detail.elt; failedBox = box; }
    box.hidden = false;
  }
  document.addEventListener("htmx:responseError", connectionError);
  document.addEventListener("htmx:sendError", connectionError);
  // a form posted by the browser (not htmx: a form sent in place too where htmx did not load, a slow link's file cut off;
  // a GET only shows a page) is sent once: a second click (a double-click, an impatient one)
  // while its answer is on the way sends nothing more, so the browser follows the first answer (the page it
  // redirects to) and not a second one. Runs after every other listener (the page's checks, htmx's own,
  // which sends its forms itself): a submission they stopped is no submission. Back to the page (the
  // browser's cache) may send it again.
  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    if (evt.defaultPrevented || !form.matches || (form.hasAttribute("hx-post") && window.htmx) || form.hasAttribute("target") ||
        (form.getAttribute("method") || "").toLowerCase() !== "post") return;
    if (form.hasAttribute("data-sending")) { evt.preventDefault(); return; }
    // the phone knows it has no connection: nothing is sent, said beside the button, the page and what was typed
    // staying (sent, the browser's own "no internet" page took the place of the minutes being signed)
    var said = form.querySelector("[data-offline-note]");
    if (said) said.remove();
    if (navigator.onLine === false) {
      evt.preventDefault();
      var at = evt.submitter || form.querySelector("button:not([type=button]), input[type=submit]");
      var offline = document.createElement("span");
      offline.className = "sending-note error"; offline.setAttribute("role", "alert");
      offline.setAttribute("data-offline-note", "");
      if (at) at.insertAdjacentElement("afterend", offline); else form.appendChild(offline);
      setTimeout(function () { offline.textContent = document.body.getAttribute("data-offline-text") || ""; }, 0);
      return;
    }
    form.setAttribute("data-sending", "");
    form.setAttribute("aria-busy", "true");
    // ... and says it is being sent, at the button pressed: on a slow link the answer takes seconds, and a
    // button that looked the same after a tap (a second tap doing nothing) read as broken
    var button = evt.submitter || form.querySelector("button:not([type=button]), input[type=submit]");
    var note = document.createElement("span");
    note.className = "sending-note"; note.setAttribute("role", "status"); note.setAttribute("data-sending-note", "");
    if (button) {
      button.setAttribute("aria-disabled", "true"); button.classList.add("sending");
      button.insertAdjacentElement("afterend", note);
    } else {
      form.appendChild(note);
    }
    setTimeout(function () { note.textContent = document.body.getAttribute("data-sending-text") || "…"; }, 0);
  });
  // typing in a form keeps the session alive (web.session_alive; its idle expiry, SEN_PORTAL_IDLE_MINUTES): asked
  // at most every 5 minutes while the user types, never while the page is only open (an hour's video visit in
  // another tab, then the minutes written here, made no request, and "Sign off" found the doctor signed out)
  var aliveAt = Date.now();
  document.addEventListener("input", function (evt) {
    var url = document.body.getAttribute("data-alive");
    if (!url || !evt.target.form || Date.now() - aliveAt < 5 * 60 * 1000) return;
    aliveAt = Date.now();
    fetch(url, {credentials: "same-origin", cache: "no-store"}).catch(function () { /* offline: asked again 5 min on */ });
  });
  window.addEventListener("pageshow", function () {  // back to the page (the browser's cache): as it was
    document.querySelectorAll("form[data-sending]").forEach(function (f) {
      f.removeAttribute("data-sending"); f.removeAttribute("aria-busy");
      f.querySelectorAll("[data-sending-note]").forEach(function (n) { n.remove(); });
      f.querySelectorAll(".sending").forEach(function (b) { b.classList.remove("sending"); b.removeAttribute("aria-disabled"); });
    });
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
  // a box the invoice page's status poll would swap out or redraw (billing's state changed: the invoice paid or
  // cancelled, a refund recorded) while its form is on its way or its "not sent" box shows stays as it is, what was
  // typed and the button with it, and its "not sent" box says (now or when it shows) that the invoice changed
  // meanwhile (its data-changed: _form.html's not_sent): perhaps the send that seemed lost reached billing. Sent
  // again it is done once, and the page says what it did (the change to give back, the refund recorded); the status
  // box above shows billing's state meanwhile. (A poll may see the change before the lost answer's error comes.)
  document.addEventListener("htmx:oobBeforeSwap", function (evt) {
    var box = evt.detail.target, live = null;
    if (!box || !box.querySelector) return;
    var going = box.querySelector("form.htmx-request[data-live-error]");
    live = going ? document.getElementById(going.getAttribute("data-live-error"))
      : box.querySelector("[data-changed]:not([hidden])");
    if (!live || !live.hasAttribute("data-changed")) return;
    evt.detail.shouldSwap = false;
    if (live.querySelector("[data-changed-note]")) return;
    var note = document.createElement("span");
    note.setAttribute("data-changed-note", "");
    note.textContent = " " + live.getAttribute("data-changed");
    live.appendChild(note);
  });
  // the refund box: a payment arriving (or given back) swaps the payments box in, refund form and all (the
  // status box's poll, on a change only), its amount and reason empty; what the cashier chose and typed
  // there, and the box open, are carried into the new form before it goes in (as a typed cash amount
  // stays), and said; a payment chosen that the new form no longer offers is said so, none chosen instead
  document.addEventListener("htmx:oobBeforeSwap", function (evt) {
    var box = evt.detail.target, fresh = evt.detail.fragment;
    if (!box || box.id !== "invoice-payments" || !fresh || !fresh.querySelector) return;
    var form = box.querySelector("form[data-refund-form]"), next = fresh.querySelector("form[data-refund-form]");
    var details = box.querySelector("#refund-box"), nextDetails = fresh.querySelector("#refund-box");
    if (!form) return;
    var typed = ["amount", "reason"].some(function (name) {
      var f = form.querySelector("[name='" + name + "']");
      return f && f.value.trim() !== "";
    });
    if (!next || !nextDetails) {  // nothing left to refund: the box goes, what was typed said, not lost
      var none = fresh.querySelector("[data-refund-kept='none']");
      if (!typed || !none) return;
      none.querySelector("[data-refund-typed]").textContent = ["amount", "reason"].map(function (name) {
        var f = form.querySelector("[name='" + name + "']");
        return f ? f.value.trim() : "";
      }).filter(Boolean).join(" · ");
      none.hidden = false;
      return;
    }
    if (!typed && !(details && details.open)) return;  // nothing of the cashier's in it: the new box as it comes
    ["amount", "reason", "method"].forEach(function (name) {
      var was = form.querySelector("[name='" + name + "']"), now = next.querySelector("[name='" + name + "']");
      if (was && now) now.value = was.value;
    });
    var chosen = form.querySelector("input[name='payment']:checked, input[name='payment'][type='hidden']");
    var radios = next.querySelectorAll("input[type='radio'][name='payment']"), found = false;
    if (chosen) {
      Array.prototype.forEach.call(radios, function (r) {
        r.checked = r.value === chosen.value;
        found = found || r.checked;
      });
    }
    var gone = !!chosen && radios.length > 0 && !found;
    nextDetails.open = true;
    var note = nextDetails.querySelector(gone ? "[data-refund-kept='gone']" : "[data-refund-kept='changed']");
    if (note && (typed || gone)) note.hidden = false;
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
  function pick(b) {
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
    closeList(input);
    input.focus();
    keepBoxes();
  }
  // Back to a page brings back what its boxes held (the browser's form state), but not a box with
  // autocomplete=off, as each suggestion box is (no browser list over its own): the consult form came back
  // with its question and an empty reason, the code picked and its title gone. Each such box's value is kept
  // in the page's own history entry (history.state: that entry only, never a new visit of the page) when it
  // is picked, typed or left, and put back when the entry is gone back (or forward) to, unless it changed since.
  var KEPT = "senBoxes", keepSoon = null;
  function keptBoxes() {
    return Array.prototype.slice.call(document.querySelectorAll(
      "input[aria-controls][autocomplete=off][id], textarea[aria-controls][autocomplete=off][id]"));
  }
  function keepBoxes() {
    clearTimeout(keepSoon);
    var kept = {}, state = {}, old = history.state || {};
    keptBoxes().forEach(function (b) { if (b.value !== b.defaultValue) kept[b.id] = b.value; });
    if (typeof old === "object") Object.keys(old).forEach(function (k) { state[k] = old[k]; });  // htmx's kept
    state[KEPT] = kept;
    try { history.replaceState(state, ""); } catch (e) { /* refused (too many): the last kept stays */ }
  }
  function restoreBoxes() {
    var nav = performance.getEntriesByType ? performance.getEntriesByType("navigation")[0] : null;
    var kept = (history.state || {})[KEPT];
    // Back or Forward only: a reload (and the same address opened again, a reload to Chromium) starts the
    // boxes empty, as the browser starts the form's others
    if (!nav || nav.type !== "back_forward" || !kept || typeof kept !== "object") return;
    keptBoxes().forEach(function (b) {
      if (Object.prototype.hasOwnProperty.call(kept, b.id) && b.value === b.defaultValue) b.value = kept[b.id];
    });
  }
  document.addEventListener("DOMContentLoaded", restoreBoxes);
  document.addEventListener("change", function (evt) {
    if (evt.target.matches && evt.target.matches("[aria-controls][autocomplete=off][id]")) keepBoxes();
  });
  document.addEventListener("input", function (evt) {  // a pause in typing (Back pressed in the box: no change)
    if (!evt.target.matches || !evt.target.matches("[aria-controls][autocomplete=off][id]")) return;
    clearTimeout(keepSoon);
    keepSoon = setTimeout(keepBoxes, 400);
  });
  document.addEventListener("click", function (evt) {
    var b = evt.target.closest ? evt.target.closest("button[data-pick]") : null;
    if (!b) return;
    evt.preventDefault();
    pick(b);
  });
  // ... as a combobox (WAI-ARIA APG, list autocomplete with manual selection): a box whose aria-controls
  // names a ul.suggest (htmx swaps in its suggestions) gets role=combobox and aria-expanded, the list
  // role=listbox, each suggestion role=option; ArrowDown/ArrowUp move through them (the focus stays in
  // the box: aria-activedescendant), Enter picks the one moved to, Escape closes; Enter in the box
  // never sends its form while the list is open. A textarea (the minutes' codes) cannot be a combobox:
  // it keeps its role, with the same keys (Enter without a suggestion moved to is a new line).
  // Without JavaScript there are no suggestions and the box is a plain text box.
  function suggestList(input) {
    var list = document.getElementById(input.getAttribute("aria-controls") || "");
    return list && list.matches("ul.suggest") ? list : null;
  }
  function suggestions(list) {
    return list ? Array.prototype.slice.call(list.querySelectorAll("button[data-pick]")) : [];
  }
  // a list answers the box while the box still holds the text it was made for (its data-typed): on a slow
  // link the answer to "ta" came while "tang huyet ap" was being typed, and a tap picked "A00 — Bệnh tả";
  // a list that no longer answers is hidden until the one for the box's text comes (htmx asks for it last)
  function answers(input, list) {
    return !list.hasAttribute("data-typed") || list.getAttribute("data-typed") === input.value;
  }
  function isOpen(input) {
    var list = suggestList(input);
    return !!list && !list.hidden && suggestions(list).length > 0;
  }
  function closeList(input) {
    var list = suggestList(input);
    if (list) list.hidden = true;
    if (input.getAttribute("role") === "combobox") input.setAttribute("aria-expanded", "false");
    moveTo(input, -1);
  }
  function moveTo(input, i) {
    var opts = suggestions(suggestList(input));
    opts.forEach(function (o, j) { o.setAttribute("aria-selected", j === i ? "true" : "false"); });
    if (i >= 0 && opts[i]) {
      input.setAttribute("aria-activedescendant", opts[i].id);
      opts[i].scrollIntoView({block: "nearest"});
    } else {
      input.removeAttribute("aria-activedescendant");
    }
  }
  function active(input) {
    var id = input.getAttribute("aria-activedescendant");
    return id ? suggestions(suggestList(input)).map(function (o) { return o.id; }).indexOf(id) : -1;
  }
  function setUpCombobox(input) {
    var list = suggestList(input);
    if (!list || list.getAttribute("role") === "listbox") return;  // set up already (a list swapped in is not)
    if (input.tagName === "INPUT" && input.getAttribute("role") !== "combobox") {
      input.setAttribute("role", "combobox");
      input.setAttribute("aria-expanded", "false");
    }
    input.setAttribute("aria-autocomplete", "list");
    var label = input.labels && input.labels[0];
    list.setAttribute("role", "listbox");
    if (label) list.setAttribute("aria-label", label.textContent.trim());
    suggestions(list).forEach(function (o, i) {
      o.setAttribute("role", "option");
      o.setAttribute("tabindex", "-1");
      o.setAttribute("aria-selected", "false");
      o.id = list.id + "-" + i;
      if (o.parentNode.tagName === "LI") o.parentNode.setAttribute("role", "none");
    });
    // the suggestions just swapped in: shown while the box is still being typed in
    var open = suggestions(list).length > 0 && document.activeElement === input && answers(input, list);
    list.hidden = !open;
    if (input.getAttribute("role") === "combobox") input.setAttribute("aria-expanded", open ? "true" : "false");
    input.removeAttribute("aria-activedescendant");
  }
  function setUpComboboxes(root) {
    if (!root || !root.querySelectorAll) return;
    var boxes = Array.prototype.slice.call(root.querySelectorAll("input[aria-controls], textarea[aria-controls]"));
    if (root.matches && root.matches("ul.suggest[id]")) {  // a list swapped in: its box
      boxes = Array.prototype.slice.call(document.querySelectorAll("[aria-controls='" + root.id + "']"));
    }
    boxes.forEach(setUpCombobox);
  }
  // a list swapped in is set up at once (htmx:load comes only after the settle, ~20 ms later)
  document.addEventListener("htmx:afterSwap", function () { setUpComboboxes(document); });
  document.addEventListener("htmx:load", function (evt) { setUpComboboxes(evt.detail.elt); });
  document.addEventListener("DOMContentLoaded", function () { setUpComboboxes(document); });
  document.addEventListener("keydown", function (evt) {
    var input = evt.target;
    if (evt.isComposing || !input.matches || !input.matches("[aria-autocomplete=list]")) return;
    var list = suggestList(input), opts = suggestions(list), open = isOpen(input), i = active(input);
    if (evt.key === "ArrowDown" || evt.key === "ArrowUp") {
      if (!opts.length || !answers(input, list)) return;
      evt.preventDefault();
      if (!open) {
        list.hidden = false;
        if (input.getAttribute("role") === "combobox") input.setAttribute("aria-expanded", "true");
      }
      var down = evt.key === "ArrowDown";
      moveTo(input, i < 0 ? (down ? 0 : opts.length - 1) : (i + (down ? 1 : opts.length - 1)) % opts.length);
    } else if (evt.key === "Enter" && open) {
      if (i >= 0) { evt.preventDefault(); pick(opts[i]); } else if (input.tagName === "INPUT") evt.preventDefault();
    } else if (evt.key === "Escape" && open) {
      evt.preventDefault();
      closeList(input);
    }
  });
  document.addEventListener("input", function (evt) {  // typing again: no suggestion moved to
    var input = evt.target, list;
    if (!input.matches || !input.matches("[aria-autocomplete=list]")) return;
    moveTo(input, -1);
    list = suggestList(input);
    if (list && !answers(input, list)) closeList(input);
  });
  // leaving the box closes its list; left by a click (on the button under the list, say), once the click is
  // done: the list going away moves what is under it, and the click would land on something else
  var pressed = false;
  function closeLeft() {
    pressed = false;
    document.querySelectorAll("[aria-autocomplete=list]").forEach(function (input) {
      if (input !== document.activeElement && isOpen(input)) closeList(input);
    });
  }
  document.addEventListener("pointerdown", function () { pressed = true; }, true);
  ["pointerup", "pointercancel"].forEach(function (name) {
    document.addEventListener(name, function () { setTimeout(closeLeft, 0); }, true);
  });
  document.addEventListener("focusout", function (evt) {
    var input = evt.target;
    if (!pressed && input.matches && input.matches("[aria-autocomplete=list]") && suggestList(input)) closeList(input);
  });
  document.addEventListener("mousedown", function (evt) {  // a click on a suggestion keeps the focus in the box
    if (evt.target.closest && evt.target.closest("ul.suggest[role=listbox]")) evt.preventDefault();
  });
  // a whole-number box (data-min, data-max: the new invoice's quantities) says the server's message (its
  // error box's data-message) beside it as soon as what is typed cannot be one; an empty box once left
  function checkWhole(input, left) {
    var box = document.getElementById(input.id + "-error");
    if (!box || !box.hasAttribute("data-message")) return;
    var text = input.value.trim(), n = Number(text);
    var bad = /^[0-9]+$/.test(text) ? n < Number(input.getAttribute("data-min")) || n > Number(input.getAttribute("data-max"))
      : text !== "" || left;
    if (!bad && !left && box.textContent === "") return;
    box.textContent = bad ? box.getAttribute("data-message") : "";
    var described = (input.getAttribute("aria-describedby") || "").split(" ").filter(function (id) {
      return id && id !== box.id;
    });
    if (bad) described.unshift(box.id);
    if (described.length) input.setAttribute("aria-describedby", described.join(" "));
    else input.removeAttribute("aria-describedby");
    if (bad) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
    var row = input.closest("tr"); if (row && !row.querySelector("[id$='-error']:not(:empty)")) row.classList.remove("invalid");
  }
  document.addEventListener("input", function (evt) {
    if (evt.target.matches && evt.target.matches("input[data-min][data-max]")) checkWhole(evt.target, false);
  });
  document.addEventListener("change", function (evt) {
    if (evt.target.matches && evt.target.matches("input[data-min][data-max]")) checkWhole(evt.target, true);
  });
  // the consult's minutes (long, typed between two patients, often beside the video in another tab) are kept as
  // they are typed in this tab's sessionStorage (the tab's own, gone with it; never localStorage, which outlives
  // the session on a shared machine): a reload, a tablet bringing the tab back after discarding it, or the form
  // coming back once the clinic answered the doctor's question finds them in their boxes, said above them. Kept
  // under the form's action (/tasks/<id>/complete); forgotten once the minutes are signed (the server's answer
  // leads to the consult's page: HX-Redirect) and on every page of a signed-out tab (the sign-in page)
  var DRAFT = "sen-draft:", DRAFTED = "#consult-minutes form";
  function draftStore() {
    try { return window.sessionStorage; } catch (e) { return null; }  // storage refused: nothing kept, as before
  }
  function draftFields(form) {
    return Array.prototype.filter.call(form.elements, function (el) {
      return el.name && (el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && el.type === "text"));
    });
  }
  document.addEventListener("input", function (evt) {
    var form = evt.target.closest && evt.target.closest(DRAFTED), store = draftStore();
    if (!form || !store) return;
    var kept = {};
    draftFields(form).forEach(function (el) { kept[el.name] = el.value; });
    try { store.setItem(DRAFT + form.getAttribute("action"), JSON.stringify(kept)); } catch (e) { /* full: not kept */ }
  });
  // (before htmx handles the answer: it follows an HX-Redirect at once, and then says no "successful")
  document.addEventListener("htmx:beforeOnLoad", function (evt) {
    var form = evt.detail.elt, xhr = evt.detail.xhr, store = draftStore();
    if (store && form && form.matches && form.matches(DRAFTED) && xhr && xhr.status >= 200 && xhr.status < 300 &&
        xhr.getResponseHeader("HX-Redirect")) store.removeItem(DRAFT + form.getAttribute("action"));
  });
  function restoreDraft() {
    var store = draftStore();
    if (!store) return;
    if (!document.body.hasAttribute("data-alive")) {  // signed out: no tab keeps anyone's minutes
      Object.keys(store).forEach(function (k) { if (k.indexOf(DRAFT) === 0) store.removeItem(k); });
      return;
    }
    var form = document.querySelector(DRAFTED), kept = null;
    if (!form) return;
    try { kept = JSON.parse(store.getItem(DRAFT + form.getAttribute("action")) || "null"); } catch (e) { kept = null; }
    if (!kept) return;
    var changed = false;
    draftFields(form).forEach(function (el) {
      if (typeof kept[el.name] === "string" && kept[el.name] !== el.value) { el.value = kept[el.name]; changed = true; }
    });
    if (!changed) return;
    var note = document.createElement("p");
    note.className = "alert warn"; note.setAttribute("role", "status"); note.setAttribute("data-testid", "draft-restored");
    note.textContent = document.body.getAttribute("data-draft-text") || "";
    form.parentNode.insertBefore(note, form);
  }
  // focus the first error summary after a failed submission
  document.addEventListener("DOMContentLoaded", function () {
    var e = document.getElementById("form-errors"); if (e) e.focus();
    restoreDraft();
  });
  // ... and after a form sent in place came back with one (the registration, the consult form): the box swapped
  // in took the pressed button with it, the focus fell to the page and a phone stayed at the button's place,
  // below the fields to correct; the summary a poll or a suggestion leaves in place is not focused again
  var errorsBefore = null;
  document.addEventListener("htmx:beforeRequest", function () { errorsBefore = document.getElementById("form-errors"); });
  document.addEventListener("htmx:afterSettle", function (evt) {
    var e = document.getElementById("form-errors"), asked = evt.detail.requestConfig;
    if (e && e !== errorsBefore && asked && asked.verb === "post") e.focus();
  });
})();
document.addEventListener("click", function (evt) {
  if (evt.target.closest && evt.target.closest("[data-print]")) window.print();
});
