// Roster's web view: reads /api/v1 and redraws on each message of the event stream. Plain JavaScript,
// no framework, no build step; every string from the server goes through textContent.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// Node ids of older data directories are random 64-bit numbers, beyond JavaScript's exact integers:
// keep every integer too big
// for a double as its exact decimal text (the reviver's source text, where the browser has it).
function exact(key, value, context) {
  return typeof value === "number" && !Number.isSafeInteger(value) && context && context.source
    && /^-?\d+$/.test(context.source) ? context.source : value;
}
const parse = (text) => JSON.parse(text, exact);

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  const body = await r.text().then(parse).catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
  return body;
}

const fmt = new Intl.NumberFormat();
// Random 64-bit ids (older data directories) are shown short, the full id in a tooltip.
const short = (id) => { const s = String(id); return s.length > 9 ? s.slice(0, 4) + "\u2026" + s.slice(-4) : s; };
const nodeName = (id) => el("span", { title: "node " + id }, "node " + short(id));
const timeOf = (ms) => new Date(ms).toLocaleTimeString();

// ---------------------------------------------------------------- cluster
let clusterBusy = false, clusterAgain = false;
async function refreshCluster() {
  if (clusterBusy) { clusterAgain = true; return; }
  clusterBusy = true;
  try {
    drawCluster(await getJSON("/api/v1/cluster"));
  } catch (e) {
    $("summary").textContent = "cannot read /api/v1/cluster: " + e.message;
  } finally {
    clusterBusy = false;
    if (clusterAgain) { clusterAgain = false; refreshCluster(); }
  }
}

