// The ranking page's behaviour: reorder cards (pointer drag, keyboard), submit or skip through
// the API, then swap in the next assignment's server-rendered workspace. No inline script, no
// network assets, no innerHTML of anything the server did not render and sanitise.
"use strict";

(function () {
  const app = document.getElementById("app");
  if (!app) return;
  const csrf = app.dataset.csrf;
  const nextUrl = app.dataset.nextUrl;
  const apiBase = app.dataset.api;
  const dialog = document.getElementById("confirm-unchanged");

  let ws = null; // the current workspace's state, rebuilt for every assignment

  function init() {
    const root = document.getElementById("workspace");
    if (ws && ws.timer) clearInterval(ws.timer);
    ws = { root: root, busy: false, expired: false, timer: null };
    if (!root || root.classList.contains("empty")) {
      ws.empty = true;
      return;
    }
    ws.id = root.dataset.assignmentId;
    ws.cardsEl = root.querySelector("#cards");
    ws.cards = new Map();
    ws.cardsEl.querySelectorAll(".card").forEach(function (el) {
      ws.cards.set(el.dataset.id, el);
    });
    // Groups of card ids, best first; a group of several is a tie.
    ws.groups = Array.from(ws.cards.keys()).map(function (id) { return [id]; });
    ws.initial = JSON.stringify(ws.groups);
    ws.flags = {};
    ws.startedAt = Date.now();
    const expires = Date.parse(root.dataset.leaseExpires);
    const skew = Date.parse(root.dataset.serverNow) - Date.now();
    ws.expiresAt = expires - skew; // in this browser's clock
    ws.timer = setInterval(tickLease, 1000);
    tickLease();
    render();
    const first = ws.cardsEl.querySelector(".card");
    if (first) first.focus({ preventScroll: true });
  }

  // ---- ranking state -------------------------------------------------------------------

  function groupIndexOf(id) {
    return ws.groups.findIndex(function (g) { return g.indexOf(id) !== -1; });
  }

  function detach(id) {
    const g = groupIndexOf(id);
    ws.groups[g] = ws.groups[g].filter(function (x) { return x !== id; });
    if (ws.groups[g].length === 0) ws.groups.splice(g, 1);
  }

  function placeAtRank(id, rank) {
    detach(id);
    const index = Math.max(0, Math.min(rank - 1, ws.groups.length));
    ws.groups.splice(index, 0, [id]);
  }

  function move(id, delta) {
    const g = groupIndexOf(id);
    if (ws.groups[g].length > 1) {
      // Moving a tied card first takes it out of the tie, on the side it moves to.
      detach(id);
      ws.groups.splice(delta < 0 ? g : g + 1, 0, [id]);
      return;
    }
    const target = g + delta;
    if (target < 0 || target >= ws.groups.length) return;
    const tmp = ws.groups[target];
    ws.groups[target] = ws.groups[g];
    ws.groups[g] = tmp;
  }

  function toggleTie(id) {
    const g = groupIndexOf(id);
    const group = ws.groups[g];
    if (group.indexOf(id) > 0) {
      // Already tied with the card above: untie, just below its old group.
      detach(id);
      ws.groups.splice(groupIndexOf(group[0]) + 1, 0, [id]);
      return;
    }
    if (group.length > 1) {
      // First of its tie: it leaves the tie and joins the group above, if any.
      if (g === 0) return;
      detach(id);
      ws.groups[groupIndexOf(ws.groups[g - 1][0])].push(id);
      return;
    }
    if (g === 0) return;
    ws.groups.splice(g, 1);
    ws.groups[g - 1].push(id);
  }

  function tieWith(id, otherId) {
    if (id === otherId) return;
    detach(id);
    ws.groups[groupIndexOf(otherId)].push(id);
  }

  function insertAt(id, beforeId, after) {
    detach(id);
    const g = groupIndexOf(beforeId);
    ws.groups.splice(after ? g + 1 : g, 0, [id]);
  }

  function changed() {
    return JSON.stringify(ws.groups) !== ws.initial;
  }

  function render() {
    ws.groups.forEach(function (group, g) {
      group.forEach(function (id, i) {
        const el = ws.cards.get(id);
        ws.cardsEl.appendChild(el);
        const tied = group.length > 1;
        el.querySelector("[data-rank]").textContent = String(g + 1) + (tied ? "=" : "");
        el.classList.toggle("tied", tied);
        el.classList.toggle("tie-above", i > 0);
        el.dataset.rankValue = String(g + 1);
        el.setAttribute("aria-label",
          el.querySelector(".label").textContent + ", rank " + (g + 1) + (tied ? ", tied" : ""));
      });
    });
  }

  // ---- keyboard ------------------------------------------------------------------------

  function focusedCard() {
    const el = document.activeElement;
    return el && el.closest ? el.closest(".card") : null;
  }

  function refocus(card) {
    render();
    card.focus({ preventScroll: false });
    card.scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", function (event) {
    if (dialog && dialog.open) return;
    if (!ws || ws.empty) {
      if (event.key === "Enter" && event.target === document.body) loadNext();
      return;
    }
    const typing = event.target.closest && event.target.closest("textarea, input[type=text]");
    if (typing) {
      if (event.key === "Escape") event.target.blur();
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        submit();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const card = focusedCard();
    const key = event.key;
    if (/^[1-9]$/.test(key) && card) {
      event.preventDefault();
      placeAtRank(card.dataset.id, Number(key));
      refocus(card);
    } else if ((key === "ArrowUp" || key === "ArrowDown") && card) {
      event.preventDefault();
      move(card.dataset.id, key === "ArrowUp" ? -1 : 1);
      refocus(card);
    } else if ((key === "t" || key === "T" || key === "=") && card) {
      event.preventDefault();
      toggleTie(card.dataset.id);
      refocus(card);
    } else if ((key === "e" || key === "E") && card) {
      event.preventDefault();
      toggleExpand(card);
    } else if (key === "n" || key === "N") {
      event.preventDefault();
      const box = ws.root.querySelector("[data-none-acceptable]");
      box.checked = !box.checked;
      noneChanged();
    } else if (key === "s" || key === "S") {
      event.preventDefault();
      skip();
    } else if (key === "Enter") {
      if (event.target.closest && event.target.closest("button, summary, a")) return;
      event.preventDefault();
      submit();
    }
  });

  // ---- pointer drag and drop (mouse, pen and touch) ---------------------------------------

  let drag = null;

  document.addEventListener("pointerdown", function (event) {
    if (!ws || ws.empty || event.button !== 0) return;
    const card = event.target.closest(".card");
    if (!card || event.target.closest("button, a, input, textarea, .card-body")) return;
    event.preventDefault();
    card.focus({ preventScroll: true });
    card.setPointerCapture(event.pointerId);
    drag = { card: card, id: card.dataset.id, startY: event.clientY, moved: false, target: null };
  });

  document.addEventListener("pointermove", function (event) {
    if (!drag) return;
    const dy = event.clientY - drag.startY;
    if (!drag.moved && Math.abs(dy) < 4) return;
    drag.moved = true;
    drag.card.classList.add("dragging");
    drag.card.style.transform = "translateY(" + dy + "px)";
    drag.target = dropTarget(event.clientY);
    showDropTarget(drag.target);
  });

  function endDrag(event, cancelled) {
    if (!drag) return;
    const d = drag;
    drag = null;
    d.card.classList.remove("dragging");
    d.card.style.transform = "";
    showDropTarget(null);
    if (cancelled || !d.moved) return;
    const target = dropTarget(event.clientY);
    if (target) {
      if (target.mode === "tie") tieWith(d.id, target.card.dataset.id);
      else insertAt(d.id, target.card.dataset.id, target.mode === "after");
    }
    refocus(d.card);
  }

  document.addEventListener("pointerup", function (event) { endDrag(event, false); });
  document.addEventListener("pointercancel", function (event) { endDrag(event, true); });

  // Where a drop at this height lands: on the middle of a card ties with it; near its top or
  // bottom edge places the dragged card before or after it.
  function dropTarget(y) {
    let best = null;
    ws.cards.forEach(function (el) {
      if (drag && el === drag.card) return;
      const r = el.getBoundingClientRect();
      const distance = y < r.top ? r.top - y : y > r.bottom ? y - r.bottom : 0;
      if (!best || distance < best.distance) best = { card: el, rect: r, distance: distance };
    });
    if (!best) return null;
    const r = best.rect;
    const band = Math.min(r.height * 0.25, 40);
    let mode = "tie";
    if (y < r.top + band) mode = "before";
    else if (y > r.bottom - band) mode = "after";
    return { card: best.card, mode: mode };
  }

  function showDropTarget(target) {
    ws.cards.forEach(function (el) {
      el.classList.remove("drop-before", "drop-after", "drop-tie");
    });
    if (target) target.card.classList.add("drop-" + target.mode);
  }

  // ---- clicks --------------------------------------------------------------------------

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-action], button.flag");
    if (!button || !ws) return;
    if (button.classList.contains("flag")) {
      const id = button.closest(".card").dataset.id;
      const on = button.getAttribute("aria-pressed") !== "true";
      button.setAttribute("aria-pressed", on ? "true" : "false");
      const labels = new Set(ws.flags[id] || []);
      if (on) labels.add(button.dataset.flag); else labels.delete(button.dataset.flag);
      ws.flags[id] = Array.from(labels);
      return;
    }
    const action = button.dataset.action;
    if (action === "submit") submit();
    else if (action === "skip") skip();
    else if (action === "next") loadNext();
    else if (action === "expand") toggleExpand(button.closest(".card"));
  });

  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-none-acceptable]")) noneChanged();
  });

  function noneChanged() {
    const on = ws.root.querySelector("[data-none-acceptable]").checked;
    ws.cardsEl.classList.toggle("none-acceptable", on);
  }

  function toggleExpand(card) {
    const body = card.querySelector(".card-body.collapsible");
    if (!body) return;
    const collapsed = body.classList.toggle("collapsed");
    const button = card.querySelector("[data-action=expand]");
    if (button) button.textContent = collapsed ? "Show all (E)" : "Show less (E)";
  }

  // ---- lease ---------------------------------------------------------------------------

  function tickLease() {
    const left = Math.max(0, ws.expiresAt - Date.now());
    const el = ws.root.querySelector("[data-lease-left]");
    const minutes = Math.floor(left / 60000);
    const seconds = Math.floor((left % 60000) / 1000);
    el.textContent = minutes + ":" + String(seconds).padStart(2, "0") + " left";
    ws.root.querySelector("[data-lease]").classList.toggle("soon", left < 120000);
    if (left === 0) showExpired();
  }

  function showExpired() {
    if (ws.expired) return;
    ws.expired = true;
    clearInterval(ws.timer);
    ws.root.querySelector("[data-lease-left]").textContent = "expired";
    ws.root.querySelector("[data-lease]").classList.add("expired");
    ws.root.querySelector("[data-expired]").hidden = false;
    ws.root.querySelectorAll("[data-action=submit], [data-action=skip]").forEach(function (b) {
      b.disabled = true;
    });
  }

  // ---- talking to the server -----------------------------------------------------------

  function say(text, isError) {
    const el = ws.root.querySelector("[data-message]");
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("error", Boolean(isError));
  }

  async function post(path, body) {
    const response = await fetch(apiBase + ws.id + "/" + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    return { status: response.status, data: data };
  }

  async function submit() {
    if (ws.busy || ws.empty) return;
    if (ws.expired) { showExpired(); return; }
    const none = ws.root.querySelector("[data-none-acceptable]").checked;
    if (!none && !changed()) {
      const confirmed = await confirmUnchanged();
      if (!confirmed) return;
    }
    const body = {
      ranking: ws.groups.map(function (g) { return g.map(Number); }),
      not_rankable: none,
      flags: cleanFlags(),
      rationale: ws.root.querySelector("[data-rationale]").value,
      duration_ms: Date.now() - ws.startedAt,
    };
    await send("ranking/", body, function (data) {
      return "Saved: " + data.comparisons + " comparisons.";
    });
  }

  function cleanFlags() {
    const out = {};
    Object.keys(ws.flags).forEach(function (id) {
      if (ws.flags[id].length) out[id] = ws.flags[id];
    });
    return out;
  }

  async function skip() {
    if (ws.busy || ws.empty || ws.expired) return;
    await send("skip/", {}, function () { return "Skipped."; });
  }

  async function send(path, body, success) {
    ws.busy = true;
    say("Saving…");
    let result;
    try {
      result = await post(path, body);
    } catch (e) {
      ws.busy = false;
      say("Could not reach the server; nothing was lost. Try again.", true);
      return;
    }
    if (result.status === 201 || result.status === 200) {
      const note = success(result.data);
      await loadNext();
      say(note);
      return;
    }
    ws.busy = false;
    if (result.status === 409 && result.data.status === "expired") showExpired();
    say(result.data.detail || "The server refused this (" + result.status + ").", true);
  }

  function confirmUnchanged() {
    return new Promise(function (resolve) {
      dialog.returnValue = "";
      dialog.addEventListener("close", function onClose() {
        dialog.removeEventListener("close", onClose);
        resolve(dialog.returnValue === "submit");
      });
      dialog.showModal();
    });
  }

  async function loadNext() {
    const response = await fetch(nextUrl, { credentials: "same-origin" });
    if (response.status === 403 || response.redirected) {
      window.location.reload();
      return;
    }
    const html = await response.text();
    // Rendered and sanitised by the server (annotation/rendering.py).
    const holder = document.createElement("div");
    holder.innerHTML = html;
    const fresh = holder.querySelector("#workspace");
    document.getElementById("workspace").replaceWith(fresh);
    init();
    window.scrollTo({ top: 0 });
  }

  init();
})();
