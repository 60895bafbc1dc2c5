-- ctrace.svg - charts as standalone SVG text (no external program): bars, lines, scatter.
--
--   svg.bars{title, y_label, labels = {...}, series = {{name =, values = {...}}, ...}} -> string
--   svg.lines{title, x_label, y_label, x = {...}, series = {{name =, values = {...}}, ...}} -> string
--   svg.scatter{title, x_label, y_label, points = {{x, y, label}, ...}, diagonal = true} -> string
-- Every chart has a title, labelled axes with ticks, and a legend when it has several series.
local M = {}

local W, H = 760, 440
local PAD_L, PAD_R, PAD_T, PAD_B = 70, 170, 44, 90
local COLORS = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}

local function esc(s)
  return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"):gsub('"', "&quot;"))
end

local function num(x) return string.format("%.4g", x) end

-- "Nice" ticks covering [lo, hi].
local function ticks(lo, hi, n)
  if lo == hi then lo, hi = lo - 1, hi + 1 end
  local span = (hi - lo) / (n or 5)
  local mag = 10 ^ math.floor(math.log10(span))
  local step = mag
  for _, k in ipairs {1, 2, 2.5, 5, 10} do
    if span <= k * mag then step = k * mag break end
  end
  local out = {}
  local first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
  for i = first, last do out[#out + 1] = i * step end
  return out, out[1], out[#out]
end

local function frame(o, x0, x1, y0, y1)
  local parts = {string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
                               .. 'font-family="sans-serif" font-size="12">', W, H, W, H),
                 string.format('<rect width="%d" height="%d" fill="white"/>', W, H),
                 string.format('<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>', PAD_L, esc(o.title or ""))}
  local pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
  local function sx(x) return PAD_L + (x - x0) / (x1 - x0) * pw end
  local function sy(y) return PAD_T + ph - (y - y0) / (y1 - y0) * ph end
  parts[#parts + 1] = string.format('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>', PAD_L, PAD_T, PAD_L, PAD_T + ph)
  parts[#parts + 1] = string.format('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>', PAD_L, PAD_T + ph, PAD_L + pw, PAD_T + ph)
  parts[#parts + 1] = string.format('<text x="18" y="%d" transform="rotate(-90 18 %d)" text-anchor="middle">%s</text>',
                                    PAD_T + ph / 2, PAD_T + ph / 2, esc(o.y_label or ""))
  parts[#parts + 1] = string.format('<text x="%d" y="%d" text-anchor="middle">%s</text>', PAD_L + pw / 2, H - 12,
                                    esc(o.x_label or ""))
  return parts, sx, sy, pw, ph
end

local function y_axis(parts, sy, yt)
  for _, v in ipairs(yt) do
    local y = sy(v)
    parts[#parts + 1] = string.format('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>', PAD_L, y, W - PAD_R, y)
    parts[#parts + 1] = string.format('<text x="%d" y="%.1f" text-anchor="end">%s</text>', PAD_L - 6, y + 4, num(v))
  end
end

local function legend(parts, series)
  if #series < 2 then return end
  for i, s in ipairs(series) do
    local y = PAD_T + 10 + (i - 1) * 18
    parts[#parts + 1] = string.format('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>', W - PAD_R + 14, y - 10,
                                      COLORS[(i - 1) % #COLORS + 1])
    parts[#parts + 1] = string.format('<text x="%d" y="%d">%s</text>', W - PAD_R + 32, y, esc(s.name))
  end
end

local function range(series, extra)
  local lo, hi = extra or 0, extra or 0
  for _, s in ipairs(series) do
    for _, v in ipairs(s.values) do lo, hi = math.min(lo, v), math.max(hi, v) end
  end
  return lo, hi
end

function M.bars(o)
  local series, labels = o.series, o.labels
  local yt, y0, y1 = ticks(range(series, 0))
  local parts, _, sy, pw = frame(o, 0, 1, y0, y1)
  y_axis(parts, sy, yt)
  local n, k = #labels, #series
  local slot = pw / math.max(n, 1)
  local bw = slot * 0.8 / k
  for i, label in ipairs(labels) do
    local x = PAD_L + (i - 1) * slot + slot * 0.1
    for j, s in ipairs(series) do
      local v = s.values[i] or 0
      local ya, yb = sy(math.max(v, 0)), sy(math.min(v, 0))
      parts[#parts + 1] = string.format('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %s</title></rect>',
                                        x + (j - 1) * bw, ya, bw, math.max(yb - ya, 0.5), COLORS[(j - 1) % #COLORS + 1],
                                        esc(label), num(v))
    end
    local cx = PAD_L + (i - 0.5) * slot
    parts[#parts + 1] = string.format('<text x="%.1f" y="%d" text-anchor="end" transform="rotate(-35 %.1f %d)">%s</text>',
                                      cx, H - PAD_B + 16, cx, H - PAD_B + 16, esc(label))
  end
  parts[#parts + 1] = string.format('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="black"/>', PAD_L, sy(0), W - PAD_R, sy(0))
  legend(parts, series)
  parts[#parts + 1] = "</svg>\n"
  return table.concat(parts, "\n")
end

local function minmax(t)
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(t) do lo, hi = math.min(lo, v), math.max(hi, v) end
  return lo, hi
end

function M.lines(o)
  local xt, x0, x1 = ticks(minmax(o.x))
  local yt, y0, y1 = ticks(range(o.series))
  local parts, sx, sy = frame(o, x0, x1, y0, y1)
  y_axis(parts, sy, yt)
  for _, v in ipairs(xt) do
    parts[#parts + 1] = string.format('<text x="%.1f" y="%d" text-anchor="middle">%s</text>', sx(v), H - PAD_B + 18, num(v))
  end
  for j, s in ipairs(o.series) do
    local pts, color = {}, COLORS[(j - 1) % #COLORS + 1]
    for i, v in ipairs(s.values) do
      pts[#pts + 1] = string.format("%.1f,%.1f", sx(o.x[i]), sy(v))
      parts[#parts + 1] = string.format('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s: %s</title></circle>',
                                        sx(o.x[i]), sy(v), color, esc(s.name), num(v))
    end
    parts[#parts + 1] = string.format('<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>',
                                      table.concat(pts, " "), color)
  end
  legend(parts, o.series)
  parts[#parts + 1] = "</svg>\n"
  return table.concat(parts, "\n")
end

function M.scatter(o)
  local all = {0}
  for _, p in ipairs(o.points) do all[#all + 1], all[#all + 2] = p[1], p[2] end
  local lo, hi = minmax(all)
  local t, a, b = ticks(lo, hi)
  local parts, sx, sy = frame(o, a, b, a, b)
  y_axis(parts, sy, t)
  for _, v in ipairs(t) do
    parts[#parts + 1] = string.format('<text x="%.1f" y="%d" text-anchor="middle">%s</text>', sx(v), H - PAD_B + 18, num(v))
  end
  if o.diagonal then
    parts[#parts + 1] = string.format('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999" stroke-dasharray="4 3"/>',
                                      sx(a), sy(a), sx(b), sy(b))
    parts[#parts + 1] = string.format('<text x="%.1f" y="%.1f" fill="#999">y = x</text>', sx(b) - 40, sy(b) + 14)
  end
  for _, p in ipairs(o.points) do
    parts[#parts + 1] = string.format('<circle cx="%.1f" cy="%.1f" r="4" fill="%s" fill-opacity="0.8"><title>%s: %s, %s</title></circle>',
                                      sx(p[1]), sy(p[2]), COLORS[1], esc(p[3] or ""), num(p[1]), num(p[2]))
  end
  if o.note then
    parts[#parts + 1] = string.format('<text x="%d" y="%d">%s</text>', PAD_L + 10, PAD_T + 16, esc(o.note))
  end
  parts[#parts + 1] = "</svg>\n"
  return table.concat(parts, "\n")
end

return M
