/* Small chart functions for the Homing dashboard: SVG lines and bars, HTML bars, a
   heatmap, a funnel and a donut. No library, nothing fetched from elsewhere.

   Each function draws into a `.chart` element and marks it for tests and for styling:
   data-state is "ready" (with data-points, the number of values drawn) or "empty". */
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#4f46e5", "#0d9488", "#f59e0b", "#e11d48", "#0284c7", "#7c3aed",
                   "#65a30d", "#db2777", "#64748b"];

  const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const compactFormat = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
  const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
  const longDayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", month: "short", day: "numeric", year: "numeric", timeZone: "UTC" });

  const fmt = {
    int: (v) => (v == null || !isFinite(v) ? "–" : numberFormat.format(v)),
    compact: (v) => (v == null || !isFinite(v) ? "–" : Math.abs(v) >= 10000 ? compactFormat.format(v) : numberFormat.format(v)),
    pct: (v, digits = 1) => (v == null || !isFinite(v) ? "–" : (v * 100).toFixed(digits) + "%"),
    ratio: (v) => (v == null || !isFinite(v) ? "–" : v.toFixed(2)),
    dec: (v, digits = 2) => (v == null || !isFinite(v) ? "–" : Number(v).toLocaleString(undefined, { maximumFractionDigits: digits })),
    duration: (s) => {
      if (s == null || !isFinite(s)) return "–";
      s = Math.round(s);
      if (s < 60) return s + " s";
      const m = Math.floor(s / 60), r = s % 60;
      if (m < 60) return m + " min " + (r ? r + " s" : "");
      return Math.floor(m / 60) + " h " + (m % 60) + " min";
    },
    money: (v, currency) => {
      if (v == null || !isFinite(v)) return "–";
      try {
        return new Intl.NumberFormat(undefined, { style: "currency", currency, maximumFractionDigits: v >= 1000 ? 0 : 2 }).format(v);
      } catch (e) {
        return numberFormat.format(v) + " " + currency;
      }
    },
    day: (d) => dayFormat.format(new Date(d + "T00:00:00Z")),
    longDay: (d) => longDayFormat.format(new Date(d + "T00:00:00Z")),
  };

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    if (text != null) node.textContent = text;
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function reset(host) {
    host.replaceChildren();
    host.removeAttribute("data-points");
  }

  function ready(host, points) {
    host.dataset.points = String(points);
    host.dataset.state = points > 0 ? "ready" : "empty";
  }

  function empty(host, message) {
    reset(host);
    host.appendChild(el("div", { class: "empty" }, message || "No data for these days yet."));
    host.dataset.points = "0";
    host.dataset.state = "empty";
  }

  function loading(host) {
    host.dataset.state = "loading";
    host.classList.add("is-loading");
  }

  function failed(host, message) {
    reset(host);
    host.classList.remove("is-loading");
    host.appendChild(el("div", { class: "empty error" }, message));
    host.dataset.state = "error";
  }

  // -- tooltip ------------------------------------------------------------------------

  const tip = {
    node: null,
    show(event, title, rows) {
      const node = this.node || (this.node = document.getElementById("tooltip"));
      if (!node) return;
      node.replaceChildren(el("div", { class: "tooltip-title" }, title));
      for (const row of rows) {
        const line = el("div", { class: "tooltip-row" });
        if (row.color) {
          const swatch = el("span", { class: "swatch" });
          swatch.style.background = row.color;
          line.appendChild(swatch);
        }
        line.appendChild(el("span", { class: "tooltip-name" }, row.name));
        line.appendChild(el("span", { class: "tooltip-value" }, row.value));
        node.appendChild(line);
      }
      node.hidden = false;
      const pad = 14, box = node.getBoundingClientRect();
      let x = event.clientX + pad, y = event.clientY + pad;
      if (x + box.width > window.innerWidth - 8) x = event.clientX - box.width - pad;
      if (y + box.height > window.innerHeight - 8) y = event.clientY - box.height - pad;
      node.style.left = Math.max(4, x) + "px";
      node.style.top = Math.max(4, y) + "px";
    },
    hide() {
      if (this.node) this.node.hidden = true;
    },
  };

  // -- scales -------------------------------------------------------------------------

  function niceTicks(max, count) {
    if (!(max > 0)) return [0, 1];
    const raw = max / count;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
    const ticks = [];
    for (let v = 0; v <= max + step * 0.999; v += step) ticks.push(+v.toPrecision(12));
    if (ticks[ticks.length - 1] < max) ticks.push(ticks[ticks.length - 1] + step);
    return ticks;
  }

  function frame(host, height) {
    const width = Math.max(280, host.clientWidth || 600);
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", height, class: "plot", role: "img" });
    return { root, width, height };
  }

  function xLabels(g, dates, x, y0, maxLabels, tick = fmt.day) {
    const every = Math.max(1, Math.ceil(dates.length / maxLabels));
    dates.forEach((d, i) => {
      if ((dates.length - 1 - i) % every !== 0) return;
      const t = svg("text", { x: x(i), y: y0 + 18, "text-anchor": "middle", class: "tick" });
      t.textContent = tick(d);
      g.appendChild(t);
    });
  }

  function yAxis(g, ticks, y, left, right, format) {
    for (const v of ticks) {
      g.appendChild(svg("line", { x1: left, x2: right, y1: y(v), y2: y(v), class: v === 0 ? "axis" : "grid" }));
      const t = svg("text", { x: left - 8, y: y(v) + 4, "text-anchor": "end", class: "tick" });
      t.textContent = format(v);
      g.appendChild(t);
    }
  }

  // -- line chart ---------------------------------------------------------------------

  /* dates: ["2026-11-01", ...]; series: [{name, values, color?, area?}] */
  function line(host, { dates, series, format = fmt.compact, tooltipFormat, height = 220, yMax }) {
    reset(host);
    host.classList.remove("is-loading");
    const values = series.flatMap((s) => s.values).filter((v) => v != null && isFinite(v));
    // Nothing but zeros is no data either: say so rather than draw a flat line.
    if (!dates.length || !values.some((v) => v !== 0)) return empty(host);
    const { root, width } = frame(host, height);
    const m = { left: 48, right: 14, top: 12, bottom: 28 };
    const max = yMax != null ? yMax : Math.max(...values);
    const ticks = niceTicks(max, 4);
    const top = ticks[ticks.length - 1] || 1;
    const n = dates.length;
    const x = (i) => m.left + (n === 1 ? (width - m.left - m.right) / 2 : (i * (width - m.left - m.right)) / (n - 1));
    const y = (v) => height - m.bottom - (v / top) * (height - m.top - m.bottom);
    const g = svg("g");
    yAxis(g, ticks, y, m.left, width - m.right, format);
    xLabels(g, dates, x, height - m.bottom, Math.max(2, Math.floor(width / 90)));
    root.appendChild(g);

    series.forEach((s, k) => {
      const color = s.color || PALETTE[k % PALETTE.length];
      let d = "", area = "", open = false, first = 0, last = 0;
      s.values.forEach((v, i) => {
        if (v == null || !isFinite(v)) { open = false; return; }
        d += (open ? "L" : "M") + x(i).toFixed(1) + "," + y(v).toFixed(1);
        if (!open) first = i;
        last = i;
        open = true;
      });
      if (s.area) {
        area = d + `L${x(last).toFixed(1)},${y(0)}L${x(first).toFixed(1)},${y(0)}Z`;
        root.appendChild(svg("path", { d: area, fill: color, "fill-opacity": "0.10", stroke: "none" }));
      }
      root.appendChild(svg("path", { d, fill: "none", stroke: color, "stroke-width": s.width || 2.25, "stroke-linejoin": "round", "stroke-linecap": "round", ...(s.dashed ? { "stroke-dasharray": "5 4" } : {}) }));
      if (n <= 45) {
        s.values.forEach((v, i) => {
          if (v != null && isFinite(v)) root.appendChild(svg("circle", { cx: x(i), cy: y(v), r: 2.4, fill: color }));
        });
      }
    });

    const cross = svg("line", { y1: m.top, y2: height - m.bottom, class: "crosshair", visibility: "hidden" });
    root.appendChild(cross);
    const dots = series.map((s, k) => {
      const dot = svg("circle", { r: 4.5, fill: "#fff", stroke: s.color || PALETTE[k % PALETTE.length], "stroke-width": 2.5, visibility: "hidden" });
      root.appendChild(dot);
      return dot;
    });
    const overlay = svg("rect", { x: m.left, y: m.top, width: width - m.left - m.right, height: height - m.top - m.bottom, fill: "transparent" });
    overlay.addEventListener("mousemove", (event) => {
      const box = root.getBoundingClientRect();
      const px = ((event.clientX - box.left) / box.width) * width;
      const i = Math.max(0, Math.min(n - 1, Math.round(((px - m.left) / (width - m.left - m.right)) * (n - 1))));
      cross.setAttribute("x1", x(i));
      cross.setAttribute("x2", x(i));
      cross.setAttribute("visibility", "visible");
      series.forEach((s, k) => {
        const v = s.values[i];
        if (v == null || !isFinite(v)) { dots[k].setAttribute("visibility", "hidden"); return; }
        dots[k].setAttribute("cx", x(i));
        dots[k].setAttribute("cy", y(v));
        dots[k].setAttribute("visibility", "visible");
      });
      tip.show(event, fmt.longDay(dates[i]), series.map((s, k) => ({
        name: s.name, color: s.color || PALETTE[k % PALETTE.length], value: (tooltipFormat || format)(s.values[i]),
      })));
    });
    overlay.addEventListener("mouseleave", () => {
      cross.setAttribute("visibility", "hidden");
      dots.forEach((d) => d.setAttribute("visibility", "hidden"));
      tip.hide();
    });
    root.appendChild(overlay);
    host.appendChild(root);
    ready(host, values.length);
  }

  // -- vertical bars over days --------------------------------------------------------

  /* dates are days ("2026-11-01"), or any labels with `tick` and `title` to show them. */
  function bars(host, { dates, values, name, color = PALETTE[0], format = fmt.compact, tooltipFormat, extra, height = 220, tick = fmt.day, title = fmt.longDay }) {
    reset(host);
    host.classList.remove("is-loading");
    const drawn = values.filter((v) => v != null && isFinite(v));
    if (!dates.length || !drawn.length || Math.max(...drawn) <= 0) return empty(host);
    const { root, width } = frame(host, height);
    const m = { left: 48, right: 14, top: 12, bottom: 28 };
    const ticks = niceTicks(Math.max(...drawn), 4);
    const top = ticks[ticks.length - 1] || 1;
    const n = dates.length;
    const slot = (width - m.left - m.right) / n;
    const x = (i) => m.left + slot * i + slot / 2;
    const y = (v) => height - m.bottom - (v / top) * (height - m.top - m.bottom);
    const g = svg("g");
    yAxis(g, ticks, y, m.left, width - m.right, format);
    xLabels(g, dates, x, height - m.bottom, Math.max(2, Math.floor(width / 90)), tick);
    root.appendChild(g);
    const barWidth = Math.max(1.5, Math.min(28, slot * 0.72));
    values.forEach((v, i) => {
      if (v == null || !isFinite(v)) return;
      const bar = svg("rect", { x: x(i) - barWidth / 2, y: y(v), width: barWidth, height: Math.max(0, y(0) - y(v)), rx: Math.min(3, barWidth / 3), fill: color, class: "bar" });
      bar.addEventListener("mousemove", (event) => {
        const rows = [{ name, color, value: (tooltipFormat || format)(v) }];
        if (extra) rows.push(...extra(i));
        tip.show(event, title(dates[i]), rows);
      });
      bar.addEventListener("mouseleave", () => tip.hide());
      root.appendChild(bar);
    });
    host.appendChild(root);
    ready(host, drawn.length);
  }

  // -- horizontal bars (HTML) ---------------------------------------------------------

  /* rows: [{label, value, note?, key?}] */
  function hbars(host, { rows, format = fmt.int, color = PALETTE[0], onSelect, selected, limit = 10, total }) {
    reset(host);
    host.classList.remove("is-loading");
    rows = rows.filter((r) => r.value > 0).slice(0, limit);
    if (!rows.length) return empty(host);
    const max = Math.max(...rows.map((r) => r.value));
    const list = el("ol", { class: "hbars" });
    rows.forEach((r) => {
      const item = el("li", { class: "hbar" + (onSelect ? " selectable" : "") + (selected === (r.key ?? r.label) ? " selected" : "") });
      item.appendChild(el("span", { class: "hbar-label", title: r.label }, r.label));
      const track = el("span", { class: "hbar-track" });
      const fill = el("span", { class: "hbar-fill" });
      fill.style.width = Math.max(0.5, (r.value / max) * 100) + "%";
      fill.style.background = r.color || color;
      track.appendChild(fill);
      item.appendChild(track);
      const share = total ? " · " + fmt.pct(r.value / total, 0) : "";
      item.appendChild(el("span", { class: "hbar-value" }, format(r.value) + share));
      if (onSelect) {
        item.tabIndex = 0;
        item.setAttribute("role", "button");
        item.addEventListener("click", () => onSelect(r.key ?? r.label));
        item.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onSelect(r.key ?? r.label); } });
      }
      list.appendChild(item);
    });
    host.appendChild(list);
    ready(host, rows.length);
  }

  // -- donut --------------------------------------------------------------------------

  function donut(host, { rows, format = fmt.int, label = "total" }) {
    reset(host);
    host.classList.remove("is-loading");
    rows = rows.filter((r) => r.value > 0);
    if (!rows.length) return empty(host);
    if (rows.length > 6) {
      const rest = rows.slice(5).reduce((sum, r) => sum + r.value, 0);
      rows = [...rows.slice(0, 5), { label: "Other", value: rest }];
    }
    const total = rows.reduce((sum, r) => sum + r.value, 0);
    const size = 176, r = 72, stroke = 24, c = size / 2;
    const wrap = el("div", { class: "donut" });
    const root = svg("svg", { viewBox: `0 0 ${size} ${size}`, width: size, height: size, role: "img" });
    root.appendChild(svg("circle", { cx: c, cy: c, r, fill: "none", stroke: "#eef0f6", "stroke-width": stroke }));
    let angle = -Math.PI / 2;
    const legend = el("ul", { class: "legend-list" });
    rows.forEach((row, k) => {
      const color = PALETTE[k % PALETTE.length];
      const sweep = (row.value / total) * Math.PI * 2;
      const end = angle + sweep;
      let shape;
      if (rows.length === 1) {
        shape = svg("circle", { cx: c, cy: c, r, fill: "none", stroke: color, "stroke-width": stroke });
      } else {
        const large = sweep > Math.PI ? 1 : 0;
        const gap = 0.012;
        const a0 = angle + gap, a1 = end - gap;
        shape = svg("path", {
          d: `M${c + r * Math.cos(a0)},${c + r * Math.sin(a0)}A${r},${r} 0 ${large} 1 ${c + r * Math.cos(a1)},${c + r * Math.sin(a1)}`,
          fill: "none", stroke: color, "stroke-width": stroke,
        });
      }
      shape.addEventListener("mousemove", (event) => tip.show(event, row.label, [{ name: label, color, value: format(row.value) + " · " + fmt.pct(row.value / total, 1) }]));
      shape.addEventListener("mouseleave", () => tip.hide());
      root.appendChild(shape);
      angle = end;
      const item = el("li");
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = color;
      item.append(swatch, el("span", { class: "legend-name" }, row.label), el("span", { class: "legend-value" }, fmt.pct(row.value / total, 0)));
      legend.appendChild(item);
    });
    const center = svg("text", { x: c, y: c - 2, "text-anchor": "middle", class: "donut-total" });
    center.textContent = fmt.compact(total);
    const sub = svg("text", { x: c, y: c + 16, "text-anchor": "middle", class: "donut-label" });
    sub.textContent = label;
    root.append(center, sub);
    wrap.append(root, legend);
    host.appendChild(wrap);
    ready(host, rows.length);
  }

  // -- retention heatmap --------------------------------------------------------------

  /* cohorts: [{date, size, retained: [fraction or null for day 1..N]}] */
  function heatmap(host, { cohorts, offsets = 30, lastDay }) {
    reset(host);
    host.classList.remove("is-loading");
    cohorts = cohorts.filter((c) => c.size > 0);
    if (!cohorts.length) return empty(host, "No new users in these days.");
    const maxOffset = Math.min(offsets, Math.max(...cohorts.map((c) => (c.retained || []).length)));
    const table = el("table", { class: "heatmap" });
    const head = el("tr");
    head.append(el("th", { class: "cohort" }, "First day"), el("th", { class: "size" }, "Users"));
    for (let d = 1; d <= maxOffset; d++) head.appendChild(el("th", {}, d === 1 || d % 7 === 0 ? "D" + d : String(d)));
    table.appendChild(el("thead")).appendChild(head);
    const body = el("tbody");
    let cells = 0;
    for (const c of cohorts) {
      const row = el("tr");
      row.append(el("th", { class: "cohort" }, fmt.day(c.date)), el("td", { class: "size" }, fmt.int(c.size)));
      for (let d = 1; d <= maxOffset; d++) {
        const v = (c.retained || [])[d - 1];
        const future = lastDay && addDays(c.date, d) > lastDay;
        const cell = el("td", { class: "cell" });
        if (v == null || future) {
          cell.classList.add("na");
        } else {
          cells++;
          cell.style.background = heatColor(v);
          if (v >= 0.45) cell.classList.add("dark");
          cell.textContent = v > 0 ? Math.round(v * 100) : "";
          cell.addEventListener("mousemove", (event) => tip.show(event, `Users who started ${fmt.longDay(c.date)}`, [
            { name: `back on day ${d}`, value: fmt.pct(v, 1) },
            { name: "cohort size", value: fmt.int(c.size) },
          ]));
          cell.addEventListener("mouseleave", () => tip.hide());
        }
        row.appendChild(cell);
      }
      body.appendChild(row);
    }
    table.appendChild(body);
    const scroller = el("div", { class: "heatmap-scroll" });
    scroller.appendChild(table);
    host.appendChild(scroller);
    ready(host, cells);
  }

  function heatColor(v) {
    // From a pale to a deep indigo, on a square-root scale: small shares still show.
    const t = Math.sqrt(Math.max(0, Math.min(1, v)));
    const from = [238, 242, 255], to = [55, 48, 163];
    const mix = from.map((f, i) => Math.round(f + (to[i] - f) * t));
    return `rgb(${mix[0]}, ${mix[1]}, ${mix[2]})`;
  }

  function addDays(date, days) {
    const d = new Date(date + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + days);
    return d.toISOString().slice(0, 10);
  }

  // -- funnel -------------------------------------------------------------------------

  /* steps: [{event_type, count, conversion, drop_off}]: conversion is the share of step 1,
     drop_off the share of the step before that did not go on. */
  function funnel(host, { steps, format = fmt.int }) {
    reset(host);
    host.classList.remove("is-loading");
    if (!steps.length || !(steps[0].count > 0)) return empty(host, "Nobody did the first step in these days.");
    const top = steps[0].count;
    const list = el("ol", { class: "funnel" });
    steps.forEach((s, i) => {
      const share = s.conversion != null ? s.conversion : s.count / top;
      const item = el("li", { class: "funnel-step" });
      const head = el("div", { class: "funnel-head" });
      head.append(el("span", { class: "funnel-index" }, String(i + 1)), el("span", { class: "funnel-name" }, s.event_type),
        el("span", { class: "funnel-count" }, format(s.count)), el("span", { class: "funnel-pct" }, fmt.pct(share, 1)));
      const track = el("div", { class: "funnel-track" });
      const fill = el("div", { class: "funnel-fill" });
      fill.style.width = Math.max(0.5, share * 100) + "%";
      fill.style.background = PALETTE[0];
      fill.style.opacity = String(1 - i * (0.45 / Math.max(1, steps.length - 1)));
      track.appendChild(fill);
      item.append(head, track);
      if (i > 0) {
        const previous = steps[i - 1].count;
        const drop = s.drop_off != null ? s.drop_off : previous ? 1 - s.count / previous : null;
        const note = el("div", { class: "funnel-note" });
        note.append(el("span", { class: "drop" }, `↓ ${fmt.pct(drop, 1)} dropped off`),
          document.createTextNode(` · ${fmt.int(previous - s.count)} of ${fmt.int(previous)} did not go on`));
        item.insertBefore(note, head);
      }
      list.appendChild(item);
    });
    host.appendChild(list);
    ready(host, steps.length);
  }

  // -- campaigns ----------------------------------------------------------------------

  /* campaigns: [{campaign_id, sent, delivered, opened}] */
  function campaigns(host, { rows }) {
    reset(host);
    host.classList.remove("is-loading");
    rows = rows.filter((r) => r.sent > 0 || r.delivered > 0 || r.opened > 0);
    if (!rows.length) return empty(host, "No push campaigns in these days.");
    const max = Math.max(...rows.map((r) => Math.max(r.sent, r.delivered, r.opened)));
    const kinds = [["sent", "Sent", PALETTE[0]], ["delivered", "Delivered", PALETTE[1]], ["opened", "Opened", PALETTE[2]]];
    const list = el("div", { class: "campaigns" });
    for (const r of rows) {
      const block = el("div", { class: "campaign" });
      const title = el("div", { class: "campaign-title" });
      title.append(el("span", { class: "campaign-name" }, r.campaign_id),
        el("span", { class: "muted small" }, `delivered ${fmt.pct(r.sent ? r.delivered / r.sent : null, 0)} · opened ${fmt.pct(r.delivered ? r.opened / r.delivered : null, 1)}`));
      block.appendChild(title);
      for (const [key, name, color] of kinds) {
        const row = el("div", { class: "hbar" });
        row.appendChild(el("span", { class: "hbar-label" }, name));
        const track = el("span", { class: "hbar-track" });
        const fill = el("span", { class: "hbar-fill" });
        fill.style.width = (r[key] > 0 ? Math.max(0.5, (r[key] / max) * 100) : 0) + "%";
        fill.style.background = color;
        track.appendChild(fill);
        row.append(track, el("span", { class: "hbar-value" }, fmt.int(r[key])));
        block.appendChild(row);
      }
      list.appendChild(block);
    }
    host.appendChild(list);
    ready(host, rows.length);
  }

  /* One campaign in all and per treatment (GET .../analytics/campaigns/{id}): a table. */
  function treatments(host, { campaign }) {
    reset(host);
    host.classList.remove("is-loading");
    if (!campaign || !campaign.sent && !campaign.delivered && !campaign.opened) {
      return empty(host, "This campaign sent nothing in these days.");
    }
    const columns = [
      ["Sent", (r) => fmt.int(r.sent)],
      ["Delivered", (r) => fmt.int(r.delivered)],
      ["Delivery rate", (r) => fmt.pct(r.delivery_rate, 1)],
      ["Direct opens", (r) => fmt.int(r.opened)],
      ["Open rate", (r) => fmt.pct(r.open_rate, 1)],
      ["Devices targeted", (r) => fmt.int(r.devices_targeted)],
      ["Sessions per user after an open", (r) => fmt.ratio(r.sessions_per_user)],
      ["Purchases per user after an open", (r) => fmt.ratio(r.purchases_per_user)],
    ];
    const table = el("table", { class: "treatments" });
    const head = el("tr");
    head.appendChild(el("th", {}, "Treatment"));
    for (const [label] of columns) head.appendChild(el("th", {}, label));
    table.appendChild(el("thead")).appendChild(head);
    const body = el("tbody");
    const rows = [{ ...campaign, label: "All treatments" }].concat((campaign.treatments || []).map((t) => ({
      ...t, label: t.treatment_name ? `${t.treatment_id} · ${t.treatment_name}` : `Treatment ${t.treatment_id}`,
    })));
    for (const r of rows) {
      const tr = el("tr", { "data-treatment": r.treatment_id == null ? "all" : r.treatment_id });
      tr.appendChild(el("th", {}, r.label));
      for (const [, value] of columns) tr.appendChild(el("td", {}, value(r)));
      body.appendChild(tr);
    }
    table.appendChild(body);
    host.appendChild(table);
    ready(host, rows.length);
  }

  window.HomingCharts = { PALETTE, fmt, line, bars, hbars, donut, heatmap, funnel, campaigns, treatments, empty, loading, failed, tip, addDays };
})();
