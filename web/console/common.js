// What every console page shares: the token taken out of the address bar once the
// session cookie holds it, calls to the console's API, and terminals on websockets.
import { Terminal } from "/assets/vendor/xterm/xterm.mjs";
import { FitAddon } from "/assets/vendor/xterm/addon-fit.mjs";

export function forgetToken() {
  const url = new URL(window.location.href);
  if (url.searchParams.has("token")) {
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
}

export function notice(text) {
  const el = document.getElementById("notice");
  if (!el) return;
  el.textContent = text;
  el.classList.toggle("shown", !!text);
  if (text) setTimeout(() => el.classList.remove("shown"), 8000);
}

export async function api(method, path) {
  const r = await fetch(path, { method, credentials: "same-origin" });
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error((body && body.message) || `${r.status} ${r.statusText}`);
  return body;
}

export function wsUrl(path) {
  const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${window.location.host}${path}`;
}

export function bytes(n) {
  if (n == null) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

const encoder = new TextEncoder();

function frame(kind, payload) {
  const body = typeof payload === "string" ? encoder.encode(payload) : payload;
  const out = new Uint8Array(body.length + 1);
  out[0] = kind.charCodeAt(0);
  out.set(body, 1);
  return out;
}

// A terminal in `el` on the websocket at `path` (the console's framing: '0' data,
// '1' a window size, '2' a status line). `input`: keys go to the other side.
// `onStatus(text, state)` hears connection changes.
export function openTerminal(el, path, { input = true, convertEol = false, onStatus = () => {} } = {}) {
  const term = new Terminal({
    convertEol, cursorBlink: input, disableStdin: !input, scrollback: 5000,
    fontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace", fontSize: 13,
    theme: { background: "#0b0f13" },
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  const sep = path.includes("?") ? "&" : "?";
  const ws = new WebSocket(wsUrl(`${path}${sep}rows=${term.rows}&cols=${term.cols}`));
  ws.binaryType = "arraybuffer";
  const decoder = new TextDecoder();
  ws.onopen = () => {
    onStatus("connected", "connected");
    ws.send(frame("1", JSON.stringify({ cols: term.cols, rows: term.rows })));
  };
  ws.onmessage = (ev) => {
    const data = new Uint8Array(ev.data);
    if (data[0] === 48) term.write(data.subarray(1));
    else if (data[0] === 50) {
      const text = decoder.decode(data.subarray(1));
      term.write(`\r\n\x1b[2m[${text}]\x1b[0m\r\n`);
      onStatus(text, "closed");
    }
  };
  ws.onclose = (ev) => onStatus(ev.code === 1000 || ev.code === 1005 ? "closed" : "disconnected", "closed");
  ws.onerror = () => onStatus("could not connect", "failed");
  if (input) {
    term.onData((d) => ws.readyState === WebSocket.OPEN && ws.send(frame("0", d)));
    term.onBinary((d) => {
      const b = Uint8Array.from(d, (c) => c.charCodeAt(0));
      if (ws.readyState === WebSocket.OPEN) ws.send(frame("0", b));
    });
  }
  term.onResize(({ cols, rows }) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(frame("1", JSON.stringify({ cols, rows })));
  });
  const observer = new ResizeObserver(() => fit.fit());
  observer.observe(el);
  // Ends this terminal: the socket (the other side hangs up a shell), the observer and
  // the terminal itself.
  const close = () => {
    observer.disconnect();
    ws.onclose = null;
    ws.close();
    term.dispose();
  };
  return { term, ws, close };
}

// The reason a failed websocket was refused: the same URL over plain HTTP answers
// with the console's JSON error.
export async function whyRefused(path) {
  try {
    const r = await fetch(path, { credentials: "same-origin" });
    const body = await r.json();
    return body.message || `${r.status}`;
  } catch (_) {
    return "the server did not answer";
  }
}