function drawCluster(c) {
  const up = c.members.filter((m) => m.health !== "unreachable").length;
  $("summary").replaceChildren(
    el("b", {}, nodeName(c.node_id)), " of cluster ", el("b", { class: "mono" }, c.cluster_id),
    " \u00b7 leader ", el("b", { id: "leader-id", "data-leader": c.leader == null ? "" : c.leader },
      c.leader == null ? "none" : nodeName(c.leader)),
    " \u00b7 term ", el("b", {}, c.term),
    " \u00b7 ", el("b", {}, up + "/" + c.members.length), " members up",
    c.serving ? "" : el("b", { class: "health unreachable" }, " \u00b7 not serving clients"));
  $("cluster-meta").textContent =
    "applied " + fmt.format(c.applied) + " \u00b7 committed " + fmt.format(c.committed) +
    " \u00b7 snapshot at " + fmt.format(c.snapshot) + (c.changing ? " \u00b7 membership change under way" : "");
  const maxLag = Math.max(1, ...c.members.map((m) => m.lag || 0));
  $("nodes").replaceChildren(...c.members.map((m) => {
    const down = m.health === "unreachable";
    const role = down ? "unknown" : m.role;
    const rows = [
      ["peer", m.peer_addr],
      ["clients", m.client_addr || "?"],
      ["votes", m.voter ? "yes" : "no (observer)"],
      ["health", el("span", { class: "health " + m.health }, m.health.replace("_", " "))],
      ["applied", m.applied == null ? "?" : fmt.format(m.applied)],
      ["lag", m.lag == null ? "?" : fmt.format(m.lag) + " entries"],
    ];
    if (m.last_ack_ms != null) rows.push(["last ack", fmt.format(m.last_ack_ms) + " ms ago"]);
    const pct = m.lag == null ? 0 : Math.max(4, 100 - (100 * m.lag) / maxLag);
    return el("div", {
        class: ["node", "role-" + role, "health-" + m.health, m.this_node && "this-node"].filter(Boolean).join(" "),
        "data-node-id": m.id, "data-role": role, "data-health": m.health,
        title: m.error || "",
      },
      el("div", { class: "title" },
        el("span", { class: "id", title: "node " + m.id }, (role === "leader" ? "\u2605 " : "") + "node " + short(m.id)),
        el("span", { class: "badge " + role }, down ? "unreachable" : role.replaceAll("_", " "))),
      el("dl", {}, rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
      el("div", { class: "lagbar" }, el("i", { style: "width:" + (down ? 0 : pct) + "%" })),
      down && m.error ? el("div", { class: "err" }, m.error) : null);
  }));
}

// ---------------------------------------------------------------- recipes
function chip(text, sub, cls, title) {
  return el("span", { class: "chip " + (cls || ""), title: title || "" }, text, sub ? el("small", {}, " " + sub) : null);
}

async function refreshRecipes() {
  try {
    const [g, e, s] = await Promise.all([
      getJSON("/api/v1/groups"), getJSON("/api/v1/elections"), getJSON("/api/v1/services")]);
    $("groups-count").textContent = g.groups.length + (g.groups.length === 1 ? " group" : " groups");
    $("groups").replaceChildren(...(g.groups.length ? g.groups.map((grp) =>
      el("div", { class: "card", "data-group": grp.path },
        el("div", { class: "path mono" }, grp.path, el("span", { class: "muted" }, " \u00b7 " + grp.members.length + " members")),
        el("div", { class: "chips" }, grp.members.map((m) => {
          const j = m.json && typeof m.json === "object" ? m.json : null;
          const where = j && j.address ? j.address + (j.port ? ":" + j.port : "") : "";
          return chip(m.id, where, "", m.data || "");
        })))) : [el("div", { class: "empty" }, "no group has members")]));

    $("elections-count").textContent = e.elections.length + (e.elections.length === 1 ? " election" : " elections");
    $("elections").replaceChildren(...(e.elections.length ? e.elections.map((x) =>
      el("div", { class: "card", "data-election": x.path },
        el("div", { class: "path mono" }, x.path),
        el("div", {}, "leader: ", el("b", {}, x.leader || "none")),
        el("div", { class: "chips" }, x.candidates.map((c, i) =>
          chip((c.leader ? "\u2605 " : "#" + (i + 1) + " ") + (c.participant || c.node),
               "seq " + c.sequence, c.leader ? "lead" : "", c.node + " \u00b7 token " + c.czxid)))))
      : [el("div", { class: "empty" }, "no election has candidates")]));

    $("services-count").textContent = s.services.length + (s.services.length === 1 ? " service" : " services");
    $("services").replaceChildren(...(s.services.length ? s.services.map((svc) =>
      el("div", { class: "card", "data-service": svc.path },
        el("div", { class: "path" }, svc.name, el("span", { class: "muted mono" }, "  " + svc.base)),
        el("div", { class: "chips" }, svc.instances.map((i) =>
          chip(i.id, [i.address, i.port].filter((v) => v != null).join(":"), "", JSON.stringify(i.payload))))))
      : [el("div", { class: "empty" }, "no service has instances")]));
  } catch (err) {
    $("groups").replaceChildren(el("div", { class: "empty" }, "cannot read the recipes: " + err.message));
  }
}

// ---------------------------------------------------------------- znodes
let zpath = "/";
async function browse(path) {
  zpath = path;
  try {
    const z = await getJSON("/api/v1/znodes?path=" + encodeURIComponent(path) + "&limit=500");
    drawZnode(z);
  } catch (e) {
    if (path !== "/") return browse(parentOf(path));
    $("zdetail").replaceChildren(el("div", { class: "empty" }, e.message));
  }
}
const parentOf = (p) => (p.lastIndexOf("/") <= 0 ? "/" : p.slice(0, p.lastIndexOf("/")));
const joinPath = (p, c) => (p === "/" ? "/" + c : p + "/" + c);

function drawZnode(z) {
  $("zpath").textContent = z.path;
  const parts = z.path.split("/").filter(Boolean);
  const crumbs = [el("a", { onclick: () => browse("/") }, "/")];
  parts.forEach((p, i) => {
    const to = "/" + parts.slice(0, i + 1).join("/");
    crumbs.push(el("a", { onclick: () => browse(to) }, p), i + 1 < parts.length ? " / " : "");
  });
  $("crumbs").replaceChildren(...crumbs);
  $("zchildren").replaceChildren(...(z.children.length
    ? z.children.map((c) => el("li", { onclick: () => browse(joinPath(z.path, c)) }, c))
    : [el("li", { class: "muted" }, z.readable ? "(no children)" : "(hidden by the ACL)")]));
  const st = z.stat;
  const data = !z.readable ? "(the ACL does not let anyone read it; the admin token does)"
    : z.data_utf8 != null ? (z.data_utf8 === "" ? "(empty)" : z.data_utf8)
    : "base64: " + z.data_base64;
  $("zdetail").replaceChildren(
    el("div", {}, el("b", {}, z.kind), z.owner ? " owned by session " + z.owner : "",
       z.ttl_ms ? " ttl " + z.ttl_ms + " ms" : ""),
    el("pre", {}, data),
    el("table", {}, [
      ["version", st.version], ["children", z.children_total], ["czxid", "0x" + st.czxid.toString(16)],
      ["mzxid", "0x" + st.mzxid.toString(16)], ["created", st.ctime ? new Date(st.ctime).toLocaleString() : "-"],
      ["modified", st.mtime ? new Date(st.mtime).toLocaleString() : "-"],
      ["acl", z.acl.map((a) => a.scheme + ":" + a.id + ":" + a.perms).join(", ")],
    ].map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "mono" }, v)))));
}

