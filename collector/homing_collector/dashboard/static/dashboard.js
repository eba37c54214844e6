/* The Homing dashboard: signs in with an admin token, reads the analytics API, draws.

   The token is kept in this tab's sessionStorage and sent as `Authorization: Bearer` to
   this collector only. A 401 or 403 signs out. The URL carries the application id, the
   date range and the funnel's steps, so a view can be bookmarked (never the token). */
"use strict";

(function () {
  const C = window.HomingCharts;
  const $ = (id) => document.getElementById(id);
  const chart = (name) => document.querySelector(`[data-chart="${name}"]`);
  const STORE = window.sessionStorage;

  const state = {
    app: "", token: "", tz: "UTC", start: "", end: "",
    by: "users", eventType: "", breakdown: "", include: "", funnel: [], dimension: "country",
    generation: 0, types: [], campaign: "", campaigns: [],
  };
  const redraw = {}; // chart name -> draws it again from its last data (on resize)

  class SignedOut extends Error {}

  // -- time ---------------------------------------------------------------------------

  function browserZone() {
    // The API keeps rollups per UTC hour: zones off by half an hour fall back to UTC.
    try {
      const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
      if (zone && new Date().getTimezoneOffset() % 60 === 0) return zone;
    } catch (e) { /* an old browser: UTC */ }
    return "UTC";
  }

  function today(tz) {
    const parts = new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" }).formatToParts(new Date());
    const get = (type) => parts.find((p) => p.type === type).value;
    return `${get("year")}-${get("month")}-${get("day")}`;
  }

  function daysBetween(start, end) {
    const out = [];
    for (let d = start; d <= end && out.length < 400; d = C.addDays(d, 1)) out.push(d);
    return out;
  }

  // -- the API ------------------------------------------------------------------------

  async function api(path, params) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params || {})) {
      for (const v of [].concat(value)) if (v !== "" && v != null) query.append(key, v);
    }
    const url = `/v1/apps/${encodeURIComponent(state.app)}${path}` + (query.toString() ? "?" + query : "");
    let response;
    try {
      response = await fetch(url, { headers: { Authorization: "Bearer " + state.token, Accept: "application/json" }, cache: "no-store" });
    } catch (e) {
      throw new Error("The collector cannot be reached. Is it running?");
    }
    let body = null;
    try { body = await response.json(); } catch (e) { /* not JSON */ }
    if (response.status === 401 || response.status === 403) {
      signOut((body && body.Message) || "Your token was refused. Sign in again.");
      throw new SignedOut();
    }
    if (!response.ok) {
      const message = (body && body.Message) || `The collector answered ${response.status}.`;
      throw new Error(response.status === 404 && path.startsWith("/analytics") && !body
        ? "This collector does not serve analytics." : message);
    }
    return body;
  }

  function range() {
    return { start: state.start, end: state.end, tz: state.tz, by: state.by };
  }

  // -- sign-in ------------------------------------------------------------------------

  function showSignIn(message) {
    $("app").hidden = true;
    $("signin").hidden = false;
    $("signin-app").value = state.app || "";
    $("signin-token").value = "";
    const error = $("signin-error");
    error.hidden = !message;
    error.textContent = message || "";
    (state.app ? $("signin-token") : $("signin-app")).focus();
  }

  function signOut(message) {
    STORE.removeItem("homing.token");
    STORE.removeItem("homing.app");
    state.token = "";
    state.generation++;
    showSignIn(message);
  }

  async function signIn(app, token) {
    state.app = app.trim();
    state.token = token.trim();
    const response = await fetch(`/v1/apps/${encodeURIComponent(state.app)}`, {
      headers: { Authorization: "Bearer " + state.token, Accept: "application/json" },
      cache: "no-store",
    }).catch(() => null);
    if (!response) throw new Error("The collector cannot be reached. Is it running?");
    const body = await response.json().catch(() => ({}));
    if (response.status === 404) throw new Error(`There is no application ${state.app}.`);
    if (!response.ok) throw new Error(body.Message || `The collector answered ${response.status}.`);
    if (state.token.startsWith("hm_ingest_")) {
      throw new Error("That is an ingest token. The dashboard needs the application's admin token.");
    }
    STORE.setItem("homing.token", state.token);
    STORE.setItem("homing.app", state.app);
    $("app-name").textContent = body.Name || "Application";
    $("app-id").textContent = state.app;
    document.title = `${body.Name || "Application"} · Homing`;
    $("signin").hidden = true;
    $("app").hidden = false;
    refresh();
  }

  // -- URL state ----------------------------------------------------------------------

  function readUrl() {
    const q = new URLSearchParams(location.search);
    state.app = q.get("app") || STORE.getItem("homing.app") || "";
    const iso = /^\d{4}-\d{2}-\d{2}$/;
    state.end = iso.test(q.get("end") || "") ? q.get("end") : today(state.tz);
    state.start = iso.test(q.get("start") || "") ? q.get("start") : C.addDays(state.end, -29);
    if (state.start > state.end) state.start = C.addDays(state.end, -29);
    if (q.get("by") === "endpoints") state.by = "endpoints";
    const steps = q.get("funnel");
    if (steps) state.funnel = steps.split(",").map((s) => s.trim()).filter(Boolean);
  }

  function writeUrl() {
    const q = new URLSearchParams();
    if (state.app) q.set("app", state.app);
    q.set("start", state.start);
    q.set("end", state.end);
    if (state.by !== "users") q.set("by", state.by);
    if (state.funnel.length) q.set("funnel", state.funnel.join(","));
    history.replaceState(null, "", `${location.pathname}?${q}`);
  }

  // -- loading everything -------------------------------------------------------------

  function refresh() {
    const generation = ++state.generation;
    writeUrl();
    $("range-start").value = state.start;
    $("range-end").value = state.end;
    $("tz").textContent = state.tz;
    const days = daysBetween(state.start, state.end).length;
    $("range-label").textContent = `${C.fmt.longDay(state.start)} to ${C.fmt.longDay(state.end)}, ${days} days.`;
    for (const button of document.querySelectorAll(".presets button")) {
      button.classList.toggle("active", Number(button.dataset.days) === days && state.end === today(state.tz));
    }
    for (const button of document.querySelectorAll("#count-by button")) {
      button.classList.toggle("active", button.dataset.by === state.by);
    }
    const noun = state.by === "users" ? "users" : "devices";
    for (const label of document.querySelectorAll(".kpi-label[data-label]")) {
      label.textContent = `${label.dataset.label} ${noun}`;
    }
    $("banner").hidden = true;
    document.querySelectorAll(".chart").forEach((host) => C.loading(host));
    const jobs = [
      section(generation, ["active-users", "sticky-factor", "sessions"], loadUsage),
      section(generation, ["retention"], loadRetention),
      section(generation, ["events", "event-trend", "event-breakdown"], loadEvents).then(() =>
        section(generation, ["funnel"], loadFunnel)),
      section(generation, ["revenue"], loadRevenue),
      section(generation, ["platforms", "demographics"], loadDemographics),
      section(generation, ["campaigns"], loadCampaigns).then(() =>
        section(generation, ["campaign-treatments", "campaign-hours"], loadCampaign)),
    ];
    return Promise.all(jobs);
  }

  /* Runs one section's loader; marks its charts with the range they show, or the error.
     Only the latest load of a section draws: an older answer that comes late is dropped. */
  const sequence = {};
  async function section(generation, names, load) {
    const key = names[0];
    const ticket = { generation, key, n: (sequence[key] = (sequence[key] || 0) + 1) };
    try {
      await load(ticket);
      if (stale(ticket)) return;
      for (const name of names) mark(chart(name));
    } catch (error) {
      if (error instanceof SignedOut || stale(ticket)) return;
      for (const name of names) {
        C.failed(chart(name), error.message);
        mark(chart(name));
      }
      const banner = $("banner");
      banner.hidden = false;
      banner.textContent = error.message;
    }
  }

  // What a chart shows, for tests and for anyone reading the page's source.
  function mark(host) {
    host.dataset.range = `${state.start}..${state.end}`;
    host.dataset.by = state.by;
  }

  function stale(ticket) {
    return ticket.generation !== state.generation || sequence[ticket.key] !== ticket.n;
  }

  function draw(name, fn) {
    redraw[name] = fn;
    fn();
  }

  // -- usage --------------------------------------------------------------------------

  async function loadUsage(ticket) {
    const usage = await api("/analytics/usage", range());
    if (stale(ticket)) return;
    const s = usage.summary || {};
    const days = usage.days || [];
    const dates = days.map((d) => d.date);
    $("kpi-dau").textContent = C.fmt.compact(s.avg_daily_active != null ? Math.round(s.avg_daily_active) : null);
    $("kpi-mau").textContent = C.fmt.compact(s.mau);
    $("kpi-sticky").textContent = C.fmt.pct(s.sticky_factor, 1);
    $("kpi-sessions").textContent = C.fmt.compact(s.sessions);
    $("kpi-sessions-note").textContent = s.sessions_per_active != null ? `${C.fmt.dec(s.sessions_per_active)} per active user a day` : "";
    $("kpi-mau-note").textContent = `30 days to ${C.fmt.day(state.end)}`;

    const active = [
      { name: "Daily active", values: days.map((d) => d.active), color: C.PALETTE[0], area: true },
      { name: "Weekly active", values: days.map((d) => d.wau), color: C.PALETTE[1] },
      { name: "Monthly active", values: days.map((d) => d.mau), color: C.PALETTE[5], dashed: true },
    ];
    legend($("legend-active"), active);
    draw("active-users", () => C.line(chart("active-users"), { dates, series: active, format: C.fmt.compact, tooltipFormat: C.fmt.int }));
    draw("sticky-factor", () => C.line(chart("sticky-factor"), {
      dates,
      series: [{ name: "Sticky factor", values: days.map((d) => d.sticky_factor), color: C.PALETTE[2], area: true }],
      format: (v) => C.fmt.pct(v, 0), tooltipFormat: (v) => `${C.fmt.ratio(v)} (${C.fmt.pct(v, 1)})`,
    }));
    legend($("legend-sessions"), [{ name: "Sessions started", color: C.PALETTE[4] }]);
    draw("sessions", () => C.bars(chart("sessions"), {
      dates, values: days.map((d) => d.sessions), name: "Sessions", color: C.PALETTE[4],
      tooltipFormat: C.fmt.int,
      extra: (i) => [
        { name: "per active user", value: C.fmt.dec(days[i].sessions_per_active) },
        { name: "average length", value: C.fmt.duration(days[i].avg_session_seconds) },
      ],
    }));
    const stats = $("session-stats");
    stats.replaceChildren();
    for (const [label, value] of [
      ["Average length", C.fmt.duration(s.avg_session_seconds)],
      ["Median length", C.fmt.duration(s.median_session_seconds)],
      ["Sessions per active user", C.fmt.dec(s.sessions_per_active)],
      ["New users", C.fmt.int(s.new)],
    ]) {
      const row = document.createElement("div");
      const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = label;
      dd.textContent = value;
      row.append(dt, dd);
      stats.appendChild(row);
    }
  }

  function legend(host, series) {
    host.replaceChildren();
    for (const s of series) {
      const item = document.createElement("span");
      item.className = "legend-item";
      const swatch = document.createElement("span");
      swatch.className = "swatch" + (s.dashed ? " dashed" : "");
      swatch.style.background = s.color;
      item.append(swatch, document.createTextNode(s.name));
      host.appendChild(item);
    }
  }

  // -- retention ----------------------------------------------------------------------

  async function loadRetention(ticket) {
    const retention = await api("/analytics/retention", range());
    if (stale(ticket)) return;
    const rates = retention.rates || {};
    $("kpi-d7").textContent = C.fmt.pct(rates.d7, 1);
    $("kpi-retention-note").textContent = `day 14 ${C.fmt.pct(rates.d14, 0)} · day 30 ${C.fmt.pct(rates.d30, 0)}`;
    // No column for day offsets past the range: they have no data yet.
    const offsets = Math.max(1, Math.min(30, daysBetween(state.start, state.end).length - 1));
    draw("retention", () => C.heatmap(chart("retention"), { cohorts: retention.cohorts || [], lastDay: state.end, offsets }));
  }

  // -- events -------------------------------------------------------------------------

  function eventFilters() {
    const params = { ...range() };
    if (state.include) params.include = state.include;
    return params;
  }

  async function loadEvents(ticket) {
    const all = await api("/analytics/events", eventFilters());
    if (stale(ticket)) return;
    state.types = (all.types || []).map((t) => t.event_type);
    const select = $("events-type");
    const keep = state.eventType;
    select.replaceChildren(new Option("All events", ""));
    for (const t of all.types || []) select.appendChild(new Option(`${t.event_type} (${C.fmt.compact(t.count)})`, t.event_type));
    if (keep && !state.types.includes(keep)) state.eventType = "";
    select.value = state.eventType;
    const total = (all.types || []).reduce((sum, t) => sum + t.count, 0);
    draw("events", () => C.hbars(chart("events"), {
      rows: (all.types || []).map((t) => ({ label: t.event_type, value: t.count })),
      total, selected: state.eventType, limit: 12,
      onSelect: (type) => { state.eventType = state.eventType === type ? "" : type; select.value = state.eventType; reloadEvents(); },
    }));
    await loadEventDetail(ticket, all);
  }

  async function loadEventDetail(ticket, all) {
    const dates = daysBetween(state.start, state.end);
    const params = eventFilters();
    if (state.eventType) params.event_type = state.eventType;
    if (state.breakdown) params.breakdown = state.breakdown;
    const detail = state.eventType || state.breakdown ? await api("/analytics/events", params) : all;
    if (stale(ticket)) return;
    // By default the custom events people do most; the SDK's own (_session.*, ...) are
    // in the list beside, and drawn when chosen.
    const types = (all.types || []).map((t) => t.event_type);
    const custom = types.filter((t) => !t.startsWith("_"));
    const shown = state.eventType ? [state.eventType] : (custom.length ? custom : types).slice(0, 5);
    const series = shown.map((type, k) => {
      const byDay = new Map();
      for (const row of detail.series || []) if (row.event_type === type) byDay.set(row.date, row.count);
      return { name: type, values: dates.map((d) => byDay.get(d) || 0), color: C.PALETTE[k % C.PALETTE.length] };
    });
    $("event-trend-title").textContent = state.eventType ? `${state.eventType} per day` : "Top custom events per day";
    legend($("legend-events"), series);
    draw("event-trend", () => C.line(chart("event-trend"), { dates, series, tooltipFormat: C.fmt.int, height: 200 }));

    const breakdownHost = chart("event-breakdown");
    breakdownHost.hidden = !state.breakdown;
    $("breakdown-title").hidden = !state.breakdown;
    if (state.breakdown) {
      $("breakdown-title").textContent = `By ${state.breakdown}` + (state.eventType ? ` (${state.eventType})` : "");
      const rows = (detail.breakdown || []).map((r) => ({ label: r.value == null ? "(not set)" : String(r.value), value: r.count }));
      const total = rows.reduce((sum, r) => sum + r.value, 0);
      draw("event-breakdown", () => C.hbars(breakdownHost, { rows, total, color: C.PALETTE[1] }));
    } else {
      delete redraw["event-breakdown"];
      C.empty(breakdownHost, "Choose an attribute to break down by.");
    }
    metricsTable(state.eventType ? detail.metrics || [] : []);
  }

  function metricsTable(metrics) {
    const table = $("event-metrics");
    table.replaceChildren();
    table.hidden = !metrics.length;
    if (!metrics.length) return;
    const head = table.createTHead().insertRow();
    for (const title of ["Metric", "Min", "Average", "Max", "Sum", "Per session"]) {
      const th = document.createElement("th");
      th.textContent = title;
      head.appendChild(th);
    }
    const body = table.createTBody();
    for (const m of metrics) {
      const row = body.insertRow();
      for (const value of [m.name, C.fmt.dec(m.min), C.fmt.dec(m.avg), C.fmt.dec(m.max), C.fmt.dec(m.sum), C.fmt.dec(m.per_session_avg)]) {
        row.insertCell().textContent = value;
      }
    }
  }

  function reloadEvents() {
    const generation = state.generation;
    ["events", "event-trend", "event-breakdown"].forEach((name) => C.loading(chart(name)));
    return section(generation, ["events", "event-trend", "event-breakdown"], loadEvents);
  }

  // -- funnel -------------------------------------------------------------------------

  function defaultFunnel() {
    const saved = localStorage.getItem(`homing.funnel.${state.app}`);
    if (saved) return saved.split(",").filter(Boolean);
    // The custom events people do most, in that order: a first guess to edit.
    return state.types.filter((t) => !t.startsWith("_session.") && !t.startsWith("_campaign.")).slice(0, 4);
  }

  async function loadFunnel(ticket) {
    if (!state.funnel.length) state.funnel = defaultFunnel();
    $("funnel-steps").value = state.funnel.join(", ");
    if (state.funnel.length < 2) {
      delete redraw.funnel;
      C.empty(chart("funnel"), "Name two or more events, in order, to see how many go from one to the next.");
      return;
    }
    const funnel = await api("/analytics/funnel", { ...range(), step: state.funnel });
    if (stale(ticket)) return;
    draw("funnel", () => C.funnel(chart("funnel"), { steps: funnel.steps || [] }));
  }

  // -- revenue ------------------------------------------------------------------------

  async function loadRevenue(ticket) {
    const revenue = await api("/analytics/revenue", range());
    if (stale(ticket)) return;
    const totals = Object.entries(revenue.revenue || {}).sort((a, b) => b[1] - a[1]);
    const [main, amount] = totals[0] || ["USD", 0];
    $("kpi-revenue").textContent = totals.length ? C.fmt.money(amount, main) : "–";
    const others = totals.slice(1).map(([cur, v]) => C.fmt.money(v, cur));
    $("kpi-revenue-note").textContent = `${C.fmt.int(revenue.purchases || 0)} purchases` + (others.length ? ` · ${others.join(" · ")}` : "");
    const perUser = (revenue.revenue_per_user || {})[main];
    $("revenue-note").textContent = perUser != null ? `${C.fmt.money(perUser, main)} per active user` : "";
    const dates = daysBetween(state.start, state.end);
    const byDay = new Map((revenue.days || []).map((d) => [d.date, d.revenue || {}]));
    // A running total per currency: daily amounts of a few purchases jump about too much
    // to read at a glance.
    const series = totals.slice(0, 4).map(([cur], k) => {
      let sum = 0;
      return {
        name: cur, color: [C.PALETTE[6], C.PALETTE[4], C.PALETTE[2], C.PALETTE[3]][k],
        values: dates.map((d) => (sum += (byDay.get(d) || {})[cur] || 0)), area: k === 0,
      };
    });
    legend($("legend-revenue"), series);
    if (!series.length) {
      delete redraw.revenue;
      C.empty(chart("revenue"), "No purchases in these days.");
      return;
    }
    draw("revenue", () => C.line(chart("revenue"), {
      dates, series, format: C.fmt.compact,
      tooltipFormat: (v) => C.fmt.dec(v, 2),
    }));
  }

  // -- demographics -------------------------------------------------------------------

  async function loadDemographics(ticket) {
    const [platforms, audience] = await Promise.all([
      api("/analytics/demographics", { dimension: "platform" }),
      api("/analytics/demographics", { dimension: state.dimension }),
    ]);
    if (stale(ticket)) return;
    draw("platforms", () => C.donut(chart("platforms"), {
      rows: (platforms.rows || []).map((r) => ({ label: r.value == null ? "(not set)" : r.value, value: r.endpoints })),
      label: "devices",
    }));
    drawAudience(audience);
  }

  function drawAudience(audience) {
    const rows = (audience.rows || []).map((r) => ({ label: r.value == null ? "(not set)" : String(r.value), value: r.endpoints }));
    const total = rows.reduce((sum, r) => sum + r.value, 0);
    draw("demographics", () => C.hbars(chart("demographics"), { rows, total, color: C.PALETTE[1], limit: 10 }));
  }

  async function switchDimension(dimension) {
    state.dimension = dimension;
    for (const button of document.querySelectorAll("#demographics-tabs button")) {
      button.classList.toggle("active", button.dataset.dimension === dimension);
      button.setAttribute("aria-selected", String(button.dataset.dimension === dimension));
    }
    const generation = state.generation;
    C.loading(chart("demographics"));
    await section(generation, ["demographics"], async (ticket) => {
      const audience = await api("/analytics/demographics", { dimension });
      if (!stale(ticket)) drawAudience(audience);
    });
  }

  // -- campaigns ----------------------------------------------------------------------

  async function loadCampaigns(ticket) {
    const c = await api("/analytics/campaigns", range());
    if (stale(ticket)) return;
    const kpis = $("campaign-kpis");
    kpis.replaceChildren();
    for (const [label, value, note] of [
      ["Sent", C.fmt.int(c.sent), ""],
      ["Delivered", C.fmt.int(c.delivered), `${C.fmt.pct(c.delivery_rate, 1)} of sent`],
      ["Opened", C.fmt.int(c.opened), `${C.fmt.pct(c.open_rate, 1)} of delivered`],
      ["Sessions after an open", C.fmt.int(c.sessions_after_open), ""],
    ]) {
      const box = document.createElement("div");
      box.className = "mini-kpi";
      const l = document.createElement("span"), v = document.createElement("strong"), n = document.createElement("span");
      l.textContent = label;
      v.textContent = value;
      n.textContent = note;
      n.className = "muted small";
      box.append(l, v, n);
      kpis.appendChild(box);
    }
    const hint = $("campaign-hint");
    hint.hidden = !(c.sent === 0 && c.opened > 0);
    hint.textContent = "Opens are counted from the apps' _campaign.opened_notification events; " +
      "sent and delivered come from the collector's push gateway, which sent nothing in these days.";
    draw("campaigns", () => C.campaigns(chart("campaigns"), { rows: c.campaigns || [] }));
    state.campaigns = (c.campaigns || []).map((r) => r.campaign_id);
  }

  // One campaign (the tab chosen, else the first of the range), per treatment and by hour.
  async function loadCampaign(ticket) {
    const ids = state.campaigns.slice(0, 12);
    if (!ids.includes(state.campaign)) state.campaign = ids[0] || "";
    const tabs = $("campaign-tabs");
    if (!state.campaign) {
      tabs.replaceChildren();
      for (const name of ["campaign-treatments", "campaign-hours"]) chart(name).classList.remove("is-loading");
      C.empty(chart("campaign-treatments"), "No push campaigns in these days.");
      C.empty(chart("campaign-hours"), "No campaign sessions in these days.");
      return;
    }
    const [view, stored] = await Promise.all([
      api(`/analytics/campaigns/${encodeURIComponent(state.campaign)}`, range()),
      api("/campaigns", { "page-size": 100 }),
    ]);
    if (stale(ticket)) return;
    const names = Object.fromEntries((stored.Item || []).map((c) => [c.Id, c.Name]));
    // The tabs change only once the answers are in, so that they never vanish meanwhile.
    tabs.replaceChildren();
    for (const id of ids) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.campaign = id;
      button.textContent = names[id] || id.slice(0, 24);
      button.classList.toggle("active", id === state.campaign);
      button.addEventListener("click", () => switchCampaign(id));
      tabs.appendChild(button);
    }
    draw("campaign-treatments", () => C.treatments(chart("campaign-treatments"), { campaign: view }));
    const hours = view.sessions_by_hour || [];
    const label = (h) => `${h.slice(5, 10)} ${h.slice(11, 16)}`;
    draw("campaign-hours", () => C.bars(chart("campaign-hours"), {
      dates: hours.map((h) => h.hour), values: hours.map((h) => h.sessions), name: "Sessions",
      color: C.PALETTE[1], tick: label, title: label, height: 180,
    }));
  }

  async function switchCampaign(id) {
    state.campaign = id;
    C.loading(chart("campaign-treatments"));
    C.loading(chart("campaign-hours"));
    await section(state.generation, ["campaign-treatments", "campaign-hours"], loadCampaign);
  }

  // -- wiring -------------------------------------------------------------------------

  function setRange(start, end) {
    if (!start || !end) return;
    if (start > end) [start, end] = [end, start];
    state.start = start;
    state.end = end;
    refresh();
  }

  function start() {
    state.tz = browserZone();
    readUrl();
    $("signin-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = $("signin-submit");
      button.disabled = true;
      $("signin-error").hidden = true;
      try {
        await signIn($("signin-app").value, $("signin-token").value);
      } catch (error) {
        showSignIn(error.message);
      } finally {
        button.disabled = false;
      }
    });
    $("signout").addEventListener("click", () => signOut(""));
    $("range").addEventListener("submit", (event) => {
      event.preventDefault();
      setRange($("range-start").value, $("range-end").value);
    });
    for (const button of document.querySelectorAll(".presets button")) {
      button.addEventListener("click", () => {
        const end = today(state.tz);
        setRange(C.addDays(end, -(Number(button.dataset.days) - 1)), end);
      });
    }
    // Choosing an event applies the whole form, as the button does.
    const applyEventFilters = () => {
      state.eventType = $("events-type").value;
      state.breakdown = $("events-breakdown").value.trim();
      state.include = $("events-include").value.trim();
      reloadEvents();
    };
    $("events-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      applyEventFilters();
    });
    $("events-type").addEventListener("change", applyEventFilters);
    $("funnel-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.funnel = $("funnel-steps").value.split(/[,>→]+/).map((s) => s.trim()).filter(Boolean);
      localStorage.setItem(`homing.funnel.${state.app}`, state.funnel.join(","));
      writeUrl();
      C.loading(chart("funnel"));
      section(state.generation, ["funnel"], loadFunnel);
    });
    for (const button of document.querySelectorAll("#count-by button")) {
      button.addEventListener("click", () => {
        if (state.by === button.dataset.by) return;
        state.by = button.dataset.by;
        refresh();
      });
    }
    for (const button of document.querySelectorAll("#demographics-tabs button")) {
      button.addEventListener("click", () => switchDimension(button.dataset.dimension));
    }
    let resizing = 0;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => Object.values(redraw).forEach((fn) => fn()), 150);
    });

    const token = STORE.getItem("homing.token");
    if (token && state.app && STORE.getItem("homing.app") === state.app) {
      signIn(state.app, token).catch((error) => showSignIn(error.message));
    } else {
      showSignIn("");
    }
  }

  start();
})();