// ---------------------------------------------------------------- timeline
const seen = new Set();
function describe(e) {
  const n = (id) => "node " + short(id);
  switch (e.kind) {
    case "leader_changed": return e.leader == null ? "no leader (term " + e.term + ")" : n(e.leader) + " leads (term " + e.term + ")";
    case "member_joined": return n(e.node) + " joined as " + (e.voter ? "voter" : "observer") + " (" + e.peer_addr + ")";
    case "member_role_changed": return n(e.node) + " is now " + (e.voter ? "a voter" : "an observer");
    case "member_left": return n(e.node) + " left the cluster";
    case "serving": return e.serving ? "serving clients" : "stopped serving clients";
    case "session_expired": return "session " + e.session + " expired (silent " + fmt.format(e.silent_ms) + " ms, timeout " + fmt.format(e.timeout_ms) + " ms, " + e.ephemerals + " ephemeral nodes go)";
    default: return e.kind.replaceAll("_", " ");
  }
}

function addEvent(e) {
  if (seen.has(e.seq)) return;
  seen.add(e.seq);
  const li = el("li", { class: "k-" + e.kind, "data-seq": e.seq, "data-kind": e.kind,
      "data-leader": e.kind === "leader_changed" && e.leader != null ? e.leader : null },
    el("div", { class: "when" }, timeOf(e.time_ms) + " \u00b7 #" + e.seq + " \u00b7 seen by node " + short(e.seen_by)),
    el("div", { class: "what" }, describe(e)),
    e.cause ? el("div", { class: "cause" }, e.cause) : null);
  const list = $("timeline");
  list.prepend(li);
  while (list.children.length > 300) list.lastChild.remove();
}

// ---------------------------------------------------------------- live
let pending = null;
function soon(all) {
  if (pending) { pending.all = pending.all || all; return; }
  pending = { all };
  setTimeout(() => {
    const p = pending; pending = null;
    refreshCluster();
    if (p.all) refreshRecipes();
  }, 150);
}

function connect() {
  const es = new EventSource("/api/v1/events/stream");
  const live = $("live");
  es.onopen = () => { live.dataset.state = "live"; $("live-text").textContent = "live"; };
  es.onerror = () => { live.dataset.state = "down"; $("live-text").textContent = "reconnecting"; };
  es.onmessage = (m) => {
    let e;
    try { e = parse(m.data); } catch { return; }
    if (e.kind === "gap") { soon(true); return; }
    addEvent(e);
    soon(e.kind.startsWith("session") || e.kind.startsWith("member"));
  };
}

refreshCluster();
refreshRecipes();
browse("/");
connect();
// The stream tells of what this node sees; a member's lag and reachability, and the members of
// groups (plain znode changes), are polled as well.
setInterval(refreshCluster, 2000);
setInterval(refreshRecipes, 2000);
setInterval(() => browse(zpath), 5000);
